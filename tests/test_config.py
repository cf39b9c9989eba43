"""Settings: a bad or missing setting stops start-up with one clear line per problem."""

import subprocess
import sys

import pytest

from bot.config import ConfigError, load_settings
from models.catalog import CatalogError, load_catalog

GOOD_TOKEN = "MTAx" + "a" * 60


def test_defaults_need_only_a_token():
    s = load_settings({"DISCORD_TOKEN": GOOD_TOKEN}, env_file=None)
    assert s.database_url == "sqlite:///data/natty.db"
    assert s.database_path.as_posix() == "data/natty.db"
    assert not s.sharded and s.max_jobs_per_user == 5


def test_every_problem_is_reported_on_its_own_line():
    with pytest.raises(ConfigError) as err:
        load_settings({"NATTY_MAX_JOBS_PER_USER": "many", "DATABASE_URL": "mysql://x", "NATTY_SHARDED": "maybe",
                       "DISCORD_API_BASE": "ftp://x", "NATTY_LOG_LEVEL": "LOUD"}, env_file=None)
    problems = err.value.problems
    assert len(problems) == 6
    assert any(p.startswith("DISCORD_TOKEN is not set") and "developers/applications" in p for p in problems)
    assert any("NATTY_MAX_JOBS_PER_USER='many' is not a whole number" == p for p in problems)
    assert any("DATABASE_URL" in p for p in problems)
    assert any("NATTY_SHARDED" in p for p in problems)


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"DISCORD_TOKEN={GOOD_TOKEN}\nNATTY_COOLDOWN_SECONDS=3\nNATTY_MAX_JOBS_PER_GUILD=7\n")
    s = load_settings({"NATTY_MAX_JOBS_PER_GUILD": "9"}, env_file=str(env))
    assert s.cooldown_seconds == 3.0 and s.max_jobs_per_guild == 9


def test_natty_run_without_token_explains_how_to_get_one(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "DISCORD_TOKEN is not set" in proc.stderr and "Reset Token" in proc.stderr


def test_bundled_catalog_is_valid_and_names_a_model_for_every_task():
    from models.base import TASKS

    catalog = load_catalog()
    for task in TASKS:
        assert catalog.for_task(task), task


def test_operator_catalog_overrides_adds_and_removes(tmp_path):
    f = tmp_path / "models.toml"
    f.write_text("""
[[model]]
name = "flux-schnell"
enabled = false

[[model]]
name = "my-vllm"
task = "chat"
backend = "openai"
url = "http://127.0.0.1:8000/v1"
model = "Qwen/Qwen3-8B"
default = true
""")
    catalog = load_catalog(f)
    assert catalog.get("flux-schnell") is None
    assert catalog.get("my-vllm").url == "http://127.0.0.1:8000/v1"
    assert catalog.default_for("chat").name == "my-vllm"


def test_catalog_errors_name_file_entry_and_problem(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("""
[[model]]
name = "a"
task = "painting"
backend = "hf"
model = "x/y"

[[model]]
name = "b"
task = "chat"
backend = "openai"
model = "m"

[[model]]
name = "c"
task = "chat"
backend = "hf"
model = "x/y"
api_key = "hf_abcdefghijklmnopqrstuvwxyz"
""")
    with pytest.raises(CatalogError) as err:
        load_catalog(f)
    text = str(err.value)
    assert "model #1 (a): task 'painting'" in text
    assert "model #2 (b): an openai entry needs url" in text
    assert "model #3 (c): keys never go in the catalog" in text
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in text


def test_every_key_the_catalog_names_is_redacted_from_logs_wherever_it_was_set(tmp_path):
    import logging

    from bot.config import secrets_of
    from bot.logs import RedactingFormatter

    (tmp_path / ".env").write_text(f"DISCORD_TOKEN={GOOD_TOKEN}\nACME_CREDENTIAL=acme-secret-from-dotenv\n"
                                   "OPENAI_API_KEY=sk-from-dotenv-1234567890\n")
    (tmp_path / "models.toml").write_text("""
[[model]]
name = "acme"
task = "chat"
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "acme-1"
api_key_env = "ACME_CREDENTIAL"

[[model]]
name = "other"
task = "chat"
backend = "openai"
url = "http://127.0.0.1:9/v1"
model = "other-1"
api_key_env = "OTHER_PASSPHRASE"
""")
    settings = load_settings({"OTHER_PASSPHRASE": "other-secret-from-environment"}, env_file=str(tmp_path / ".env"))
    catalog = load_catalog(tmp_path / "models.toml")
    assert settings.key("ACME_CREDENTIAL") == "acme-secret-from-dotenv"
    assert settings.key("OTHER_PASSPHRASE") == "other-secret-from-environment"
    secrets = secrets_of(settings, catalog)
    formatter = RedactingFormatter("%(message)s", secrets)
    for value in ("acme-secret-from-dotenv", "other-secret-from-environment", "sk-from-dotenv-1234567890",
                  GOOD_TOKEN):
        record = logging.LogRecord("natty", logging.INFO, __file__, 1, "calling with %s", (value,), None)
        assert value not in formatter.format(record), value


def test_every_task_says_what_it_makes_and_what_it_takes():
    from models.base import INPUT, OUTPUT, TASKS

    assert set(OUTPUT) == set(INPUT) == set(TASKS)
    assert set(OUTPUT.values()) <= {"text", "image", "audio", "video", "labels"}
    assert set(INPUT.values()) <= {None, "image", "audio"}
