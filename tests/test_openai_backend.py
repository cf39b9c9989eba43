"""OpenAIBackend against a real `transformers serve` process serving a tiny model built here, and against the
tests' own server (tests/hf_server.py) for what `transformers serve` does not offer (images, speech,
transcription) and for recording exactly what was sent.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from models.backends.openai_compat import OpenAIBackend
from models.base import Progress, Request, RunContext
from models.catalog import ModelEntry
from models.errors import BackendError, ErrorKind
from tests.hf_server import HFTestServer, tone
from tests.tiny_models import build_tiny_causal_lm


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _transformers_cli() -> str:
    exe = Path(sys.executable).with_name("transformers")
    return str(exe) if exe.exists() else (shutil.which("transformers") or "transformers")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL …/v1, served model name): `transformers serve <folder>` on 127.0.0.1, torn down after."""
    folder = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm") / "model")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("wb")
    # A local folder as FORCE_MODEL loads offline: serve keeps an existing path as is (no hub lookup).
    proc = subprocess.Popen(
        [_transformers_cli(), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not come up; see {log.name}")
            time.sleep(0.25)
        yield base, folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
async def server():
    async with HFTestServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def backend() -> OpenAIBackend:
    async def no_sleep(seconds: float) -> None:
        return None

    return OpenAIBackend(backoff_base=0.01, backoff_cap=0.02, sleep=no_sleep, rng=random.Random(0))


def entry(url: str, model: str, task: str = "chat", **kw) -> ModelEntry:
    return ModelEntry(name=f"oa-{task}", task=task, backend="openai", model=model, url=url, **kw)


# ---- against transformers serve -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_streamed_chat_with_transformers_serve(served: tuple[str, str]) -> None:
    url, model = served
    reports: list[Progress] = []
    e = entry(url, model, params={"max_tokens": 8})
    result = await backend().run(e, Request(task="chat", prompt="Hello there"), RunContext(report=reports.append))
    texts = [p.text for p in reports if p.text is not None]
    assert result.text
    assert texts and texts[-1] == result.text
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert result.meta["backend"] == "openai"

    # The server is pinned to its model and rejects any other name: the name above was really passed.
    with pytest.raises(BackendError) as info:
        await backend().run(entry(url, "not/the-model"), Request(task="chat", prompt="Hi"), RunContext())
    assert info.value.kind is ErrorKind.BAD_REQUEST and "pinned" in info.value.detail


@pytest.mark.slow
async def test_check_with_transformers_serve(served: tuple[str, str], server: HFTestServer) -> None:
    url, model = served
    ok, why = await backend().check(entry(url, model))
    assert ok, why
    ok, why = await backend().check(entry(url, "some/other-model"))
    assert not ok and "does not serve" in why
    ok, why = await backend().check(entry(server.refused_url + "/v1", model))
    assert not ok and "cannot reach" in why


# ---- against the tests' own server: what was sent, and the other tasks ----------------------------------------


async def test_chat_sends_the_served_model_name_and_no_implicit_token(
    server: HFTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_ambientsecret0123456789")
    reports: list[Progress] = []
    result = await backend().run(entry(server.openai_url, "llama3:8b"), Request(task="chat", prompt="hi you"),
                                 RunContext(report=reports.append))
    assert result.text == "You said: hi you"
    assert len(reports) == 4  # "You", " said:", " hi", " you"
    assert server.last.path == "/v1/chat/completions"
    assert server.last.json["model"] == "llama3:8b"
    assert server.last.authorization is None


async def test_key_sent_and_retries(server: HFTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OA_KEY", "sk-test-abcdef123456")
    server.rate_limited(retry_after=0)
    server.fail_next(500)
    result = await backend().run(entry(server.openai_url, "m", api_key_env="OA_KEY"), Request(task="chat", prompt="x"),
                                 RunContext())
    assert result.text == "You said: x"
    assert [r.authorization for r in server.requests] == ["Bearer sk-test-abcdef123456"] * 3


async def test_images(server: HFTestServer) -> None:
    e = entry(server.openai_url, "dall-e-3", "text-to-image")
    result = await backend().run(e, Request(task="text-to-image", prompt="a boat", params={"width": 40, "height": 30}),
                                 RunContext())
    assert Image.open(io.BytesIO(result.data)).size == (40, 30)
    assert (result.width, result.height, result.format) == (40, 30, "png")
    assert server.last.path == "/v1/images/generations"
    assert server.last.json["size"] == "40x30" and server.last.json["response_format"] == "b64_json"


async def test_speech_and_transcription(server: HFTestServer) -> None:
    speech = entry(server.openai_url, "tts-1", "text-to-speech", voices=["alloy"], params={"duration": 0.5})
    audio = await backend().run(speech, Request(task="text-to-speech", prompt="hello"), RunContext())
    assert audio.format == "wav" and audio.duration == pytest.approx(0.5, abs=0.01)
    assert server.last.json["voice"] == "alloy" and server.last.json["model"] == "tts-1"

    stt = entry(server.openai_url, "whisper-1", "speech-to-text")
    text = await backend().run(stt, Request(task="speech-to-text", audio=tone(0.25)), RunContext())
    assert text.text == "heard 0.25 seconds of audio at 16000 Hz"
    assert server.last.path == "/v1/audio/transcriptions"


async def test_bad_request_and_unreachable(server: HFTestServer) -> None:
    server.bad_request("model 'nope' not found, try pulling it first")
    with pytest.raises(BackendError) as info:
        await backend().run(entry(server.openai_url, "nope", "text-to-image"),
                            Request(task="text-to-image", prompt="p"), RunContext())
    assert info.value.kind is ErrorKind.BAD_REQUEST and "try pulling it" in info.value.detail
    assert len(server.requests) == 1
    with pytest.raises(BackendError) as info:
        await backend().run(entry(server.refused_url + "/v1", "m"), Request(task="chat", prompt="p"), RunContext())
    assert info.value.kind is ErrorKind.UNREACHABLE


async def test_unsupported_tasks(server: HFTestServer) -> None:
    with pytest.raises(BackendError) as info:
        await backend().run(entry(server.openai_url, "m", "text-to-video"), Request(task="text-to-video"),
                            RunContext())
    assert info.value.kind is ErrorKind.UNSUPPORTED


async def test_check_lists_models(server: HFTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await backend().check(entry(server.openai_url, server.model_name)))[0]
    ok, why = await backend().check(entry(server.openai_url, "absent"))
    assert not ok and server.model_name in why
    ok, why = await backend().check(entry(server.openai_url, server.model_name, api_key_env="OA_MISSING"))
    assert not ok and "OA_MISSING" in why


async def test_calls_verify_with_one_tls_context_and_never_load_the_certificates_again(
        server: HFTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new HTTP client would load the certificate bundle again: 15-40 ms on the event loop per call."""
    import ssl

    b = backend()
    b_entry = entry(server.openai_url, "dall-e-3", "text-to-image")
    chat = entry(server.openai_url, "gpt-test")
    await b.run(b_entry, Request(task="text-to-image", prompt="warm"), RunContext())  # the one context is made
    await b.run(chat, Request(task="chat", prompt="warm"), RunContext())  # and huggingface_hub's own, once
    loads: list[object] = []
    original = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    for _ in range(3):
        await b.run(b_entry, Request(task="text-to-image", prompt="a boat"), RunContext())
        await b.run(chat, Request(task="chat", prompt="hi"), RunContext())
        await b.check(b_entry)
    assert loads == []


async def test_huggingface_hub_s_first_user_agent_lookup_runs_off_the_event_loop(
        server: HFTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub 2.4 fetches an agent registry from the Hub (a blocking GET, 3 s timeout) the first time it
    builds a User-Agent; on the loop that would freeze every acknowledgement until the Hub answers."""
    import asyncio

    from huggingface_hub.utils import _detect_agent

    from models.backends import http

    where: list[bool] = []

    def slow_fetch() -> None:
        where.append(asyncio._get_running_loop() is not None)  # True: it ran on the event loop
        time.sleep(0.3)  # a slow Hub
        return None

    monkeypatch.setattr(_detect_agent, "_registry", None)
    monkeypatch.setattr(_detect_agent, "_read_cached_registry", lambda path, max_age: None)
    monkeypatch.setattr(_detect_agent, "_fetch_registry", slow_fetch)
    monkeypatch.setattr(http, "_AGENT_READY", False)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await backend().run(entry(server.openai_url, "gpt-test"), Request(task="chat", prompt="hi"), RunContext())
    finally:
        ticker.cancel()
    assert where == [False] and ticks >= 10  # fetched once, in a thread, while the loop went on
