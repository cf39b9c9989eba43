"""Which model a task uses when nobody names one: the operator's `default = true` beats the bundled default."""

from models.catalog import load_catalog

OPERATOR = """
[[model]]
name = "house-image"
task = "text-to-image"
backend = "hf"
model = "acme/house-image"
default = true

[[model]]
name = "house-chat"
task = "chat"
backend = "hf"
model = "acme/house-chat"
default = true
"""


def test_the_operators_default_wins_over_the_bundled_one(tmp_path):
    bundled = load_catalog()
    assert any(e.default for e in bundled.for_task("text-to-image"))  # the bundled catalog marks one too
    path = tmp_path / "models.toml"
    path.write_text(OPERATOR)
    catalog = load_catalog(path)
    assert catalog.default_for("text-to-image").name == "house-image"
    assert catalog.default_for("chat").name == "house-chat"
    # among what can run: when the operator's cannot, the bundled default is next
    others = {e.name for e in catalog.for_task("text-to-image")} - {"house-image"}
    assert catalog.default_for("text-to-image", others).source == "bundled catalog"


def test_within_one_file_the_last_marked_default_wins(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(OPERATOR + OPERATOR.replace("house-image", "second-image").replace("house-chat", "second-chat"))
    assert load_catalog(path).default_for("text-to-image").name == "second-image"
