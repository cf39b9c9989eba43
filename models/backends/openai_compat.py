"""The `openai` backend: any OpenAI-compatible server at `entry.url` (OpenAI, vLLM, TGI, Ollama, llama.cpp,
`transformers serve`), with `entry.model` as the served model name.

Chat goes through `huggingface_hub.AsyncInferenceClient(base_url=entry.url)`, streamed. Images
(`/images/generations`), speech (`/audio/speech`) and transcription (`/audio/transcriptions`) are plain HTTP
calls with httpx2, huggingface_hub's own transport. Retries, deadlines, cancellation and error classification
are shared with the `hf` backend (`models.backends.http`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from models.backends.http import (
    RetryingBackend,
    audio_result,
    chat_kwargs,
    chat_messages,
    data_url,
    hub_headers_ready,
    inference_client,
    kept_session,
    merged_params,
    stream_chat_text,
    tls_context,
)
from models.base import AudioResult, ImageResult, Request, RunContext, TextResult
from models.errors import BackendError, ErrorKind
from models.media import mime_type

if TYPE_CHECKING:
    import httpx2

    from models.catalog import ModelEntry

T = TypeVar("T")


class OpenAIBackend(RetryingBackend):
    """An OpenAI-compatible server: chat (streamed), images, speech and transcription where it offers them."""

    kind = "openai"

    # -- plumbing --

    @staticmethod
    def _base(entry: ModelEntry) -> str:
        if not entry.url:
            raise BackendError(ErrorKind.NOT_CONFIGURED, f"{entry.name} has no url", model=entry.name)
        return entry.url.rstrip("/")

    @staticmethod
    def _headers(entry: ModelEntry) -> dict[str, str]:
        key = entry.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _retry(
        self, entry: ModelEntry, ctx: RunContext, attempt: Callable[[float], Any],
        retry_ok: Callable[[], bool] = lambda: True,
    ) -> Any:
        return await self.retrying.run(
            attempt, ctx=ctx, deadline=self.retrying.deadline(entry, ctx), model=entry.name,
            secrets=(entry.api_key,), retry_ok=retry_ok,
        )

    async def _post(
        self, entry: ModelEntry, ctx: RunContext, path: str, *, json: Any = None, files: Any = None,
        data: Any = None,
    ) -> httpx2.Response:
        """POST to `{url}{path}` under retries; raises for HTTP errors (classified by the retry loop)."""

        url = self._base(entry) + path

        async def attempt(left: float) -> httpx2.Response:
            response = await kept_session(hub_hooks=False).post(
                url, json=json, files=files, data=data, headers=self._headers(entry), timeout=left)
            response.raise_for_status()
            return response

        return await self._retry(entry, ctx, attempt)

    # -- tasks --

    async def chat(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        base = self._base(entry)
        params = merged_params(entry, request)
        messages = chat_messages(request)
        kwargs = chat_kwargs(params)
        started = [False]  # once text reached the user, a retry would repeat it: fail instead

        async def attempt(left: float) -> str:
            await hub_headers_ready()
            async with inference_client(base_url=base, api_key=entry.api_key, timeout=left) as client:
                return await stream_chat_text(client, messages, {"model": entry.model, **kwargs}, ctx, started)

        text = await self._retry(entry, ctx, attempt, retry_ok=lambda: not started[0])
        return TextResult(text=text, meta={"params": params, "url": base})

    async def image_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        """A caption from a chat model that reads images (the prompt, if any, is the question)."""
        if request.image is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "image-to-text needs an input image")
        question = request.prompt or "Describe this image in one sentence."
        messages = [{"role": "user", "content": [
            {"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": data_url(request.image)}},
        ]}]
        return await self.chat(entry, Request(task="chat", messages=messages, params=request.params), ctx)

    async def text_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        params = merged_params(entry, request)
        width, height = params.pop("width", None), params.pop("height", None)
        body: dict[str, Any] = {"model": entry.model, "prompt": request.prompt, "n": 1,
                                "response_format": "b64_json", **params}
        if width and height:
            body["size"] = f"{int(width)}x{int(height)}"
        if request.negative_prompt:
            body.setdefault("negative_prompt", request.negative_prompt)
        if request.seed is not None:
            body.setdefault("seed", request.seed)
        response = await self._post(entry, ctx, "/images/generations", json=body)
        try:
            item = response.json()["data"][0]
            data = base64.b64decode(item["b64_json"])
            from PIL import Image

            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as exc:  # any unreadable answer is the server's fault
            raise BackendError(ErrorKind.INTERNAL, f"malformed image answer: {type(exc).__name__}: {exc}",
                               model=entry.name) from exc
        fmt = (image.format or "png").lower()
        return ImageResult(data=data, format="jpeg" if fmt == "jpg" else fmt, width=image.width,
                           height=image.height, meta={"params": params})

    async def _speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        params = merged_params(entry, request)
        body = {"model": entry.model, "input": request.prompt, "response_format": "wav", **params}
        if entry.voices and "voice" not in body:
            body["voice"] = entry.voices[0]
        response = await self._post(entry, ctx, "/audio/speech", json=body)
        result = audio_result(response.content)
        result.meta["params"] = params
        return result

    async def text_to_speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        return await self._speech(entry, request, ctx)

    async def text_to_audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        return await self._speech(entry, request, ctx)

    async def speech_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        if request.audio is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "speech-to-text needs input audio")
        from models.backends.http import audio_format

        fmt = audio_format(request.audio) or "wav"
        params = merged_params(entry, request)
        files = {"file": (f"audio.{fmt}", request.audio, mime_type(fmt))}
        form = {"model": entry.model, **{k: str(v) for k, v in params.items()}}
        response = await self._post(entry, ctx, "/audio/transcriptions", files=files, data=form)
        try:
            text = response.json()["text"]
        except Exception:  # noqa: BLE001 - `response_format=text` answers plain text
            text = response.text
        return TextResult(text=str(text).strip(), meta={"params": params})

    # -- readiness --

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        """GET {url}/models: reachable, key accepted, and the served model listed (when the server lists any)."""
        import httpx2

        if entry.api_key_env and not entry.api_key:
            return False, f"set {entry.api_key_env}"
        try:
            base = self._base(entry)
        except BackendError as exc:
            return False, exc.detail
        try:
            async with httpx2.AsyncClient(timeout=self.probe_timeout, verify=tls_context()) as client:
                response = await client.get(f"{base}/models", headers=self._headers(entry))
        except httpx2.HTTPError as exc:
            return False, f"cannot reach {base} ({type(exc).__name__})"
        if response.status_code in (401, 403):
            return False, f"{base} refused the key (HTTP {response.status_code})"
        if response.status_code >= 400:
            return True, f"reachable at {base} (it does not list models: HTTP {response.status_code})"
        try:
            served = [str(m.get("id")) for m in response.json().get("data", [])]
        except Exception:  # noqa: BLE001 - a server that answers /models oddly is still reachable
            return True, f"reachable at {base}"
        if served and not any(_same_model(entry.model, m) for m in served):
            listed = ", ".join(served[:5]) + ("…" if len(served) > 5 else "")
            return False, f"{base} does not serve {entry.model!r} (it lists: {listed})"
        return True, f"reachable at {base}"


def _same_model(wanted: str, listed: str) -> bool:
    """Whether a listed id names the wanted model; Ollama lists `name:latest` for `name`."""
    return listed == wanted or listed == f"{wanted}:latest"
