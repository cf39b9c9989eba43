"""The local transformers backend, on tiny random-weight models built here and loaded from folders."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")

import tiny_pipelines as tiny  # noqa: E402

from models.backends.pipelines import PipelinesBackend, decode_audio, progress_tqdm  # noqa: E402
from models.base import AudioResult, LabelsResult, Progress, Request, RunContext, TextResult  # noqa: E402
from models.catalog import ModelEntry  # noqa: E402
from models.errors import BackendError, ErrorKind  # noqa: E402

LABELS = ("cat", "dog", "bird", "fish")
PROMPTS = ["hi", "the quick brown fox jumps over the lazy dog", "a photo of a cat", "hello there, how are you today?"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-pipelines")
    return {
        "chat": tiny.build_tiny_gpt2(root / "gpt2"),
        "plain": tiny.build_tiny_gpt2(root / "gpt2-plain", chat_template=False),
        "classifier": tiny.build_tiny_vit_classifier(root / "vit", LABELS),
        "captioner": tiny.build_tiny_captioner(root / "captioner"),
        "whisper": tiny.build_tiny_whisper(root / "whisper"),
        "vits": tiny.build_tiny_vits(root / "vits"),
    }


@pytest.fixture
async def backend(tmp_path: Path):
    # An empty cache and a closed port: nothing here may touch the network.
    b = PipelinesBackend(cache_dir=str(tmp_path / "hf-cache"), endpoint="http://127.0.0.1:9")
    yield b
    await b.aclose()


def entry(task: str, model: str, **params) -> ModelEntry:
    return ModelEntry(name=f"tiny-{task}", task=task, backend="local", model=model, params=params)


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def wav(seconds: float = 0.5, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def greedy(prompt: str, n: int = 16) -> Request:
    return Request(task="chat", prompt=prompt, params={"max_new_tokens": n, "temperature": 0, "ignore_eos": True})


# ---- chat ----


async def test_chat_streams_progress(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    reports: list[Progress] = []
    result = await backend.run(entry("chat", folders["chat"]), greedy("hello there", 12), RunContext(reports.append))
    assert isinstance(result, TextResult) and isinstance(result.text, str)
    assert result.meta["tokens"] == 12 and result.meta["backend"] == "local"
    texts = [p.text for p in reports if p.text is not None]
    assert texts and texts[-1] == result.text
    assert any(p.message.startswith("loading") for p in reports)


async def test_chat_without_template_continues_the_prompt(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    result = await backend.run(entry("chat", folders["plain"]), greedy("the quick brown", 8), RunContext())
    assert isinstance(result, TextResult) and result.meta["tokens"] == 8


async def test_batched_greedy_equals_solo(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    e = entry("chat", folders["chat"])
    solo = [(await backend.run(e, greedy(p, 24), RunContext())).text for p in PROMPTS]
    batched = await asyncio.gather(*(backend.run(e, greedy(p, 24), RunContext()) for p in PROMPTS))
    assert [r.text for r in batched] == solo
    lm = backend._loaded[backend._key(e, "chat")]
    assert lm.batcher.max_seen_batch >= 2  # they really shared forward passes


async def test_batched_greedy_equals_transformers_generate(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    import torch

    e = entry("chat", folders["chat"])
    batched = await asyncio.gather(*(backend.run(e, greedy(p, 20), RunContext()) for p in PROMPTS))
    lm = backend._loaded[backend._key(e, "chat")]
    for prompt, result in zip(PROMPTS, batched, strict=True):
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
        out = lm.model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                                pad_token_id=lm.tokenizer.pad_token_id)
        assert lm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True) == result.text


async def test_seeded_sampling_is_the_same_alone_or_batched(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    e = entry("chat", folders["chat"])

    def sampled(prompt: str) -> Request:
        return Request(task="chat", prompt=prompt, seed=7,
                       params={"max_new_tokens": 16, "temperature": 1.0, "top_k": 50, "top_p": 0.95,
                               "ignore_eos": True})

    alone = (await backend.run(e, sampled("hello"), RunContext())).text
    together = await asyncio.gather(*(backend.run(e, sampled(p), RunContext()) for p in ["hello", "hi", "a cat"]))
    assert together[0].text == alone


async def test_cancel_stops_generation(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    e = entry("chat", folders["chat"])
    await backend.run(e, greedy("warm up", 1), RunContext())  # load first, so the cancel lands mid-generation
    ctx = RunContext()
    seen: list[int] = []

    def report(p: Progress) -> None:
        if p.step is not None:
            seen.append(p.step)
            ctx.cancel.cancel()

    ctx.report = report
    with pytest.raises(BackendError) as info:
        await backend.run(e, greedy("hello there", 400), ctx)
    assert info.value.kind is ErrorKind.CANCELLED
    assert seen and max(seen) < 400


async def test_event_loop_keeps_ticking_during_load_and_generation(
    backend: PipelinesBackend, folders: dict[str, str]
) -> None:
    # If the pipeline ran on the loop, the ticker would stall for the whole run in one gap.
    ticks: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    try:
        await backend.run(entry("chat", folders["chat"]), greedy("hello", 64), RunContext())
    finally:
        end = time.perf_counter()
        done.set()
        await task
    during = [start, *(t for t in ticks if start <= t <= end), end]
    largest_gap = max(b - a for a, b in zip(during, during[1:], strict=False))
    assert len(during) > 3
    assert largest_gap < (end - start) / 2, f"the loop stalled {largest_gap:.3f}s of a {end - start:.3f}s run"


# ---- the pipeline tasks ----


async def test_text_to_speech_returns_wav(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    for task in ("text-to-speech", "text-to-audio"):
        result = await backend.run(entry(task, folders["vits"]), Request(task=task, prompt="hello there", seed=1),
                                   RunContext())
        assert isinstance(result, AudioResult) and result.format == "wav"
        audio, rate = sf.read(io.BytesIO(result.data))
        assert rate == result.sample_rate == 16000
        assert len(audio) > 0 and result.duration == pytest.approx(len(audio) / rate)


async def test_image_to_text_captions(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    result = await backend.run(entry("image-to-text", folders["captioner"], max_new_tokens=6),
                               Request(task="image-to-text", image=png()), RunContext())
    assert isinstance(result, TextResult) and isinstance(result.text, str) and result.text.strip()


async def test_speech_to_text_resamples_and_transcribes(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    result = await backend.run(entry("speech-to-text", folders["whisper"]),
                               Request(task="speech-to-text", audio=wav(0.5, 8000)), RunContext())
    assert isinstance(result, TextResult) and isinstance(result.text, str)
    assert result.meta["audio_seconds"] == pytest.approx(0.5, abs=0.01)


async def test_image_classification_labels_sorted(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    result = await backend.run(entry("image-classification", folders["classifier"], top_k=3),
                               Request(task="image-classification", image=png()), RunContext())
    assert isinstance(result, LabelsResult) and len(result.labels) == 3
    assert {label for label, _ in result.labels} <= set(LABELS)
    scores = [score for _, score in result.labels]
    assert scores == sorted(scores, reverse=True)


async def test_bad_inputs_are_bad_requests(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    with pytest.raises(BackendError) as info:
        await backend.run(entry("image-classification", folders["classifier"]),
                          Request(task="image-classification", image=b"not an image"), RunContext())
    assert info.value.kind is ErrorKind.BAD_REQUEST
    with pytest.raises(BackendError) as info:
        await backend.run(entry("speech-to-text", folders["whisper"]),
                          Request(task="speech-to-text", audio=b"not audio"), RunContext())
    assert info.value.kind is ErrorKind.BAD_REQUEST


def test_decode_audio_refuses_audio_longer_than_the_bound_before_decoding_it(monkeypatch) -> None:
    import models.media

    monkeypatch.setattr(models.media, "MAX_AUDIO_SECONDS", 2)
    with pytest.raises(BackendError, match="longer than") as info:
        decode_audio(wav(3.0, 8000), 16000)
    assert info.value.kind is ErrorKind.BAD_REQUEST
    assert len(decode_audio(wav(1.5, 8000), 8000)) == 12000


def test_decode_audio_resamples_to_mono() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((8000, 2), dtype=np.float32), 8000, format="WAV")
    audio = decode_audio(buf.getvalue(), 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) == 16000


async def test_routed_through_the_local_backend(folders: dict[str, str]) -> None:
    from models.backends.local import LocalBackend

    local = LocalBackend()
    try:
        result = await local.run(entry("image-classification", folders["classifier"]),
                                 Request(task="image-classification", image=png()), RunContext())
        assert isinstance(result, LabelsResult) and result.meta["backend"] == "local"
    finally:
        await local.aclose()


# ---- finding and downloading models ----


def test_tqdm_bridge_forwards_byte_progress() -> None:
    reports: list[Progress] = []
    cls = progress_tqdm(reports.append, "org/model", min_interval=0)
    files = cls(total=3, desc="Fetching 3 files", disable=True)
    transfer = cls(total=1000, unit="B", name="huggingface_hub.snapshot_download.transfer", disable=True)
    written = cls(total=0, unit="B", name="huggingface_hub.snapshot_download", disable=True)
    written.total = 1000  # snapshot_download grows the total as it learns each file's size
    files.update(1)
    transfer.update(500)
    assert reports == []
    written.update(400)
    assert reports[-1].message == "downloading org/model 40%" and reports[-1].fraction == pytest.approx(0.4)
    written.update(600)
    assert reports[-1].message == "downloading org/model 100%"


async def test_check_folders(backend: PipelinesBackend, folders: dict[str, str], tmp_path: Path) -> None:
    assert await backend.check(entry("chat", folders["chat"])) == (True, "ok")
    ok, why = await backend.check(entry("chat", str(tmp_path / "missing")))
    assert not ok and "does not exist" in why
    (tmp_path / "empty").mkdir()
    ok, why = await backend.check(entry("chat", str(tmp_path / "empty")))
    assert not ok and "config.json" in why
    with pytest.raises(BackendError) as info:
        await backend.run(entry("chat", str(tmp_path / "empty")), greedy("hi"), RunContext())
    assert info.value.kind is ErrorKind.NOT_CONFIGURED


async def test_check_uncached_hub_id_that_cannot_be_reached(backend: PipelinesBackend) -> None:
    started = time.monotonic()
    ok, why = await backend.check(entry("chat", "someone/not-cached-model"))
    assert not ok and "not cached" in why and "cannot be reached" in why
    assert time.monotonic() - started < 30  # refused at once, not a long network timeout


async def test_check_uncached_hub_id_offline(backend: PipelinesBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, why = await backend.check(entry("chat", "someone/not-cached-model"))
    assert not ok and "HF_HUB_OFFLINE" in why


async def test_run_on_unreachable_hub_id_is_classified(backend: PipelinesBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.run(entry("chat", "someone/not-cached-model"), greedy("hi"), RunContext())
    assert info.value.kind is ErrorKind.UNREACHABLE


# ---- packed linear layers (oneDNN) for CPU decode steps ----


def _dense_generate(folder: str, ids: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=model.generation_config.pad_token_id)
    return out[0, len(ids):].tolist()


async def test_cpu_chat_models_run_packed_and_say_the_same_as_the_dense_model(
        backend: PipelinesBackend, folders: dict[str, str]) -> None:
    from models.backends.batching import PackedLinear

    e = entry("chat", folders["chat"])
    batched = await asyncio.gather(*(backend.run(e, greedy(p, 20), RunContext()) for p in PROMPTS))
    lm = backend._loaded[backend._key(e, "chat")]
    packed = [m for m in lm.model.modules() if isinstance(m, PackedLinear)]
    assert packed and not any(type(m).__name__ == "Conv1D" for m in lm.model.modules())  # every layer swapped
    for prompt, result in zip(PROMPTS, batched, strict=True):
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
        assert lm.tokenizer.decode(_dense_generate(folders["chat"], ids, 20), skip_special_tokens=True) == result.text


async def test_packed_false_keeps_the_dense_layers(backend: PipelinesBackend, folders: dict[str, str]) -> None:
    from models.backends.batching import PackedLinear

    e = entry("chat", folders["chat"], packed=False)
    await backend.run(e, greedy("hi", 4), RunContext())
    lm = backend._loaded[backend._key(e, "chat")]
    assert not any(isinstance(m, PackedLinear) for m in lm.model.modules())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_packed_linear_computes_what_the_dense_one_does(dtype: str) -> None:
    import torch
    from transformers.pytorch_utils import Conv1D

    from models.backends.batching import PackedLinear

    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    linear, conv = torch.nn.Linear(48, 80).to(dt), Conv1D(80, 48).to(dt)  # Conv1D(nf=out, nx=in): weight (in, out)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(3, 5, 48, dtype=dt)  # (batch, positions, features), as decoder layers pass it
    with torch.inference_mode():
        for dense, packed in ((linear, PackedLinear(linear.weight, linear.bias)),
                              (conv, PackedLinear(conv.weight.t(), conv.bias))):
            want, got = dense(x), packed(x)
            assert got.shape == want.shape == (3, 5, 80) and got.dtype == dt
            assert torch.allclose(got.float(), want.float(), atol=1e-4 if dtype == "float32" else 0.1)


def test_a_model_the_packed_layers_would_change_stays_dense(folders: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from models.backends import batching

    model = AutoModelForCausalLM.from_pretrained(folders["chat"], dtype=torch.float32).eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
    monkeypatch.setattr(batching.PackedLinear, "forward", lambda self, x: torch.zeros(
        *x.shape[:-1], self.out_features))  # a layout that computed nonsense
    assert batching.pack_linears(model) == 0
    assert not any(isinstance(m, batching.PackedLinear) for m in model.modules())
    with torch.inference_mode():
        assert torch.equal(model(input_ids=ids).logits, before)


def test_newcomers_that_arrive_together_join_once_and_each_ends_exactly_once(folders: dict[str, str]) -> None:
    """Requests queued before the batcher's thread runs are admitted in one go: one ends at its prefill (a single
    token), one was aborted while queued, and the rest generate what each would alone; every on_done fires once."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM

    from models.backends.batching import Batcher, GenerationRequest, RequestStopped

    model = AutoModelForCausalLM.from_pretrained(folders["chat"], dtype=torch.float32).eval()
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15, 16], [17, 18, 19, 20, 21], [22, 23, 24, 25]]
    lengths = [6, 9, 1, 6, 5]
    tokens: list[list[int]] = [[] for _ in prompts]
    ends: list[list[BaseException | None]] = [[] for _ in prompts]
    finished = threading.Semaphore(0)

    def request(i: int) -> GenerationRequest:
        def on_done(error: BaseException | None) -> None:
            ends[i].append(error)
            finished.release()

        return GenerationRequest(prompts[i], max_new_tokens=lengths[i], on_token=tokens[i].append, on_done=on_done)

    batcher = Batcher(model, max_batch=8, name="tiny")
    requests = [request(i) for i in range(len(prompts))]
    requests[4].abort()  # gone before its prefill
    with batcher._cond:  # hold the thread off until all five are queued, so they arrive together
        for r in requests:
            batcher.submit(r)
    for _ in prompts:
        assert finished.acquire(timeout=60)
    batcher.close()
    assert [len(e) for e in ends] == [1, 1, 1, 1, 1]
    assert ends[:4] == [[None]] * 4 and isinstance(ends[4][0], RequestStopped)
    assert [len(t) for t in tokens] == [6, 9, 1, 6, 0]
    assert batcher.max_seen_batch == 3  # the one-token request ended at its prefill and never joined
    with torch.inference_mode():
        for i in range(4):
            alone = model.generate(torch.tensor([prompts[i]]), max_new_tokens=lengths[i], do_sample=False,
                                   eos_token_id=None, pad_token_id=0)
            assert tokens[i] == alone[0, len(prompts[i]):].tolist()
