"""HFBackend end to end against the tests' own Hugging Face-compatible server (tests/hf_server.py).

Waits are observed through an injected sleep and clock, never measured on the wall clock.
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import random
import time
import traceback
from typing import Any

import av
import pytest
import soundfile
from PIL import Image

from bot.i18n import error_message
from models.backends.hf import HFBackend
from models.backends.http import classify, parse_retry_after
from models.base import Progress, Request, RunContext
from models.catalog import ModelEntry
from models.errors import BackendError, ErrorKind
from tests.hf_server import HFTestServer, draw_png, tone


class FakeTime:
    """An injectable clock and sleep: sleeping advances the clock at once and records the wait."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def server():
    async with HFTestServer() as srv:
        yield srv


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def backend(fake_time: FakeTime) -> HFBackend:
    return HFBackend(
        backoff_base=0.5, backoff_cap=4.0, loading_cap=60.0, max_attempts=4, sleep=fake_time.sleep,
        clock=fake_time, rng=random.Random(0),
    )


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached login either


def make_entry(server: HFTestServer, task: str, *, endpoint: str | None = None, **kw: Any) -> ModelEntry:
    return ModelEntry(name=f"test-{task}", task=task, backend="hf", model=server.endpoint(endpoint or task), **kw)


class Reports:
    def __init__(self) -> None:
        self.items: list[Progress] = []

    def __call__(self, progress: Progress) -> None:
        self.items.append(progress)

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.items if p.text is not None]


def png(width: int = 32, height: int = 24, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


# ---- every task, decoded ---------------------------------------------------------------------------------------


async def test_chat_streams_progress_token_by_token(server: HFTestServer, backend: HFBackend) -> None:
    reports = Reports()
    result = await backend.run(
        make_entry(server, "chat"), Request(task="chat", prompt="hello there friend"), RunContext(report=reports)
    )
    assert result.text == "You said: hello there friend"
    assert len(reports.texts) == 5
    assert reports.texts[-1] == result.text
    assert all(b.startswith(a) for a, b in zip(reports.texts, reports.texts[1:], strict=False))
    assert server.last.path == "/chat/v1/chat/completions"
    assert server.last.json["stream"] is True
    assert result.meta["backend"] == "hf"


async def test_chat_passes_params_and_history(server: HFTestServer, backend: HFBackend) -> None:
    entry = make_entry(server, "chat", params={"max_tokens": 3, "temperature": 0.2, "repetition_penalty": 1.1})
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question please"},
    ]
    result = await backend.run(entry, Request(task="chat", messages=messages), RunContext())
    assert result.text == "You said: second"
    sent = server.last.json
    assert sent["messages"] == messages
    assert sent["max_tokens"] == 3 and sent["temperature"] == 0.2 and sent["repetition_penalty"] == 1.1


async def test_chat_passes_image_parts_through(server: HFTestServer, backend: HFBackend) -> None:
    url = "data:image/png;base64,iVBORw0KGgo="
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": url}},
    ]}]
    result = await backend.run(
        make_entry(server, "chat"), Request(task="chat", messages=messages, image=png()), RunContext()
    )
    assert result.text == "You said: what is this (and sent 2 images)"
    parts = server.last.json["messages"][0]["content"]
    assert parts[1]["image_url"]["url"] == url
    assert parts[2]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_text_to_image_returns_png_and_passes_params(server: HFTestServer, backend: HFBackend) -> None:
    entry = make_entry(server, "text-to-image", params={"num_inference_steps": 4})
    request = Request(
        task="text-to-image", prompt="a red fox", negative_prompt="blurry", seed=7, params={"width": 48, "height": 32}
    )
    result = await backend.run(entry, request, RunContext())
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "PNG" and image.size == (48, 32)
    assert (result.width, result.height, result.format) == (48, 32, "png")
    assert server.last.json["inputs"] == "a red fox"
    assert server.last.parameters == {
        "negative_prompt": "blurry", "seed": 7, "width": 48, "height": 32, "num_inference_steps": 4,
    }
    assert result.data == draw_png("a red fox", 48, 32, 7)  # the server's image, intact
    assert result.meta["seed"] == 7


async def test_image_to_image(server: HFTestServer, backend: HFBackend) -> None:
    request = Request(task="image-to-image", prompt="invert it", image=png(30, 20), params={"width": 16, "height": 8})
    result = await backend.run(make_entry(server, "image-to-image"), request, RunContext())
    image = Image.open(io.BytesIO(result.data)).convert("RGB")
    assert image.size == (16, 8)
    assert image.getpixel((0, 0)) == (55, 225, 225)
    assert server.last.parameters["prompt"] == "invert it"
    assert server.last.parameters["target_size"] == {"width": 16, "height": 8}


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
async def test_text_to_speech_detects_format_and_duration(server: HFTestServer, backend: HFBackend, fmt: str) -> None:
    entry = make_entry(server, "text-to-speech", params={"duration": 0.5, "format": fmt, "voice": "af_heart"})
    result = await backend.run(entry, Request(task="text-to-speech", prompt="hello"), RunContext())
    assert result.format == fmt
    assert result.duration == pytest.approx(0.5, abs=0.01)
    assert result.sample_rate == 16000
    assert soundfile.info(io.BytesIO(result.data)).duration == pytest.approx(0.5, abs=0.01)
    assert server.last.parameters["voice"] == "af_heart"


async def test_text_to_audio_goes_through_text_to_speech(server: HFTestServer, backend: HFBackend) -> None:
    entry = make_entry(server, "text-to-audio")
    result = await backend.run(entry, Request(task="text-to-audio", prompt="a drum loop", params={"duration": 1.25}),
                               RunContext())
    assert (result.format, result.duration) == ("wav", pytest.approx(1.25))
    assert server.last.path == "/text-to-audio"
    assert server.last.json["inputs"] == "a drum loop"


async def test_image_to_text(server: HFTestServer, backend: HFBackend) -> None:
    result = await backend.run(
        make_entry(server, "image-to-text"), Request(task="image-to-text", image=png(40, 10)), RunContext()
    )
    assert result.text == "a 40x10 picture, mostly red"


async def test_speech_to_text(server: HFTestServer, backend: HFBackend) -> None:
    result = await backend.run(
        make_entry(server, "speech-to-text"), Request(task="speech-to-text", audio=tone(0.75)), RunContext()
    )
    assert result.text == "heard 0.75 seconds of audio at 16000 Hz"


async def test_image_classification_labels_sorted(server: HFTestServer, backend: HFBackend) -> None:
    entry = make_entry(server, "image-classification", params={"top_k": 3})
    result = await backend.run(entry, Request(task="image-classification", image=png()), RunContext())
    scores = [score for _, score in result.labels]
    assert len(result.labels) == 3
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(label, str) and label for label, _ in result.labels)


async def test_text_to_video_against_a_url_is_unsupported(server: HFTestServer, backend: HFBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "text-to-video"), Request(task="text-to-video", prompt="x"), RunContext())
    assert info.value.kind is ErrorKind.UNSUPPORTED
    assert "URL" in info.value.detail
    assert server.requests == []


async def test_image_to_video_needs_a_provider_and_an_image(server: HFTestServer, backend: HFBackend) -> None:
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "image-to-video"), Request(task="image-to-video", image=png()),
                          RunContext())
    assert info.value.kind is ErrorKind.UNSUPPORTED and "URL" in info.value.detail
    entry = ModelEntry(name="i2v", task="image-to-video", backend="hf", model="acme/tiny-i2v", provider="wavespeed")
    with pytest.raises(BackendError) as info:
        await backend.run(entry, Request(task="image-to-video", prompt="spin"), RunContext())
    assert info.value.kind is ErrorKind.BAD_REQUEST and "image" in info.value.detail
    assert server.requests == []


async def test_text_to_video_through_a_provider_route(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants
    from huggingface_hub.hf_api import InferenceProviderMapping
    from huggingface_hub.inference._providers import _common

    monkeypatch.setattr(constants, "INFERENCE_PROXY_TEMPLATE", server.router_template)
    mapping = InferenceProviderMapping(
        provider="novita", hf_model_id="acme/tiny-t2v", providerId="acme/tiny-t2v", status="live", task="text-to-video"
    )
    monkeypatch.setitem(_common.HARDCODED_MODEL_INFERENCE_MAPPING, "novita", {"acme/tiny-t2v": mapping})
    monkeypatch.setenv("TEST_HF_KEY", "hf_testkeyforvideo123")
    entry = ModelEntry(name="t2v", task="text-to-video", backend="hf", model="acme/tiny-t2v", provider="novita",
                       api_key_env="TEST_HF_KEY", params={"num_frames": 5})
    result = await backend.run(entry, Request(task="text-to-video", prompt="waves"), RunContext())
    assert result.format == "mp4"
    with av.open(io.BytesIO(result.data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and frames[0].width == 64
    assert server.requests[0].path == "/novita/v3/hf/acme/tiny-t2v"
    assert server.requests[0].authorization == "Bearer hf_testkeyforvideo123"
    assert result.meta["provider"] == "novita"


# ---- failures: retried ----------------------------------------------------------------------------------------


async def test_loading_503_waits_the_estimate_then_succeeds(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.loading(estimated_time=7.5)
    result = await backend.run(make_entry(server, "text-to-image"), Request(task="text-to-image", prompt="p"),
                               RunContext())
    assert Image.open(io.BytesIO(result.data)).size == (1024, 1024)
    assert fake_time.sleeps == [7.5]
    assert len(server.requests) == 2


async def test_loading_estimate_is_capped(server: HFTestServer, backend: HFBackend, fake_time: FakeTime) -> None:
    server.loading(estimated_time=1000)
    await backend.run(make_entry(server, "image-to-text"), Request(task="image-to-text", image=png()), RunContext())
    assert fake_time.sleeps == [60.0]


async def test_rate_limit_honours_retry_after_seconds(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.rate_limited(retry_after=3)
    result = await backend.run(make_entry(server, "chat"), Request(task="chat", prompt="hi"), RunContext())
    assert result.text == "You said: hi"
    assert len(fake_time.sleeps) == 1 and fake_time.sleeps[0] >= 3


async def test_rate_limit_honours_retry_after_http_date(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.rate_limited(retry_after=email.utils.formatdate(time.time() + 30, usegmt=True))
    await backend.run(make_entry(server, "speech-to-text"), Request(task="speech-to-text", audio=tone(0.1)),
                      RunContext())
    assert len(fake_time.sleeps) == 1 and 28 <= fake_time.sleeps[0] <= 30


async def test_server_errors_back_off_with_jitter_then_succeed(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.fail_next(500, times=2)
    result = await backend.run(make_entry(server, "chat"), Request(task="chat", prompt="ok"), RunContext())
    assert result.text == "You said: ok"
    assert len(server.requests) == 3
    assert len(fake_time.sleeps) == 2
    assert 0 <= fake_time.sleeps[0] <= 0.5 and 0 <= fake_time.sleeps[1] <= 1.0  # full jitter under base * 2**n


async def test_dropped_connection_is_retried(server: HFTestServer, backend: HFBackend, fake_time: FakeTime) -> None:
    server.fail_next(mode="drop")
    result = await backend.run(make_entry(server, "image-to-text"), Request(task="image-to-text", image=png()),
                               RunContext())
    assert result.text.startswith("a 32x24 picture")
    assert len(fake_time.sleeps) == 1


async def test_persistent_5xx_ends_busy_after_max_attempts(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.fail_next(502, times=None)
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "text-to-image"), Request(task="text-to-image", prompt="p"),
                          RunContext())
    assert info.value.kind is ErrorKind.BUSY and info.value.status == 502
    assert len(server.requests) == 4
    assert all(s <= 4.0 for s in fake_time.sleeps)  # never above the cap


# ---- failures: not retried ------------------------------------------------------------------------------------


async def test_bad_request_is_not_retried_and_reason_reaches_user(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.bad_request("Input validation error: `inputs` must have less than 77 tokens")
    entry = make_entry(server, "text-to-image")
    with pytest.raises(BackendError) as info:
        await backend.run(entry, Request(task="text-to-image", prompt="p"), RunContext())
    err = info.value
    assert err.kind is ErrorKind.BAD_REQUEST and err.status == 400
    assert len(server.requests) == 1 and fake_time.sleeps == []
    assert "must have less than 77 tokens" in error_message(err, None, "en-US")
    assert err.model == entry.name


async def test_422_on_a_stream_is_bad_request(server: HFTestServer, backend: HFBackend) -> None:
    server.bad_request("max_tokens must be at most 4096", status=422)
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "chat"), Request(task="chat", prompt="x"), RunContext())
    assert info.value.kind is ErrorKind.BAD_REQUEST
    assert "max_tokens must be at most 4096" in error_message(info.value, None, "en-US")


async def test_content_refusal(server: HFTestServer, backend: HFBackend) -> None:
    server.bad_request("Potential NSFW content was detected in one or more images")
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "text-to-image"), Request(task="text-to-image", prompt="p"),
                          RunContext())
    assert info.value.kind is ErrorKind.REFUSED
    assert "NSFW" in error_message(info.value, None, "en-US")


@pytest.mark.parametrize(("status", "kind"), [(401, ErrorKind.AUTH), (403, ErrorKind.AUTH),
                                              (404, ErrorKind.NOT_FOUND)])
async def test_auth_and_not_found(server: HFTestServer, backend: HFBackend, status: int, kind: ErrorKind) -> None:
    server.fail_next(status, body={"error": "nope"})
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "image-to-text"), Request(task="image-to-text", image=png()),
                          RunContext())
    assert info.value.kind is kind
    assert len(server.requests) == 1


@pytest.mark.parametrize(("task", "request_kw"), [
    ("text-to-image", {"prompt": "p"}),
    ("image-to-text", {"image": png()}),
    ("image-classification", {"image": png()}),
    ("speech-to-text", {"audio": tone(0.1)}),
    ("text-to-speech", {"prompt": "p"}),
    ("chat", {"prompt": "p"}),
])
async def test_malformed_body_is_internal(
    server: HFTestServer, backend: HFBackend, task: str, request_kw: dict[str, Any]
) -> None:
    server.malformed()
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, task), Request(task=task, **request_kw), RunContext())
    assert info.value.kind is ErrorKind.INTERNAL
    assert info.value.detail
    assert len(server.requests) == 1


async def test_stalled_stream_times_out_after_partial_progress(server: HFTestServer, backend: HFBackend) -> None:
    server.stall(after_chunks=2)
    reports = Reports()
    entry = make_entry(server, "chat", timeout=0.5)
    with pytest.raises(BackendError) as info:
        await backend.run(entry, Request(task="chat", prompt="one two three four"), RunContext(report=reports))
    assert info.value.kind is ErrorKind.TIMEOUT
    assert reports.texts[-1] == "You said:"
    assert len(server.requests) == 1


async def test_stalled_response_times_out(server: HFTestServer, backend: HFBackend) -> None:
    server.stall()
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "text-to-image", timeout=0.3), Request(task="text-to-image", prompt="p"),
                          RunContext())
    assert info.value.kind is ErrorKind.TIMEOUT


@pytest.mark.parametrize("task", ["chat", "text-to-image"])
async def test_refused_connection_is_unreachable(server: HFTestServer, backend: HFBackend, task: str) -> None:
    entry = ModelEntry(name="down", task=task, backend="hf", model=f"{server.refused_url}/{task}")
    with pytest.raises(BackendError) as info:
        await backend.run(entry, Request(task=task, prompt="p"), RunContext())
    assert info.value.kind is ErrorKind.UNREACHABLE
    assert "cannot be reached" in error_message(info.value, None, "en-US")


async def test_cancel_stops_a_stalled_stream(server: HFTestServer, backend: HFBackend) -> None:
    server.stall(after_chunks=1)
    ctx = RunContext()
    ctx.report = lambda p: ctx.cancel.cancel()
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "chat", timeout=60), Request(task="chat", prompt="a b c"), ctx)
    assert info.value.kind is ErrorKind.CANCELLED


# ---- deadlines ------------------------------------------------------------------------------------------------


async def test_retry_after_past_the_entry_timeout_is_raised_not_slept(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.rate_limited(retry_after=100)
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "chat", timeout=5), Request(task="chat", prompt="p"), RunContext())
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.retry_after == 100
    assert fake_time.sleeps == []
    assert "100 s" in error_message(info.value, None, "en-US")


async def test_loading_past_the_context_deadline_is_raised_not_slept(
    server: HFTestServer, backend: HFBackend, fake_time: FakeTime
) -> None:
    server.loading(estimated_time=20)
    ctx = RunContext(deadline=time.monotonic() + 10)
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "text-to-image", timeout=300), Request(task="text-to-image", prompt="p"),
                          ctx)
    assert info.value.kind is ErrorKind.LOADING and info.value.retry_after == 20
    assert fake_time.sleeps == []


async def test_retries_stop_at_the_deadline(server: HFTestServer, fake_time: FakeTime) -> None:
    backend = HFBackend(backoff_base=2.0, backoff_cap=2.0, max_attempts=100, sleep=fake_time.sleep, clock=fake_time,
                        rng=random.Random(1))
    server.fail_next(503, body={"error": "overloaded"}, times=None)
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "image-to-text", timeout=10), Request(task="image-to-text", image=png()),
                          RunContext())
    assert info.value.kind is ErrorKind.BUSY
    assert sum(fake_time.sleeps) <= 10
    assert info.value.retry_after is not None


# ---- keys -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["chat", "text-to-image", "speech-to-text"])
async def test_no_implicit_hf_token_goes_to_a_url(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_ambientsecret0123456789")
    request = Request(task=task, prompt="p", audio=tone(0.1))
    await backend.run(make_entry(server, task), request, RunContext())
    assert server.last.authorization is None
    assert "hf_ambientsecret" not in repr(server.last.headers)


async def test_the_entrys_own_key_is_sent(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_ambientsecret0123456789")
    monkeypatch.setenv("ENDPOINT_KEY", "endpoint-key-abc")
    for task in ("chat", "image-classification"):
        await backend.run(make_entry(server, task, api_key_env="ENDPOINT_KEY"),
                          Request(task=task, prompt="p", image=png()), RunContext())
        assert server.last.authorization == "Bearer endpoint-key-abc"


async def test_keys_never_appear_in_errors(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_KEY", "endpoint-key-abc")
    server.fail_next(401, body={"error": "invalid token endpoint-key-abc (also tried hf_abcdefghijkl)"})
    server.bad_request("Bearer endpoint-key-abc is not allowed to send: endpoint-key-abc", path="/chat")
    for task in ("text-to-image", "chat"):
        with pytest.raises(BackendError) as info:
            await backend.run(make_entry(server, task, api_key_env="ENDPOINT_KEY"), Request(task=task, prompt="p"),
                              RunContext())
        err = info.value
        for text in (str(err), err.detail, error_message(err, None, "en-US"), repr(err.args)):
            assert "endpoint-key-abc" not in text
            assert "hf_abcdefghijkl" not in text


async def test_hub_id_without_key_is_refused_before_any_request(backend: HFBackend) -> None:
    entry = ModelEntry(name="flux", task="text-to-image", backend="hf", model="acme/flux", api_key_env="HF_TOKEN")
    with pytest.raises(BackendError) as info:
        await backend.run(entry, Request(task="text-to-image", prompt="p"), RunContext())
    assert info.value.kind is ErrorKind.AUTH
    assert "HF_TOKEN" in info.value.detail


# ---- check() --------------------------------------------------------------------------------------------------


async def test_check(server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = ModelEntry(name="flux", task="text-to-image", backend="hf", model="acme/flux", api_key_env="HF_TOKEN")
    ok, why = await backend.check(hub)
    assert not ok and "HF_TOKEN" in why
    monkeypatch.setenv("HF_TOKEN", "hf_x0123456789")
    assert (await backend.check(hub))[0]

    assert (await backend.check(make_entry(server, "text-to-image")))[0]
    ok, why = await backend.check(ModelEntry(name="down", task="chat", backend="hf", model=server.refused_url))
    assert not ok and "cannot reach" in why
    ok, why = await backend.check(make_entry(server, "chat", api_key_env="MISSING_KEY_VAR"))
    assert not ok and "MISSING_KEY_VAR" in why


# ---- classify, directly ---------------------------------------------------------------------------------------


def test_classify_plain_exceptions() -> None:
    import httpx2
    from huggingface_hub.errors import InferenceTimeoutError, OverloadedError
    from PIL import UnidentifiedImageError

    cases = [
        (ValueError("Task 'text-to-video' not supported for provider 'hf-inference'."), ErrorKind.UNSUPPORTED),
        (TimeoutError(), ErrorKind.TIMEOUT),
        (InferenceTimeoutError("Inference call timed out"), ErrorKind.TIMEOUT),
        (httpx2.ReadTimeout("stalled"), ErrorKind.TIMEOUT),
        (httpx2.ConnectError("refused"), ErrorKind.UNREACHABLE),
        (UnidentifiedImageError("cannot identify image file"), ErrorKind.INTERNAL),
        (OverloadedError("overloaded"), ErrorKind.BUSY),
        (RuntimeError("boom"), ErrorKind.INTERNAL),
    ]
    for exc, kind in cases:
        assert classify(exc).kind is kind, exc
    err = BackendError(ErrorKind.AUTH, "x")
    assert classify(err) is err


def test_parse_retry_after() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 60, usegmt=True), now=now) == pytest.approx(60, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0


async def test_hub_id_chat_with_an_hf_token_goes_to_the_router_as_model_colon_provider(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an HF token the router resolves `model:provider` itself: no Hub lookup of the provider mapping (which
    would fail here: the Hub is unreachable), and the request names the model as the catalog entry does."""
    from huggingface_hub.inference._providers import _common

    monkeypatch.setattr(_common.AutoRouterConversationalTask, "_prepare_base_url", lambda self, api_key: server.url)

    def no_lookup(model: str) -> None:
        raise AssertionError(f"looked up the provider mapping of {model}")

    monkeypatch.setattr(_common, "_fetch_inference_provider_mapping", no_lookup)
    monkeypatch.setenv("TEST_HF_KEY", "hf_testkeyforchat1234")
    entry = ModelEntry(name="c", task="chat", backend="hf", model="acme/chat-7b", provider="together",
                       api_key_env="TEST_HF_KEY")
    result = await backend.run(entry, Request(task="chat", prompt="yo"), RunContext())
    assert result.text == "You said: yo"
    assert server.last.path == "/v1/chat/completions"
    assert server.last.json["model"] == "acme/chat-7b:together"
    assert server.last.authorization == "Bearer hf_testkeyforchat1234"


async def test_hub_id_chat_with_a_providers_own_key_goes_to_the_provider_by_its_id(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub.hf_api import InferenceProviderMapping
    from huggingface_hub.inference._providers import PROVIDERS, _common

    monkeypatch.setattr(PROVIDERS["together"]["conversational"], "base_url", server.url)
    mapping = InferenceProviderMapping(
        provider="together", hf_model_id="acme/chat-7b", providerId="acme-ai/Chat-7B", status="live",
        task="conversational",
    )
    monkeypatch.setitem(_common.HARDCODED_MODEL_INFERENCE_MAPPING, "together", {"acme/chat-7b": mapping})
    monkeypatch.setenv("TEST_TOGETHER_KEY", "tgp_testkeyforchat1234")
    entry = ModelEntry(name="c", task="chat", backend="hf", model="acme/chat-7b", provider="together",
                       api_key_env="TEST_TOGETHER_KEY")
    result = await backend.run(entry, Request(task="chat", prompt="yo"), RunContext())
    assert result.text == "You said: yo"
    assert server.last.path == "/v1/chat/completions"
    assert server.last.json["model"] == "acme-ai/Chat-7B"
    assert server.last.authorization == "Bearer tgp_testkeyforchat1234"


async def test_key_echoed_by_the_server_leaves_no_traceback_behind(
    server: HFTestServer, backend: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENDPOINT_KEY", "endpoint-key-abc")
    server.bad_request("your key endpoint-key-abc is invalid")
    with pytest.raises(BackendError) as info:
        await backend.run(make_entry(server, "image-to-text", api_key_env="ENDPOINT_KEY"),
                          Request(task="image-to-text", image=png()), RunContext())
    assert info.value.__cause__ is None
    assert "endpoint-key-abc" not in "".join(traceback.format_exception(info.value))


async def test_hosted_calls_share_kept_alive_connections(server: HFTestServer, backend: HFBackend) -> None:
    """One job after another reuses the connection the first opened (no new TCP and TLS handshake per job); a
    closed session is replaced by a new one on the next call."""
    from models.backends.http import close_kept_session

    entry = make_entry(server, "text-to-image")
    for prompt in ("a cat", "a dog", "a fox"):
        await backend.run(entry, Request(task="text-to-image", prompt=prompt), RunContext())
    await backend.run(make_entry(server, "chat"), Request(task="chat", prompt="yo"), RunContext())
    peers = [r.peer for r in server.requests]
    assert len(peers) == 4 and len(set(peers)) == 1, peers
    await close_kept_session()
    await backend.run(entry, Request(task="text-to-image", prompt="an owl"), RunContext())
    assert server.requests[-1].peer != peers[0]


async def test_the_kept_session_keeps_no_cookies_between_calls() -> None:
    """A cookie one server's answer sets (to one guild's key) is never sent with a later call."""
    from aiohttp import web

    from models.backends.http import close_kept_session, kept_session

    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("session", "guild-a-secret")
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    try:
        for hooks in (True, False):
            async with kept_session(hub_hooks=hooks) as client:  # leaving the block keeps it open
                assert (await client.get(url)).status_code == 200
            assert not client.is_closed
            assert (await kept_session(hub_hooks=hooks).get(url)).status_code == 200
        assert seen == [None, None, None, None]
    finally:
        await close_kept_session()
        await runner.cleanup()
    assert client.is_closed
