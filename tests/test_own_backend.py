"""natty's own models served by the local backend: each bundled checkpoint through `run`, with progress reported,
seeds honoured and cancellation obeyed; tacotron2 marked unavailable, with its reason, when offline."""

from __future__ import annotations

import asyncio
import io
import json
import wave

import pytest

pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from models.backends import tacotron  # noqa: E402
from models.backends.local import LocalBackend  # noqa: E402
from models.base import Progress, Request, RunContext  # noqa: E402
from models.catalog import ModelEntry, load_catalog  # noqa: E402
from models.errors import BackendError, ErrorKind  # noqa: E402
from models.own import OwnModelsBackend, parse_digit  # noqa: E402
from models.own.charrnn import WORD_SLACK, is_word_char  # noqa: E402


@pytest.fixture(scope="module")
def backend() -> OwnModelsBackend:
    return OwnModelsBackend()


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _ctx(cancel_after: int | None = None) -> tuple[RunContext, list[Progress]]:
    reports: list[Progress] = []
    ctx = RunContext()

    def report(p: Progress) -> None:
        reports.append(p)
        if cancel_after is not None and len(reports) >= cancel_after:
            ctx.cancel.cancel()

    ctx.report = report
    return ctx, reports


async def test_bundled_checkpoints_are_present(backend, catalog):
    for name in ("natty-gpt", "natty-rnn", "natty-pixelcnn", "natty-wavenet"):
        ok, why = await backend.check(catalog.get(name))
        assert ok, why


async def test_missing_checkpoint_is_reported(backend, tmp_path):
    entry = ModelEntry(name="mine", task="chat", backend="local", model=str(tmp_path / "nothing"))
    ok, why = await backend.check(entry)
    assert not ok and "natty train" in why
    with pytest.raises(BackendError) as err:
        await backend.run(entry, Request(task="chat", prompt="hi"), RunContext())
    assert err.value.kind is ErrorKind.NOT_CONFIGURED


async def test_chat_streams_text_and_is_reproducible(backend, catalog):
    entry = catalog.get("natty-rnn")
    request = Request(task="chat", messages=[{"role": "user", "content": "The old bridge"}], seed=7,
                      params={"max_new_tokens": 80})
    ctx, reports = _ctx()
    result = await backend.run(entry, request, ctx)
    # it ends on a whole word: up to WORD_SLACK characters past 80 to finish one, else the partial word is dropped
    assert 40 <= len(result.text) <= 80 + WORD_SLACK and not is_word_char(result.text[-1])
    assert result.meta["seed"] == 7 and result.meta["backend"] == "local"
    assert reports and all(r.text.startswith(result.text) or result.text.startswith(r.text) for r in reports)
    assert [len(r.text) for r in reports] == sorted(len(r.text) for r in reports)
    assert sum(w.isalpha() and len(w) > 2 for w in result.text.split()) >= 5  # words, not noise
    again = await backend.run(entry, request, RunContext())
    assert again.text == result.text


async def test_chat_cancel_is_honoured(backend, catalog):
    ctx, reports = _ctx(cancel_after=2)
    with pytest.raises(BackendError) as err:
        await backend.run(catalog.get("natty-rnn"), Request(task="chat", prompt="A", params={"max_new_tokens": 400}),
                          ctx)
    assert err.value.kind is ErrorKind.CANCELLED and len(reports) == 2


def test_parse_digit():
    assert parse_digit("7") == 7 and parse_digit("draw a seven please") == 7 and parse_digit("0 and 5") == 0
    assert parse_digit("a cat") is None and parse_digit("/imagine 7") == 7 and parse_digit("digit 3") == 3
    # a stray digit in a prompt about something else is not a request for a digit
    assert parse_digit("a 4k photo of a cat") is None and parse_digit("a photo of 4 cats") is None


async def test_image_draws_the_asked_digit_row_by_row(backend, catalog):
    entry = catalog.get("natty-pixelcnn")
    ctx, reports = _ctx()
    result = await backend.run(entry, Request(task="text-to-image", prompt="seven", seed=3), ctx)
    img = Image.open(io.BytesIO(result.data))
    assert img.format == "PNG" and img.size == (256, 256) == (result.width, result.height)
    assert result.meta["digit"] == 7 and result.meta["seed"] == 3
    assert [r.step for r in reports] == list(range(1, 9)) and reports[-1].fraction == 1.0
    assert all(Image.open(io.BytesIO(r.preview)).format == "PNG" for r in reports)
    same = await backend.run(entry, Request(task="text-to-image", prompt="/imagine 7", seed=3), RunContext())
    assert same.data == result.data
    two = await backend.run(entry, Request(task="text-to-image", prompt="2", seed=1, params={"count": 2}),
                            RunContext())
    assert Image.open(io.BytesIO(two.data)).size[0] > Image.open(io.BytesIO(two.data)).size[1]


async def test_image_without_a_digit_is_a_bad_request(backend, catalog):
    with pytest.raises(BackendError) as err:
        await backend.run(catalog.get("natty-pixelcnn"), Request(task="text-to-image", prompt="a cat"), RunContext())
    assert err.value.kind is ErrorKind.BAD_REQUEST and "/imagine 7" in err.value.detail


async def test_image_cancel_is_honoured(backend, catalog):
    ctx, reports = _ctx(cancel_after=3)
    with pytest.raises(BackendError) as err:
        await backend.run(catalog.get("natty-pixelcnn"), Request(task="text-to-image", prompt="3"), ctx)
    assert err.value.kind is ErrorKind.CANCELLED and len(reports) == 3


async def test_audio_is_a_wav_with_progress_and_the_loop_stays_free(backend, catalog):
    entry = catalog.get("natty-wavenet")
    ctx, reports = _ctx()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        result = await backend.run(entry, Request(task="text-to-audio", prompt="a C major chord", seed=2,
                                                  params={"seconds": 0.3}), ctx)
    finally:
        task.cancel()
    assert ticks > 0  # the event loop ran while the model generated
    with wave.open(io.BytesIO(result.data)) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 4800 and w.getnchannels() == 1
    assert result.sample_rate == 16000 and result.duration == pytest.approx(0.3)
    assert result.meta["kind"] == "chord"
    fractions = [r.fraction for r in reports if r.fraction]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


async def test_audio_cancel_is_honoured(backend, catalog):
    ctx, reports = _ctx(cancel_after=2)
    with pytest.raises(BackendError) as err:
        await backend.run(catalog.get("natty-wavenet"), Request(task="text-to-audio", params={"seconds": 5}), ctx)
    assert err.value.kind is ErrorKind.CANCELLED


async def test_local_backend_routes_natty_models_here(catalog):
    local = LocalBackend()
    result = await local.run(catalog.get("natty-pixelcnn"), Request(task="text-to-image", prompt="1", seed=0),
                             RunContext())
    assert result.meta["backend"] == "local" and result.data.startswith(b"\x89PNG")
    await local.aclose()


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and a probe that can only fail, whatever this machine's network."""
    import torch

    hub = tmp_path / "torch" / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))  # in case something called torch.hub.set_dir
    monkeypatch.setattr(tacotron, "PROBE_ADDRESS", ("127.0.0.1", 1))
    return hub


async def test_tacotron_is_unavailable_offline_with_a_reason(backend, catalog, offline):
    ok, why = await backend.check(catalog.get("tacotron2"))
    assert not ok and "torch.hub" in why and "cannot be reached" in why and str(offline) in why
    with pytest.raises(BackendError) as err:
        await backend.run(catalog.get("tacotron2"), Request(task="text-to-speech", prompt="hello"), RunContext())
    assert err.value.kind is ErrorKind.NOT_CONFIGURED


async def test_tacotron_is_available_from_the_cache_without_network(backend, catalog, offline):
    (offline / tacotron.REPO_DIR).mkdir(parents=True)
    (offline / "checkpoints").mkdir()
    names = ("nvidia_tacotron2pyt_fp32_20190427", "nvidia_waveglowpyt_fp32_20190427")
    for name in names:  # what an interrupted download leaves behind
        (offline / "checkpoints" / name).write_bytes(b"")
    ok, why = await backend.check(catalog.get("tacotron2"))
    assert not ok and "not in the cache" in why
    for name in names:
        (offline / "checkpoints" / name).write_bytes(b"PK\x03\x04" + b"\0" * 1024)  # a (fake) saved checkpoint
    ok, why = await backend.check(catalog.get("tacotron2"))
    assert ok and "cache" in why


def test_bundled_configs_name_their_model():
    from models.own import CHECKPOINTS

    for name in ("charrnn", "pixelcnn", "wavenet"):
        meta = json.loads((CHECKPOINTS / name / "config.json").read_text())
        assert meta["natty_model"] == name and (CHECKPOINTS / name / "model.safetensors").stat().st_size < 8e6
