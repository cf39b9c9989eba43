"""A Hugging Face-compatible inference server of the tests' own, with real outputs and every failure on demand.

It answers the way a dedicated Inference Endpoint (or TGI / an OpenAI-compatible server) answers
`huggingface_hub.AsyncInferenceClient` when `model=` is a URL:

- chat: `POST …/v1/chat/completions` (or `…/chat/completions`), OpenAI shape, streamed as server-sent events
  token by token when `"stream": true`;
- every other task: `POST {server.endpoint(task)}` with `{"inputs": ..., "parameters": {...}}` as JSON, or the
  raw input bytes when there are no parameters. The task is the last segment of the path, so
  `server.endpoint("text-to-image")` is `http://127.0.0.1:PORT/text-to-image`; anything before it is ignored.

Outputs decode: PNGs drawn with Pillow (`width`/`height`, default 1024x1024; seeded by `seed`, else by the
prompt), WAV sine tones of the requested length (parameter `duration`, `seconds` or `audio_length_in_s`, default
1.0 s; `"format": "flac" | "ogg"` in parameters switches container), MP4s encoded
with PyAV, captions, transcriptions that state the audio's length, classification labels (deliberately not
sorted by score).

Usage::

    async with HFTestServer() as server:
        entry = ModelEntry(name="img", task="text-to-image", backend="hf", model=server.endpoint("text-to-image"))
        server.fail_next(503, body={"error": "Model is loading", "estimated_time": 3.0})
        ...
        assert server.requests[-1].headers.get("authorization") is None

Chat also answers at the bare `server.url` (the client appends `/v1/chat/completions`); the reply is
"You said: <last user text>" (plus "(and sent N images)" when image parts came), streamed one word per chunk,
`server.token_delay` seconds apart (settable at any time). Every request is recorded in `server.requests`
(`RecordedRequest`: method, path, query, lower-cased headers, body, parsed json; `.authorization`,
`.parameters`); `server.last` and `server.requests_to(fragment)` pick them out.

Failures are queued with `fail_next(...)` (or its shortcuts `loading`, `rate_limited`, `bad_request`,
`malformed`, `stall`) and consumed in order by the next matching requests. `server.refused_url` is a URL where
nothing listens (a bound, non-listening socket), for connection-refused tests.

Also served, for reuse by other tests: OpenAI-style `GET /v1/models`, `POST /v1/images/generations`
(b64_json), `POST /v1/audio/speech`, `POST /v1/audio/transcriptions` (multipart), and the Inference Providers
router shapes for novita text-to-video (`POST /novita/v3/hf/{model}` returning a `video_url` on this server) and
WaveSpeed image-to-video (`POST /wavespeed/api/v3/{model}`, then a poll of `/api/v3/predictions/{id}/result`):
set `huggingface_hub.constants.INFERENCE_PROXY_TEMPLATE = server.router_template` to route hub ids here.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import random
import socket
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from aiohttp import web

FailureMode = Literal["status", "malformed", "stall", "drop"]

TASK_ALIASES = {
    "automatic-speech-recognition": "speech-to-text",
    "text-to-audio": "text-to-speech",
    "image-text-to-text": "chat",
}
TASKS = {
    "text-to-image", "image-to-image", "text-to-speech", "text-to-video", "image-to-text", "speech-to-text",
    "image-classification",
}
LABELS = ["tabby cat", "golden retriever", "sports car", "teapot", "mountain bike"]


@dataclass
class RecordedRequest:
    """One request as the server saw it. Header names are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None  # the parsed body when it was JSON
    peer: Any = None  # the client's (host, port): the same for requests that shared a kept-alive connection

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def parameters(self) -> dict[str, Any]:
        return (self.json or {}).get("parameters") or {} if isinstance(self.json, dict) else {}


@dataclass
class Failure:
    """A queued failure. `path` limits it to requests whose path contains that text; `times=None` is forever."""

    status: int = 500
    body: Any = None  # dict/list → JSON, str/bytes → sent as is, None → {"error": "<reason phrase>"}
    headers: dict[str, str] = field(default_factory=dict)
    mode: FailureMode = "status"
    path: str | None = None
    times: int | None = 1
    after_chunks: int = 2  # "stall" on a stream: tokens sent before it hangs

    def matches(self, path: str) -> bool:
        return self.path is None or self.path in path


class HFTestServer:
    """An aiohttp server on 127.0.0.1 at a free port; use as `async with HFTestServer() as server:`."""

    def __init__(self, *, token_delay: float = 0.0, model_name: str = "natty-test-model") -> None:
        self.token_delay = token_delay  # seconds between streamed chat tokens
        self.model_name = model_name  # listed by GET /v1/models
        self.requests: list[RecordedRequest] = []
        self._failures: deque[Failure] = deque()
        self._files: dict[str, bytes] = {}
        self._stop = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._refused_sock: socket.socket | None = None
        self.port = 0
        self.held: list[tuple[RecordedRequest, asyncio.Event]] = []  # requests waiting for release()
        self._hold = False

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/files/{name}", self._file)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # Bound but never listening: connecting to it is refused, and no other process can take the port.
        self._refused_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._refused_sock.bind(("127.0.0.1", 0))
        return self

    async def close(self) -> None:
        self._stop.set()  # releases stalled handlers
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._refused_sock is not None:
            self._refused_sock.close()
            self._refused_sock = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- addresses -------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, no trailing slash: `http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, task: str) -> str:
        """The URL to put in `entry.model` for a task (natty or HF task names). Chat uses `…/chat`."""
        return f"{self.url}/{task}"

    @property
    def openai_url(self) -> str:
        """Base URL of the OpenAI-compatible API: `http://127.0.0.1:PORT/v1`."""
        return f"{self.url}/v1"

    @property
    def refused_url(self) -> str:
        """A URL on 127.0.0.1 where nothing listens: connecting is refused."""
        assert self._refused_sock is not None, "start the server first"
        return f"http://127.0.0.1:{self._refused_sock.getsockname()[1]}"

    @property
    def router_template(self) -> str:
        """A value for `huggingface_hub.constants.INFERENCE_PROXY_TEMPLATE` that routes providers here."""
        return self.url + "/{provider}"

    # ---- failures --------------------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        mode: FailureMode = "status",
        path: str | None = None,
        times: int | None = 1,
        after_chunks: int = 2,
    ) -> Failure:
        """Queue a failure for the next `times` matching requests (None: every one). Returns it for inspection.

        Modes: "status" answers `status` with `body`/`headers`; "malformed" answers 200 with a body that is
        not what the task promises; "stall" hangs (after `after_chunks` tokens on a chat stream) until the
        client gives up; "drop" closes the connection without an answer.
        """
        failure = Failure(status, body, dict(headers or {}), mode, path, times, after_chunks)
        self._failures.append(failure)
        return failure

    def loading(self, estimated_time: float = 2.0, **kw: Any) -> Failure:
        """503 with `{"error": "Model ... is currently loading", "estimated_time": ...}` like hf-inference."""
        body = {"error": "Model natty/test is currently loading", "estimated_time": estimated_time}
        return self.fail_next(503, body=body, **kw)

    def rate_limited(self, retry_after: str | float | None = 1, **kw: Any) -> Failure:
        """429 with a Retry-After header (seconds or an HTTP date), or none when `retry_after` is None."""
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return self.fail_next(429, body={"error": "Rate limit reached"}, headers=headers, **kw)

    def bad_request(
        self, reason: str = "Input validation error: prompt too long", status: int = 400, **kw: Any
    ) -> Failure:
        """A 4xx with `{"error": reason}`."""
        return self.fail_next(status, body={"error": reason}, **kw)

    def malformed(self, **kw: Any) -> Failure:
        return self.fail_next(200, mode="malformed", **kw)

    def stall(self, after_chunks: int = 2, **kw: Any) -> Failure:
        return self.fail_next(200, mode="stall", after_chunks=after_chunks, **kw)

    def clear(self) -> None:
        """Forget recorded requests and queued failures."""
        self.requests.clear()
        self._failures.clear()

    # ---- recorded requests -----------------------------------------------------------------------------------

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def requests_to(self, fragment: str) -> list[RecordedRequest]:
        """The recorded requests whose path contains `fragment`."""
        return [r for r in self.requests if fragment in r.path]

    # ---- handlers --------------------------------------------------------------------------------------------

    def _take_failure(self, path: str) -> Failure | None:
        for failure in list(self._failures):
            if failure.matches(path):
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                return failure
        return None

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        parsed: Any = None
        if body and "json" in request.headers.get("content-type", ""):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            json=parsed,
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        self.requests.append(rec)
        return rec

    async def _health(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        await self._record(request)
        failure = self._take_failure(request.path)
        if failure is not None:
            return await self._fail(request, failure, task="models")
        data = [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "natty-tests"}]
        return web.json_response({"object": "list", "data": data})

    async def _file(self, request: web.Request) -> web.Response:
        await self._record(request)
        data = self._files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="video/mp4")

    def hold(self, on: bool = True) -> None:
        """Keep every request open until `release` lets it go: a test sees which jobs run at once, in order."""
        self._hold = on

    def release(self, count: int = 1) -> None:
        """Let the `count` oldest held requests answer."""
        waiting = [item for item in self.held if not item[1].is_set()]
        for _, event in waiting[:count]:
            event.set()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if self._hold:
            event = asyncio.Event()
            self.held.append((rec, event))
            await event.wait()
        path = request.path.rstrip("/")
        task = _task_of(path)
        failure = self._take_failure(path)
        if failure is not None:
            return await self._fail(request, failure, task=task, rec=rec)
        if task is None:
            return web.json_response({"error": f"no such endpoint: {path}"}, status=404)
        handler = getattr(self, "_" + task.replace("-", "_").replace("/", "_"))
        return await handler(request, rec)

    async def _fail(
        self, request: web.Request, failure: Failure, *, task: str | None, rec: RecordedRequest | None = None
    ) -> web.StreamResponse:
        if failure.mode == "drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if failure.mode == "stall":
            if task == "chat" and rec is not None and isinstance(rec.json, dict) and rec.json.get("stream"):
                return await self._stream_chat(request, rec, stall_after=failure.after_chunks)
            await self._stop.wait()
            return web.Response(status=504)
        if failure.mode == "malformed":
            if task in ("text-to-image", "image-to-image"):
                return web.json_response({"generated": "not an image"})  # PIL cannot open JSON
            if task == "chat" and rec is not None and isinstance(rec.json, dict) and rec.json.get("stream"):
                resp = await self._sse_start(request)
                await resp.write(b"data: {not json\n\n")
                await resp.write_eof()
                return resp
            return web.Response(body=b"<html>oops</html>\x00\xff", content_type="application/json")
        body = failure.body if failure.body is not None else {"error": _reason(failure.status)}
        if isinstance(body, (dict, list)):
            return web.json_response(body, status=failure.status, headers=failure.headers)
        raw = body.encode() if isinstance(body, str) else body
        return web.Response(body=raw, status=failure.status, headers=failure.headers)

    # chat -------------------------------------------------------------------------------------------------------

    def _chat_reply(self, payload: dict[str, Any]) -> str:
        messages = payload.get("messages") or []
        text, images = "", 0
        for message in messages:
            content = message.get("content")
            if isinstance(content, str):
                text = content if message.get("role") == "user" else text
            elif isinstance(content, list):
                for part in content:
                    if part.get("type") == "text" and message.get("role") == "user":
                        text = part.get("text", "")
                    if part.get("type") == "image_url":
                        images += 1
        reply = f"You said: {text}"
        if images:
            reply += f" (and sent {images} image{'s' if images > 1 else ''})"
        max_tokens = payload.get("max_tokens")
        if isinstance(max_tokens, int):
            reply = " ".join(reply.split(" ")[:max_tokens])
        return reply

    async def _sse_start(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        return resp

    async def _stream_chat(
        self, request: web.Request, rec: RecordedRequest, *, stall_after: int | None = None
    ) -> web.StreamResponse:
        payload = rec.json if isinstance(rec.json, dict) else {}
        model = payload.get("model", "dummy")
        tokens = _tokens(self._chat_reply(payload))
        resp = await self._sse_start(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {
                "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model,
                "system_fingerprint": "test",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            return f"data: {json.dumps(data)}\n\n".encode()

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            for i, token in enumerate(tokens):
                if stall_after is not None and i >= stall_after:
                    await self._stop.wait()
                    return resp
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                await resp.write(chunk({"content": token}))
            await resp.write(chunk({}, "stop"))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client went away mid-stream
        return resp

    async def _chat(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        payload = rec.json if isinstance(rec.json, dict) else {}
        if not payload.get("messages"):
            return web.json_response({"error": "messages is required"}, status=422)
        if payload.get("stream"):
            return await self._stream_chat(request, rec)
        text = self._chat_reply(payload)
        return web.json_response({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": payload.get("model"),
            "system_fingerprint": "test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(_tokens(text)), "total_tokens": 1},
        })

    # images -----------------------------------------------------------------------------------------------------

    async def _text_to_image(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        payload = rec.json if isinstance(rec.json, dict) else {}
        prompt = str(payload.get("inputs", ""))
        params = rec.parameters
        width, height = int(params.get("width") or 1024), int(params.get("height") or 1024)  # FLUX's default
        png = draw_png(prompt, width, height, params.get("seed"))
        return web.Response(body=png, content_type="image/png")

    async def _image_to_image(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        from PIL import Image, ImageOps

        image = Image.open(io.BytesIO(_binary_input(rec))).convert("RGB")
        size = rec.parameters.get("target_size")
        if isinstance(size, dict) and size.get("width") and size.get("height"):
            image = image.resize((int(size["width"]), int(size["height"])))
        out = io.BytesIO()
        ImageOps.invert(image).save(out, format="PNG")
        return web.Response(body=out.getvalue(), content_type="image/png")

    async def _image_to_text(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        from PIL import Image

        image = Image.open(io.BytesIO(_binary_input(rec))).convert("RGB")
        r, g, b = image.resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
        colour = max((("red", r), ("green", g), ("blue", b)), key=lambda c: c[1])[0]
        caption = f"a {image.width}x{image.height} picture, mostly {colour}"
        return web.json_response([{"generated_text": caption}])

    async def _image_classification(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        data = _binary_input(rec)
        rng = random.Random(zlib.crc32(data))
        scores = [rng.random() for _ in LABELS]
        total = sum(scores)
        labels = [{"label": label, "score": s / total} for label, s in zip(LABELS, scores, strict=True)]
        top_k = rec.parameters.get("top_k")
        if isinstance(top_k, int):
            labels = sorted(labels, key=lambda x: -x["score"])[:top_k]
            rng.shuffle(labels)  # real servers do not promise an order
        return web.json_response(labels)

    # audio ------------------------------------------------------------------------------------------------------

    async def _text_to_speech(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        params = rec.parameters
        duration = _duration(params, 1.0)
        fmt = str(params.get("format") or "wav")
        data = tone(duration, fmt=fmt)
        return web.Response(body=data, content_type=_AUDIO_MIME.get(fmt, "application/octet-stream"))

    async def _speech_to_text(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        return web.json_response({"text": describe_audio(_binary_input(rec))})

    # video ------------------------------------------------------------------------------------------------------

    async def _text_to_video(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        payload = rec.json if isinstance(rec.json, dict) else {}
        prompt = str(payload.get("inputs") or payload.get("prompt") or "")
        frames = int((rec.parameters or payload).get("num_frames") or 4)
        return web.Response(body=encode_mp4(prompt, frames), content_type="video/mp4")

    async def _novita_video(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        payload = rec.json if isinstance(rec.json, dict) else {}
        data = encode_mp4(str(payload.get("prompt", "")), int(payload.get("num_frames") or 4))
        name = f"video{len(self._files)}.mp4"
        self._files[name] = data
        return web.json_response({"video": {"video_url": f"{self.url}/files/{name}"}})

    async def _wavespeed_video(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        """WaveSpeed's image-to-video: the image as a data URL; the answer says where to poll for the clip."""
        payload = rec.json if isinstance(rec.json, dict) else {}
        image = str(payload.get("image") or "")
        if not image.startswith("data:image/"):
            return web.json_response({"error": "image must be a data URL"}, status=400)
        first = base64.b64decode(image.split(",", 1)[1])
        data = encode_mp4(str(payload.get("prompt", "")), int(payload.get("num_frames") or 4), first=first)
        name = f"video{len(self._files)}.mp4"
        self._files[name] = data
        poll = f"{self.url}/api/v3/predictions/{name}/result"
        return web.json_response({"code": 200, "data": {"id": name, "status": "created", "urls": {"get": poll}}})

    async def _wavespeed_result(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        name = request.path.split("/")[-2]
        if name not in self._files:
            return web.json_response({"error": "no such prediction"}, status=404)
        return web.json_response({"code": 200, "data": {"id": name, "status": "completed",
                                                        "outputs": [f"{self.url}/files/{name}"]}})

    # OpenAI-style extras ----------------------------------------------------------------------------------------

    async def _openai_images(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        payload = rec.json if isinstance(rec.json, dict) else {}
        w, h = (int(x) for x in str(payload.get("size") or "1024x1024").split("x"))
        n = int(payload.get("n") or 1)
        items = [
            {"b64_json": base64.b64encode(draw_png(str(payload.get("prompt", "")), w, h, i)).decode()}
            for i in range(n)
        ]
        return web.json_response({"created": 0, "data": items})

    async def _openai_speech(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        payload = rec.json if isinstance(rec.json, dict) else {}
        fmt = str(payload.get("response_format") or "wav")
        fmt = fmt if fmt in _AUDIO_MIME else "wav"
        duration = _duration(payload, max(0.5, len(str(payload.get("input", ""))) / 20))
        return web.Response(body=tone(duration, fmt=fmt), content_type=_AUDIO_MIME[fmt])

    async def _openai_transcriptions(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        parts = _multipart(rec)
        model = parts.get("model", b"").decode()
        return web.json_response({"text": describe_audio(parts.get("file", b"")), "model": model})


# ---- helpers, usable on their own ----------------------------------------------------------------------------

_AUDIO_MIME = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _task_of(path: str) -> str | None:
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/images/generations"):
        return "openai_images"
    if path.endswith("/audio/speech"):
        return "openai_speech"
    if path.endswith("/audio/transcriptions"):
        return "openai_transcriptions"
    if path.startswith("/novita/v3/hf/"):
        return "novita_video"
    if path.startswith("/wavespeed/api/v3/"):
        return "wavespeed_video"
    if path.startswith("/api/v3/predictions/"):
        return "wavespeed_result"
    last = path.rsplit("/", 1)[-1]
    last = TASK_ALIASES.get(last, last)
    return last if last in TASKS else None


def _duration(params: dict[str, Any], default: float) -> float:
    """The requested audio length, under any of the names models use for it."""
    for name in ("duration", "seconds", "audio_length_in_s", "duration_seconds"):
        if params.get(name):
            return float(params[name])
    return default


def _tokens(text: str) -> list[str]:
    """Split into word-ish tokens that concatenate back to the text."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _binary_input(rec: RecordedRequest) -> bytes:
    """The input file of a binary task: the raw body, or base64 `inputs` in a JSON body."""
    if isinstance(rec.json, dict) and isinstance(rec.json.get("inputs"), str):
        return base64.b64decode(rec.json["inputs"])
    return rec.body


def _multipart(rec: RecordedRequest) -> dict[str, bytes]:
    """The parts of a multipart/form-data body, by field name."""
    from email import message_from_bytes
    from email.policy import HTTP

    head = f"Content-Type: {rec.headers.get('content-type', '')}\r\n\r\n".encode()
    message = message_from_bytes(head + rec.body, policy=HTTP)
    out: dict[str, bytes] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = part.get_payload(decode=True) or b""
    return out


def draw_png(prompt: str, width: int = 64, height: int = 64, seed: Any = None) -> bytes:
    """A deterministic PNG for a prompt (or seed): coloured rectangles on a background."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed if seed is not None else zlib.crc32(prompt.encode()))
    image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = rng.randrange(x0, width + 1), rng.randrange(y0, height + 1)
        draw.rectangle((x0, y0, x1, y1), fill=tuple(rng.randrange(256) for _ in range(3)))  # type: ignore[arg-type]
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def tone(duration: float = 1.0, *, sample_rate: int = 16000, freq: float = 440.0, fmt: str = "wav") -> bytes:
    """A sine tone of `duration` seconds as WAV (16-bit), FLAC or OGG/Vorbis bytes."""
    import numpy as np
    import soundfile as sf

    t = np.arange(round(duration * sample_rate)) / sample_rate
    samples = (0.3 * np.sin(2 * math.pi * freq * t)).astype("float32")
    out = io.BytesIO()
    fmt = fmt.lower()
    subtype = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[fmt]
    sf.write(out, samples, sample_rate, format=fmt.upper(), subtype=subtype)
    return out.getvalue()


def describe_audio(data: bytes) -> str:
    """A 'transcription' that states what was heard, so tests can check the audio arrived intact."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - any undecodable input is answered, not crashed on
        return f"heard {len(data)} bytes of something"
    return f"heard {info.duration:.2f} seconds of audio at {info.samplerate} Hz"


def encode_mp4(prompt: str, frames: int = 4, width: int = 64, height: int = 64, fps: int = 8,
               first: bytes | None = None) -> bytes:
    """A short MP4 (mpeg4 video) whose frames are drawn from the prompt; with `first` (an image file), the clip
    starts from that picture, as image-to-video does."""
    import av
    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"  # type: ignore[attr-defined]
        for i in range(max(1, frames)):
            source = first if first is not None and i == 0 else draw_png(prompt, width, height, seed=i)
            image = Image.open(io.BytesIO(source)).convert("RGB").resize((width, height))
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            for packet in stream.encode(frame):  # type: ignore[attr-defined]
                container.mux(packet)
        for packet in stream.encode():  # type: ignore[attr-defined]
            container.mux(packet)
    return out.getvalue()
