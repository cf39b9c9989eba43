"""/imagine on the scene PixelCNN through the fake Discord server: the reply says what was drawn and which words
were ignored, and a prompt with nothing drawable is answered with what the model can draw."""

import io

import pytest
from PIL import Image

from tests.harness import Natty
from tests.tiny_models import build_tiny_scene_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_scenes(tmp_path_factory) -> str:
    folder = build_tiny_scene_model(tmp_path_factory.mktemp("scenes"))
    return f"""
[[model]]
name = "tiny-scenes"
task = "text-to-image"
backend = "local"
model = "{folder}"
"""


async def test_imagine_says_what_it_drew_and_what_it_ignored(tmp_path, tiny_scenes):
    async with Natty.running(tmp_path, catalog_extra=tiny_scenes) as n:
        drawn = await n.final(await n.server.slash(n.alice, n.general, "imagine", model="tiny-scenes", seed=1,
                                                   prompt="a red star above a blue circle in space"), timeout=120)
        (png,) = drawn.attachments
        assert Image.open(io.BytesIO(png.data)).size == (256, 256)
        assert "drew: a red star above a blue circle; ignored: 'in space'" in drawn.content
        nothing = await n.final(await n.server.slash(n.alice, n.general, "imagine", model="tiny-scenes",
                                                     prompt="a 4k photo of a cat"), timeout=120)
        assert not nothing.attachments and "circles, squares, triangles, stars, hearts" in nothing.content
        assert n.server.violations == []
