"""The scene PixelCNN: the prompt parser says what it drew and what it ignored, the attributes reach the model,
the cached sampler draws the naive one's samples, and the local backend (and /imagine) answer with the scene or
with what it can draw."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from models.base import Request, RunContext  # noqa: E402
from models.catalog import ModelEntry, load_catalog  # noqa: E402
from models.errors import BackendError, ErrorKind  # noqa: E402
from models.own import CHECKPOINTS, OwnModelsBackend, load_checkpoint, save_checkpoint, scenes  # noqa: E402
from models.own.pixelcnn import PixelCNN, PixelCNNConfig  # noqa: E402
from models.own.scenes import Obj, Scene, parse_prompt  # noqa: E402
from tests.tiny_models import build_tiny_scene_model  # noqa: E402


def parsed(text: str) -> tuple[Scene | None, str, list[str]]:
    return parse_prompt(text, np.random.default_rng(0))


# --- the parser -----------------------------------------------------------------------------------------------

def test_prompt_says_what_it_drew_and_what_it_ignored():
    scene, understood, ignored = parsed("a red star above a blue circle in space")
    assert scene == Scene((Obj("star", "red", "top"), Obj("circle", "blue", "bottom")))
    assert understood == "a red star above a blue circle" and ignored == ["in space"]


@pytest.mark.parametrize(("prompt", "slots"), [
    ("a green heart to the left of a black square", ("left", "right")),
    ("a green heart right of a black square", ("right", "left")),
    ("a green heart under a black square", ("bottom", "top")),
    ("a green heart on top of a black square", ("top", "bottom")),
    ("a green heart and a black square", ("left", "right")),
    ("a green heart on the right and a black square on the left", ("right", "left")),
])
def test_relations_place_the_two_objects(prompt, slots):
    scene, _, ignored = parsed(prompt)
    assert scene is not None and tuple(o.slot for o in scene.objects) == slots
    assert [(o.shape, o.colour) for o in scene.objects] == [("heart", "green"), ("square", "black")]
    assert ignored == []


def test_one_object_takes_a_place_or_the_centre():
    assert parsed("a yellow triangle at the top")[0] == Scene((Obj("triangle", "yellow", "top"),))
    assert parsed("a yellow triangle")[0] == Scene((Obj("triangle", "yellow", "centre"),))


def test_letters_and_digits_are_named_or_written_alone():
    assert parsed("the letter q")[0].objects[0].shape == "Q"  # type: ignore[union-attr]
    assert parsed("a purple B")[0].objects[0].shape == "B"  # type: ignore[union-attr]
    assert parsed("digit seven")[0].objects[0].shape == "7"  # type: ignore[union-attr]
    assert parsed("an orange 3 on the left")[0] == Scene((Obj("3", "orange", "left"),))
    # the article "A" at the start of a sentence is not the letter A
    assert parsed("A red star")[0] == Scene((Obj("star", "red", "centre"),))


def test_a_colour_not_asked_for_is_chosen_by_the_seed_and_said():
    a = parse_prompt("a star", np.random.default_rng(1))
    b = parse_prompt("a star", np.random.default_rng(1))
    assert a == b and a[0] is not None and a[0].objects[0].colour in scenes.COLOURS
    assert a[1] == f"a {a[0].objects[0].colour} star" or a[1] == "an orange star"


def test_a_third_object_and_unknown_words_are_reported_ignored():
    scene, understood, ignored = parsed("a red circle and a blue square and a pink elephant with a green star")
    assert scene is not None and len(scene.objects) == 2
    assert understood == "a red circle left of a blue square"
    assert ignored == ["pink elephant with a green star"]


def test_nothing_drawable_gives_no_scene():
    scene, understood, ignored = parsed("a 4k photo of a cat")
    assert scene is None and understood == "" and ignored == ["4k photo of a cat"]


def test_tokens_bind_colour_to_its_object():
    a = parsed("a red star above a blue circle")[0]
    b = parsed("a blue star above a red circle")[0]
    assert a is not None and b is not None
    assert a.tokens().sum() == 4 and not np.array_equal(a.tokens(), b.tokens())


def test_rendered_scenes_are_palette_indices_where_asked():
    rng = np.random.default_rng(0)
    x = scenes.render(Scene((Obj("star", "red", "left"), Obj("7", "blue", "right"))), rng)
    assert x.shape == (scenes.SIZE, scenes.SIZE) and x.max() < len(scenes.PALETTE)
    red, blue = 1 + scenes.COLOURS.index("red"), 1 + scenes.COLOURS.index("blue")
    cols = np.arange(scenes.SIZE)
    assert (x == red).sum() > 10 and (x == blue).sum() > 5
    assert cols[(x == red).any(0)].max() < 16 <= cols[(x == blue).any(0)].min()


# --- the model ------------------------------------------------------------------------------------------------

def tiny_scene_model(seed: int = 0, size: int = 6, **kw) -> PixelCNN:
    torch.manual_seed(seed)
    cfg = PixelCNNConfig(n_levels=len(scenes.PALETTE), n_classes=12, height=size, width=size, n_channels=8,
                         n_layers=3, map_size=3, map_channels=4, **kw)
    model = PixelCNN(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def tokens(*on: int) -> torch.Tensor:
    v = torch.zeros(1, 12)
    v[0, list(on)] = 1
    return v


def test_different_attributes_give_different_outputs():
    model = tiny_scene_model()
    x = torch.zeros(1, 6, 6, dtype=torch.long)
    with torch.no_grad():
        assert not torch.allclose(model(x, tokens(0, 5))[0], model(x, tokens(1, 5))[0])
        for layer in model.layers:  # the location map alone carries them too
            layer.cond.weight.zero_()
        assert not torch.allclose(model(x, tokens(0, 5))[0], model(x, tokens(1, 5))[0])


def test_location_map_differs_across_the_image():
    model = tiny_scene_model()
    with torch.no_grad():
        cmap = model.location_map(tokens(2, 7))
    assert cmap is not None and cmap.shape == (1, 4, 6, 6) and not torch.allclose(cmap[..., :3], cmap[..., 3:])


def test_one_hot_tokens_are_the_class_ids_of_a_model_without_a_map():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(n_levels=5, n_classes=3, height=4, width=4, n_channels=8, n_layers=2)).eval()
    x = torch.randint(0, 5, (2, 4, 4))
    with torch.no_grad():
        by_id = model(x, torch.tensor([0, 2]))[0]
        by_tokens = model(x, torch.eye(3)[[0, 2]])[0]
    assert torch.equal(by_id, by_tokens)


def test_cached_scene_sampling_equals_naive_sampling():
    model = tiny_scene_model().double()
    y = torch.cat([tokens(0, 5), tokens(1, 6), tokens(2, 3, 8, 11)]).double().numpy()
    for seed in (0, 1):
        logits: list[np.ndarray] = []
        fast = model.generate(y, seed=seed, logits_out=logits)
        assert np.array_equal(fast, model.generate_naive(y, seed=seed))
    with torch.no_grad():
        ref = model(torch.as_tensor(fast), torch.as_tensor(y))[0]
    ref = ref.permute(2, 3, 0, 1).reshape(-1, len(y), model.config.n_levels).numpy()
    np.testing.assert_allclose(np.stack(logits), ref, rtol=0, atol=1e-9)


def test_guided_sampling_is_the_same_in_both_samplers_and_mixes_the_two_passes():
    model = tiny_scene_model(guidance=2.5).double()
    y = torch.cat([tokens(0, 5), tokens(2, 3, 8, 11)]).double().numpy()
    logits: list[np.ndarray] = []
    fast = model.generate(y, seed=5, logits_out=logits)
    assert np.array_equal(fast, model.generate_naive(y, seed=5))
    assert not np.array_equal(fast, model.generate(y, seed=5, guidance=1.0))  # the config's scale was used
    with torch.no_grad():  # each pixel drawn from u + 2.5 (c - u): the passes with the tokens and with none
        x = torch.as_tensor(fast)
        c = model(x, torch.as_tensor(y))[0]
        u = model(x, torch.zeros_like(torch.as_tensor(y)))[0]
    ref = (u + 2.5 * (c - u)).permute(2, 3, 0, 1).reshape(-1, len(y), model.config.n_levels).numpy()
    np.testing.assert_allclose(np.stack(logits), ref, rtol=0, atol=1e-9)
    digits = PixelCNN(PixelCNNConfig(n_levels=5, n_classes=3, height=3, width=3, n_channels=8, n_layers=2,
                                     guidance=3.0))
    assert np.array_equal(digits.generate([0, 2], seed=1), digits.generate([0, 2], seed=1, guidance=1.0))  # ids


def test_scene_training_drops_every_token_of_a_fraction_of_images():
    from models.own.train import SceneTask

    task = SceneTask(None, None)
    task.make_config({"cond_drop": "0.5"})
    x, y = task.batch("train", 64, np.random.default_rng(0), torch.device("cpu"))
    empty = int((y.sum(dim=1) == 0).sum())
    assert 16 <= empty <= 48 and x.shape[0] == 64  # about half, and the images are still there
    assert int((task.batch("val", 64, np.random.default_rng(0), torch.device("cpu"))[1].sum(dim=1) == 0).sum()) == 0


def test_a_fine_tune_refuses_a_checkpoint_made_for_other_data(tmp_path):
    from models.own.train import train_main

    with pytest.raises(SystemExit, match=r"not one for --data digits \(n_levels 8, not 17, n_classes 240, not 10"):
        train_main(["pixelcnn", "--init", str(CHECKPOINTS / "scenes"), "--out", str(tmp_path), "--steps", "1",
                    "--threads", "1"])


def test_scene_model_checkpoint_round_trip(tmp_path):
    model = tiny_scene_model(2)
    save_checkpoint(model, tmp_path, {"data": "scenes"})
    loaded, meta = load_checkpoint(tmp_path)
    y = tokens(1, 4).numpy()
    assert meta["data"] == "scenes" and loaded.config == model.config
    assert np.array_equal(loaded.generate(y, seed=4), model.generate(y, seed=4))


# --- serving --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scene_checkpoint(tmp_path_factory) -> str:
    """A tiny random scene model at the real size, vocabulary and palette, saved as `natty train scenes` does."""
    return build_tiny_scene_model(tmp_path_factory.mktemp("scenes"))


@pytest.fixture
def entry(scene_checkpoint) -> ModelEntry:
    return ModelEntry(name="tiny-scenes", task="text-to-image", backend="local", model=scene_checkpoint)


async def test_the_scene_entry_draws_and_says_what_it_drew(entry):
    backend = OwnModelsBackend()
    result = await backend.run(entry, Request(task="text-to-image", prompt="a red star above a blue circle in space",
                                              seed=3, params={"count": 2}), RunContext())
    assert result.meta["note"] == "drew: a red star above a blue circle; ignored: 'in space'"
    img = Image.open(io.BytesIO(result.data))
    assert img.size[0] > img.size[1] >= 256  # two 32x32 images side by side, upscaled
    again = await backend.run(entry, Request(task="text-to-image", prompt="a red star above a blue circle",
                                             seed=3, params={"count": 2}), RunContext())
    assert again.data == result.data  # the seed fixes the sample
    assert result.meta["guidance_scale"] == 1.0  # the checkpoint's own scale (this one was trained without guidance)
    guided = await backend.run(entry, Request(task="text-to-image", prompt="a red star above a blue circle",
                                              seed=3, params={"count": 2, "guidance_scale": 3}), RunContext())
    assert guided.meta["guidance_scale"] == 3.0 and guided.data != result.data  # a request's scale reaches the sampler


async def test_a_prompt_with_nothing_drawable_is_answered_with_what_it_can_draw(entry):
    with pytest.raises(BackendError) as err:
        await OwnModelsBackend().run(entry, Request(task="text-to-image", prompt="a 4k photo of a cat"),
                                     RunContext())
    assert err.value.kind is ErrorKind.BAD_REQUEST and err.value.detail == scenes.CAN_DRAW
    assert len(scenes.CAN_DRAW) <= 200  # shown whole (error details are cut at 200 characters)


async def test_the_digit_entry_no_longer_takes_a_stray_digit():
    entry = load_catalog().get("natty-pixelcnn")
    assert entry is not None
    with pytest.raises(BackendError) as err:
        await OwnModelsBackend().run(entry, Request(task="text-to-image", prompt="a 4k photo of a cat"), RunContext())
    assert err.value.kind is ErrorKind.BAD_REQUEST
    result = await OwnModelsBackend().run(entry, Request(task="text-to-image", prompt="digit 4", seed=1),
                                          RunContext())
    assert result.meta["digit"] == 4 and result.meta["note"] == "drew: a handwritten 4"


def test_the_bundled_scene_entry_is_in_the_catalog():
    entry = load_catalog().get("natty-scenes")
    assert entry is not None and entry.task == "text-to-image" and entry.model == "natty:scenes"


def test_the_evaluation_scores_each_asked_object_in_its_slot():
    from models.evaluate import recognised, summary, train_classifier

    clf = train_classifier(3, batch_size=8, log=lambda _: None)
    x, _, asked = scenes.make_batch(6, np.random.default_rng(0))
    r = recognised(clf, x, asked)
    assert len(r["both"]) == sum(len(s.objects) for s in asked)
    s = summary(r)
    assert 0 <= s["shape_and_colour"] <= s["shape"] <= 1 and s["objects"] == len(r["both"])
