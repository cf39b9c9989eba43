"""What the `hf` and `openai` backends share: `classify` (every HTTP failure becomes one `BackendError`),
`Retrying` (backoff, Retry-After, deadlines, cancellation), `RetryingBackend` with its reachability `probe`,
`inference_client` (a huggingface_hub client that never sends a key the entry did not name, over one shared TLS
context), and the chat and media helpers both speak.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import json
import logging
import random
import re
import socket
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from models.base import (
    AudioResult,
    Backend,
    ImageResult,
    Request,
    RunContext,
    collect_text,
)
from models.errors import BackendError, ErrorKind
from models.media import AUDIO_FORMATS, IMAGE_FORMATS, MIME_TYPES, detect_format

if TYPE_CHECKING:
    from huggingface_hub import AsyncInferenceClient

    from models.catalog import ModelEntry

log = logging.getLogger(__name__)
T = TypeVar("T")

_REFUSAL = re.compile(
    r"nsfw|safety|content[ _-]?(policy|filter|moderation)|moderation|flagged|inappropriate|prohibited",
    re.IGNORECASE,
)
_SECRET = re.compile(r"(hf_[A-Za-z0-9]{6,}|sk-[A-Za-z0-9_\-]{6,}|Bearer\s+\S+)")
_UNSUPPORTED = re.compile(
    r"not supported (for|by) provider|not supported for task|cannot select auto-router|provider '.*' not supported",
    re.IGNORECASE,
)
_CHAT_KWARGS = (
    "max_tokens", "temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty",
    "response_format", "logprobs", "top_logprobs", "n",
)


# ---- classification -------------------------------------------------------------------------------------------


def scrub(text: str, *secrets: str | None) -> str:
    """Remove keys from text meant for logs or users: the given secrets, and anything shaped like a key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET.sub("***", text)


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _http_info(exc: BaseException) -> tuple[int, str, Any, Any] | None:
    """(status, server's reason, headers, JSON body) for an HTTP failure, else None."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if response is None or not isinstance(status, int):
        return None
    body: Any = None
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - unread stream, not JSON, ...: the reason comes from elsewhere
        body = None
    reason = getattr(exc, "server_message", None) or ""
    if not reason and isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        elif isinstance(err, list):
            err = "; ".join(str(e.get("msg", e) if isinstance(e, dict) else e) for e in err)
        reason = str(err or "")
    if not reason:
        try:
            text = response.text
        except Exception:  # noqa: BLE001 - an unread stream has no text
            text = ""
        if text and "<html" not in text[:200].lower():
            reason = text
    return status, _short(reason), response.headers, body


def _classify_status(status: int, reason: str, headers: Any, body: Any) -> BackendError:
    retry_after = parse_retry_after(headers.get("retry-after") if headers is not None else None)
    estimate = body.get("estimated_time") if isinstance(body, dict) else None
    if status == 429:
        return BackendError(ErrorKind.RATE_LIMITED, reason, retry_after=retry_after, status=status)
    if status == 503 and (isinstance(estimate, (int, float)) or "loading" in reason.lower()):
        wait = float(estimate) if isinstance(estimate, (int, float)) else retry_after
        return BackendError(ErrorKind.LOADING, reason, retry_after=wait, status=status)
    if status in (401, 403):
        return BackendError(ErrorKind.AUTH, reason, status=status)
    if status == 404:
        return BackendError(ErrorKind.NOT_FOUND, reason, status=status)
    if 400 <= status < 500:
        kind = ErrorKind.REFUSED if _REFUSAL.search(reason) else ErrorKind.BAD_REQUEST
        return BackendError(kind, reason, status=status)
    if status >= 500:
        return BackendError(ErrorKind.BUSY, reason, retry_after=retry_after, status=status)
    return BackendError(ErrorKind.INTERNAL, f"unexpected HTTP {status}: {reason}", status=status)


def classify(exc: BaseException) -> BackendError:
    """Turn any failure of a remote call into one classified `BackendError` (keys scrubbed from the detail)."""
    err = _classify(exc)
    if err is not exc:
        err.__cause__ = exc
    clean = scrub(err.detail)
    if clean != err.detail:
        err = _with(err, detail=clean)
    return err


def _classify(exc: BaseException) -> BackendError:
    import httpx2
    from huggingface_hub import errors as hf_errors

    if isinstance(exc, BackendError):
        return exc
    info = _http_info(exc)
    if info is not None:
        return _classify_status(*info)
    text = _short(str(exc))
    if isinstance(exc, hf_errors.TextGenerationError):  # TGI errors, also sent inside a stream
        if isinstance(exc, hf_errors.OverloadedError):
            return BackendError(ErrorKind.BUSY, text)
        if isinstance(exc, hf_errors.ValidationError):
            kind = ErrorKind.REFUSED if _REFUSAL.search(text) else ErrorKind.BAD_REQUEST
            return BackendError(kind, text)
        return BackendError(ErrorKind.INTERNAL, f"generation failed: {text}")
    # A connect timeout means the server never answered the phone, which is reachability, not slowness.
    cause = exc.__cause__ if isinstance(exc, hf_errors.InferenceTimeoutError) else exc
    if isinstance(cause, (httpx2.ConnectTimeout, httpx2.ConnectError, httpx2.UnsupportedProtocol, httpx2.ProxyError)):
        return BackendError(ErrorKind.UNREACHABLE, f"cannot connect: {_short(str(cause)) or type(cause).__name__}")
    if isinstance(exc, (hf_errors.InferenceTimeoutError, httpx2.TimeoutException, asyncio.TimeoutError, TimeoutError)):
        return BackendError(ErrorKind.TIMEOUT, text or "timed out")
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror, ssl.SSLError)):
        return BackendError(ErrorKind.UNREACHABLE, f"cannot connect: {text}")
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError, httpx2.NetworkError)):
        return BackendError(ErrorKind.BUSY, f"the server dropped the connection: {text or type(exc).__name__}")
    if _is_malformed(exc):
        return BackendError(ErrorKind.INTERNAL, f"malformed answer ({type(exc).__name__}): {text}")
    if isinstance(exc, ValueError) and _UNSUPPORTED.search(text):
        return BackendError(ErrorKind.UNSUPPORTED, text)
    if isinstance(exc, ValueError) and "api_key" in text:
        return BackendError(ErrorKind.AUTH, text)
    return BackendError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {text}")


def _is_malformed(exc: BaseException) -> bool:
    import httpx2

    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, httpx2.DecodingError, KeyError, TypeError)):
        return True
    try:
        from PIL import UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(exc, UnidentifiedImageError)


def _with(err: BackendError, **changes: Any) -> BackendError:
    """A copy of `err` with some fields changed (the message is built from the detail, so rebuild it)."""
    fields = {
        "detail": err.detail, "retry_after": err.retry_after, "status": err.status, "model": err.model, **changes
    }
    new = BackendError(err.kind, fields.pop("detail"), **fields)
    new.__cause__ = err.__cause__
    return new


# ---- retries, deadlines, cancellation --------------------------------------------------------------------------


@dataclass
class Retrying:
    """Retries with exponential backoff and full jitter, bounded by a deadline; sleep and clock are injectable.

    429 and 5xx wait Retry-After when the server gives one, else back off; 503-loading waits the server's
    estimate, at most `loading_cap`. A wait that would end past the deadline is not slept: the error is raised
    with `retry_after` instead. Nothing else is retried.
    """

    base: float = 1.0
    cap: float = 30.0
    loading_cap: float = 120.0
    max_attempts: int = 6
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    poll: float = 0.05  # how often a running call checks ctx.cancel

    def deadline(self, entry: ModelEntry, ctx: RunContext) -> float:
        """The task's deadline on `clock`: entry.timeout, or sooner if the context says so."""
        budget = float(entry.timeout)
        remaining = ctx.remaining()
        if remaining is not None:
            budget = min(budget, remaining)
        return self.clock() + budget

    def backoff(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.cap, self.base * (2**attempt)))

    def wait_for(self, err: BackendError, attempt: int) -> float:
        if err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.BUSY) and err.retry_after is not None:
            return err.retry_after
        if err.kind is ErrorKind.LOADING and err.retry_after is not None:
            return min(err.retry_after, self.loading_cap)
        return self.backoff(attempt)

    async def run(
        self,
        attempt: Callable[[float], Coroutine[Any, Any, T]],
        *,
        ctx: RunContext,
        deadline: float,
        model: str | None = None,
        secrets: tuple[str | None, ...] = (),
        retry_ok: Callable[[], bool] = lambda: True,
    ) -> T:
        """Await `attempt(seconds_left)` until it succeeds, fails for good, or the deadline comes."""
        tries = 0
        while True:
            ctx.cancel.raise_if_cancelled()
            left = deadline - self.clock()
            if left <= 0:
                raise BackendError(ErrorKind.TIMEOUT, "the deadline passed before the call", model=model)
            try:
                return await self.guard(attempt(left), ctx, deadline)
            except Exception as exc:  # noqa: BLE001 - every failure is classified, once
                err = classify(exc)
                leaky = scrub(str(exc), *secrets) != str(exc)
            err = _with(err, detail=scrub(err.detail, *secrets), model=err.model or model)
            if leaky:
                err.__cause__ = None  # a traceback of the original would print the key in a log
            tries += 1
            if not err.retryable or not retry_ok() or tries >= self.max_attempts:
                raise err
            wait = self.wait_for(err, tries - 1)
            if self.clock() + wait > deadline:
                raise _with(err, retry_after=err.retry_after if err.retry_after is not None else wait)
            log.info("retrying %s in %.1f s after %s", model, wait, err.kind.value)
            await self.guard(self.sleep(wait), ctx, None)

    async def guard(self, coro: Awaitable[T], ctx: RunContext, deadline: float | None) -> T:
        """Run `coro`, stopping it when ctx.cancel is set (CANCELLED) or the deadline passes (TIMEOUT)."""
        task = asyncio.ensure_future(coro)
        try:
            while True:
                step = self.poll
                if deadline is not None:
                    left = deadline - self.clock()
                    if left <= 0:
                        raise BackendError(ErrorKind.TIMEOUT, "no answer before the deadline")
                    step = min(step, left)
                done, _ = await asyncio.wait({task}, timeout=step)
                if done:
                    return task.result()
                ctx.cancel.raise_if_cancelled()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})


# ---- client, inputs, outputs ----------------------------------------------------------------------------------


def is_url(model: str) -> bool:
    return model.startswith(("http://", "https://"))


_SESSIONS_INSTALLED = False
_TLS_CONTEXT: Any = None


def tls_context() -> Any:
    """The one TLS context every hosted call verifies with (an `ssl.SSLContext`, made once): each new httpx2 client
    would otherwise load the certificate bundle again, 15-40 ms of the event loop's time."""
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        import httpx2

        _TLS_CONTEXT = httpx2.create_ssl_context()
    return _TLS_CONTEXT


def install_kept_sessions() -> None:
    """Make every AsyncInferenceClient send through its event loop's kept-alive session (`kept_session`).

    The client opens a fresh httpx2.AsyncClient per call, and closes it after: every hosted request paid a new
    connection (and a TLS handshake), and each client loaded the certificate bundle again (15-40 ms of the event
    loop's time). huggingface_hub's documented `set_async_client_factory` lets us hand it the loop's one session
    instead; its requests still carry their own headers and timeout.
    """
    global _SESSIONS_INSTALLED
    if _SESSIONS_INSTALLED:
        return
    from huggingface_hub.utils import set_async_client_factory

    set_async_client_factory(kept_session)
    _SESSIONS_INSTALLED = True


_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[bool, Any]] = weakref.WeakKeyDictionary()


def kept_session(hub_hooks: bool = True) -> Any:
    """The running event loop's one httpx2.AsyncClient for hosted calls: connections are kept alive between jobs
    (a pool per host, idle ones dropped after 5 s), and leaving an `async with` on it does not close it; the
    backends close it in `aclose` (`close_kept_session`). Outside a running loop, a fresh client of the same kind.
    `hub_hooks`: with huggingface_hub's event hooks (a request id, HF_HUB_OFFLINE honoured), as its own clients
    have; the OpenAI-compatible backend's plain requests go without.

    Nothing of one request carries over to another's: every call sets its own Authorization header, and the
    cookie jar refuses every cookie, so a session cookie one server's key earned never rides on another's call.
    """
    import httpx2

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _new_session(httpx2, kept=False, hub_hooks=hub_hooks)
    sessions = _SESSIONS.setdefault(loop, {})
    session = sessions.get(hub_hooks)
    if session is None or session.is_closed:
        session = sessions[hub_hooks] = _new_session(httpx2, kept=True, hub_hooks=hub_hooks)
    return session


_KEPT_CLASS: Any = None


def _kept_class(httpx2: Any) -> Any:
    """An httpx2.AsyncClient that an `async with` neither opens nor closes (made once: httpx2 loads lazily)."""
    global _KEPT_CLASS
    if _KEPT_CLASS is None:
        class KeptSession(httpx2.AsyncClient):
            async def __aenter__(self) -> Any:
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

        _KEPT_CLASS = KeptSession
    return _KEPT_CLASS


def _new_session(httpx2: Any, *, kept: bool, hub_hooks: bool) -> Any:
    from http.cookiejar import CookieJar, DefaultCookiePolicy

    hooks: dict[str, list[Callable[..., Any]]] = {}
    if hub_hooks:
        from huggingface_hub.utils import _http

        hooks = {"request": [_http.async_hf_request_event_hook], "response": [_http.async_hf_response_event_hook]}
    # Every job of a busy server may call at once: no cap on open connections beyond what the queue allows.
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=32, keepalive_expiry=5.0)
    cls = _kept_class(httpx2) if kept else httpx2.AsyncClient
    return cls(event_hooks=hooks, follow_redirects=True, timeout=None, verify=tls_context(), limits=limits,
               cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


async def close_kept_session() -> None:
    """Close the running loop's kept-alive sessions, if it has any (the next call opens new ones)."""
    for session in _SESSIONS.pop(asyncio.get_running_loop(), {}).values():
        await session.aclose()


_AGENT_READY = False


async def hub_headers_ready() -> None:
    """Let huggingface_hub work out its User-Agent once, in a thread, before any request of ours builds it.

    Its `detect_agent` (huggingface_hub 2.4) fetches a registry from the Hub with a blocking GET the first time it
    runs in a process (a timeout of 3 s, again after 24 h unless cached on disk), and every request's headers
    call it: the first hosted call after a start would freeze the event loop, and with it every acknowledgement,
    for as long as the Hub takes to answer or to fail.
    """
    global _AGENT_READY
    if _AGENT_READY:
        return
    from huggingface_hub.utils import detect_agent

    await asyncio.to_thread(detect_agent)
    _AGENT_READY = True


def inference_client(
    *,
    model: str | None = None,
    base_url: str | None = None,
    provider: str | None = None,
    api_key: str | None,
    timeout: float | None,
) -> AsyncInferenceClient:
    """An AsyncInferenceClient that sends `api_key` and nothing else.

    Given no key, the client would fall back to HF_TOKEN or the cached login for ANY URL (hf-inference treats
    every falsy key so, and `token=False` is refused). A header set to None overrides the Authorization header
    it builds and is then dropped, so no Authorization goes out at all.
    """
    from huggingface_hub import AsyncInferenceClient

    headers: dict[str, Any] = {} if api_key else {"authorization": None}
    return AsyncInferenceClient(
        model=model, base_url=base_url, api_key=api_key or None, timeout=timeout,
        provider=provider,  # type: ignore[arg-type]  # the catalog's name; huggingface_hub checks it
        headers=headers,
    )


def merged_params(entry: ModelEntry, request: Request) -> dict[str, Any]:
    return {**entry.params, **request.params}


def data_url(data: bytes) -> str:
    """A data: URL for an image, its MIME type sniffed from the bytes."""
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode()}"


def image_mime(data: bytes) -> str:
    fmt = detect_format(data)
    return MIME_TYPES[fmt] if fmt in IMAGE_FORMATS else "application/octet-stream"


def chat_messages(request: Request) -> list[dict[str, Any]]:
    """The request's messages (OpenAI shape, image parts passed through), with `request.image` attached."""
    messages = [dict(m) for m in request.messages] if request.messages else []
    if not messages:
        messages = [{"role": "user", "content": request.prompt}]
    if request.image is not None:
        last = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        if last is None:
            last = {"role": "user", "content": request.prompt}
            messages.append(last)
        content = last.get("content")
        parts = list(content) if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        parts.append({"type": "image_url", "image_url": {"url": data_url(request.image)}})
        last["content"] = parts
    return messages


def chat_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Split chat parameters into the client's named arguments and an extra_body for the rest."""
    kwargs = {k: params[k] for k in _CHAT_KWARGS if k in params}
    if "max_new_tokens" in params and "max_tokens" not in kwargs:
        kwargs["max_tokens"] = params["max_new_tokens"]
    extra = {k: v for k, v in params.items() if k not in _CHAT_KWARGS and k != "max_new_tokens"}
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


async def stream_chat_text(
    client: AsyncInferenceClient, messages: list[dict[str, Any]], kwargs: dict[str, Any], ctx: RunContext,
    started: list[bool],
) -> str:
    """Stream a chat completion, reporting the text so far; `started[0]` turns True at the first token."""

    async def pieces() -> AsyncIterator[str]:
        stream = await client.chat_completion(messages, stream=True, **kwargs)
        async for chunk in stream:
            if not chunk.choices:
                continue
            piece = chunk.choices[0].delta.content
            if piece:
                started[0] = True
                yield piece

    return await collect_text(pieces(), ctx)


def png_result(image: Any) -> ImageResult:
    """A PIL image as PNG bytes with its size."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return ImageResult(data=out.getvalue(), format="png", width=image.width, height=image.height)


def audio_format(data: bytes) -> str | None:
    """The container of audio bytes, from their magic numbers (MP4 audio is reported as m4a)."""
    fmt = detect_format(data)
    if fmt not in AUDIO_FORMATS:
        return None
    return "m4a" if fmt == "mp4" else fmt


def audio_result(data: bytes) -> AudioResult:
    """Audio bytes with their format, and duration and sample rate where soundfile can read them."""
    fmt = audio_format(data)
    if fmt is None:
        raise BackendError(ErrorKind.INTERNAL, f"malformed answer: {len(data)} bytes that are not audio")
    duration = sample_rate = None
    try:
        import soundfile

        info = soundfile.info(io.BytesIO(data))
        duration, sample_rate = float(info.duration), int(info.samplerate)
    except Exception as exc:  # noqa: BLE001 - some containers (m4a, some mp3) are beyond libsndfile
        log.debug("no duration for %s audio: %s", fmt, exc)
    return AudioResult(data=data, format=fmt, duration=duration, sample_rate=sample_rate)


def video_format(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def split_params(params: dict[str, Any], names: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    named = {k: params[k] for k in names if k in params}
    return named, {k: v for k, v in params.items() if k not in names}


# ---- the shared base ------------------------------------------------------------------------------------------


class RetryingBackend(Backend):
    """What the hf and openai backends share: retries with backoff, a reachability probe, one TLS context."""

    def __init__(
        self,
        *,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        loading_cap: float = 120.0,
        max_attempts: int = 6,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        probe_timeout: float = 2.0,
    ) -> None:
        install_kept_sessions()
        self.retrying = Retrying(
            base=backoff_base, cap=backoff_cap, loading_cap=loading_cap, max_attempts=max_attempts, sleep=sleep,
            clock=clock, rng=rng or random.Random(),
        )
        self.probe_timeout = probe_timeout

    async def aclose(self) -> None:
        await close_kept_session()


async def probe(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        return False, f"cannot reach {parsed.scheme}://{host}:{port} ({type(exc).__name__})"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True, f"reachable at {parsed.scheme}://{host}:{port}"
