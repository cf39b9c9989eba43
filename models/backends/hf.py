"""The `hf` backend: Hugging Face Inference Providers by hub id, or a dedicated endpoint by URL.

Everything goes through `huggingface_hub.AsyncInferenceClient`, one client per call (`async with`), so streamed
responses are released as soon as the call ends. What it shares with the `openai`
backend (failure classification, retries, the client) is in http.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from models.backends.http import (
    RetryingBackend,
    audio_result,
    chat_kwargs,
    chat_messages,
    hub_headers_ready,
    inference_client,
    is_url,
    merged_params,
    png_result,
    probe,
    split_params,
    stream_chat_text,
    video_format,
)
from models.base import (
    AudioResult,
    ImageResult,
    LabelsResult,
    Request,
    RunContext,
    TextResult,
    VideoResult,
)
from models.errors import BackendError, ErrorKind

if TYPE_CHECKING:
    from huggingface_hub import AsyncInferenceClient

    from models.catalog import ModelEntry

log = logging.getLogger(__name__)
T = TypeVar("T")

# natty task -> huggingface_hub task, for provider lookups.
_HF_TASKS = {  # where huggingface_hub's name differs; every other task has the same name there
    "chat": "conversational", "text-to-audio": "text-to-speech", "speech-to-text": "automatic-speech-recognition",
}

@dataclass
class _VideoArgs:
    """What both video tasks pass to huggingface_hub besides their input: named parameters, the rest, seed, negative."""

    named: dict[str, Any]
    extra: dict[str, Any]
    seed: Any
    negative: Any


class HFBackend(RetryingBackend):
    """Inference Providers by hub id (`provider`, "auto" by default), or a dedicated endpoint by URL."""

    kind = "hf"

    # -- plumbing --

    def _client(self, entry: ModelEntry, timeout: float) -> AsyncInferenceClient:
        if is_url(entry.model):
            return inference_client(model=entry.model, api_key=entry.api_key, timeout=timeout)
        key = entry.api_key
        if not key:
            # A hub id would go to the router with whatever token lies around: refuse rather than guess.
            raise BackendError(
                ErrorKind.AUTH, f"no API key: set {entry.api_key_env or 'HF_TOKEN'}", model=entry.name
            )
        return inference_client(model=entry.model, provider=entry.provider or "auto", api_key=key, timeout=timeout)

    async def _resolve(self, entry: ModelEntry, task: str) -> None:
        """Look up the hub id's provider mapping off the event loop.

        The client does it with a blocking HTTP call inside the task method (cached per model afterwards);
        doing it first in a thread keeps the bot responsive and lets its failures be classified like any other.
        """
        if is_url(entry.model) or (task == "chat" and ((entry.provider or "auto") == "auto"
                                                       or (entry.api_key or "").startswith("hf_"))):
            # URLs need no mapping; chat with an HF token goes to the router as `model:provider` and is resolved
            # there (huggingface_hub 2.5), so a lookup would only add a Hub round trip that can fail
            return
        from huggingface_hub.inference._providers import get_provider_helper

        def resolve() -> None:
            provider = entry.provider or "auto"
            task_name = _HF_TASKS.get(task, task)
            helper = get_provider_helper(provider, task_name, entry.model)  # type: ignore[arg-type]  # catalog's names
            helper._prepare_mapping_info(entry.model)

        await asyncio.to_thread(resolve)

    async def _call(
        self,
        entry: ModelEntry,
        ctx: RunContext,
        task: str,
        fn: Callable[[AsyncInferenceClient], Awaitable[T]],
        *,
        retry_ok: Callable[[], bool] = lambda: True,
    ) -> T:
        """Run `fn(client)` with a fresh client per attempt, under retries, the deadline and ctx.cancel."""

        async def attempt(left: float) -> T:
            await hub_headers_ready()
            client = self._client(entry, left)  # raises AUTH before any lookup when a hub id has no key
            async with client:
                await self._resolve(entry, task)
                return await fn(client)

        return await self.retrying.run(
            attempt, ctx=ctx, deadline=self.retrying.deadline(entry, ctx), model=entry.name,
            secrets=(entry.api_key,), retry_ok=retry_ok,
        )

    def _meta(self, entry: ModelEntry, params: dict[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {"params": params}
        if not is_url(entry.model):
            meta["provider"] = entry.provider or "auto"
        return meta

    # -- tasks --

    async def chat(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        params = merged_params(entry, request)
        messages = chat_messages(request)
        kwargs = chat_kwargs(params)
        started = [False]  # once text reached the user, a retry would repeat it: fail instead

        async def fn(client: AsyncInferenceClient) -> str:
            return await stream_chat_text(client, messages, kwargs, ctx, started)

        text = await self._call(entry, ctx, "chat", fn, retry_ok=lambda: not started[0])
        return TextResult(text=text, meta=self._meta(entry, params))

    async def text_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        params = merged_params(entry, request)
        named, extra = split_params(params, ("width", "height", "num_inference_steps", "guidance_scale", "scheduler"))
        seed = request.seed if request.seed is not None else extra.pop("seed", None)
        negative = request.negative_prompt or extra.pop("negative_prompt", None)

        async def fn(client: AsyncInferenceClient) -> Any:
            return await client.text_to_image(
                request.prompt, negative_prompt=negative, seed=seed, extra_body=extra or None, **named
            )

        image = await self._call(entry, ctx, "text-to-image", fn)
        result = await asyncio.to_thread(png_result, image)
        result.meta.update(self._meta(entry, params))
        return result

    async def image_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        if request.image is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "image-to-image needs an input image")
        params = merged_params(entry, request)
        named, extra = split_params(params, ("num_inference_steps", "guidance_scale"))
        width, height = extra.pop("width", None), extra.pop("height", None)
        if width and height:
            extra["target_size"] = {"width": int(width), "height": int(height)}
        if request.seed is not None:
            extra["seed"] = request.seed
        negative = request.negative_prompt or extra.pop("negative_prompt", None)
        for name in ("prompt", "model", "image"):  # would clash with the call's own arguments
            extra.pop(name, None)
        image_in = request.image

        async def fn(client: AsyncInferenceClient) -> Any:
            return await client.image_to_image(
                image_in, request.prompt or None, negative_prompt=negative, **named, **extra
            )

        image = await self._call(entry, ctx, "image-to-image", fn)
        result = await asyncio.to_thread(png_result, image)
        result.meta.update(self._meta(entry, params))
        return result

    async def _speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        params = merged_params(entry, request)
        if request.seed is not None:
            params.setdefault("seed", request.seed)

        async def fn(client: AsyncInferenceClient) -> bytes:
            return await client.text_to_speech(request.prompt, extra_body=params or None)

        result = audio_result(await self._call(entry, ctx, "text-to-speech", fn))
        result.meta.update(self._meta(entry, params))
        return result

    async def text_to_speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        return await self._speech(entry, request, ctx)

    async def text_to_audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        # huggingface_hub has no text_to_audio: music models are served through text_to_speech.
        return await self._speech(entry, request, ctx)

    async def text_to_video(self, entry: ModelEntry, request: Request, ctx: RunContext) -> VideoResult:
        def fn(client: AsyncInferenceClient, v: _VideoArgs) -> Awaitable[bytes]:
            return client.text_to_video(request.prompt, negative_prompt=[v.negative] if v.negative else None,
                                        seed=v.seed, extra_body=v.extra or None, **v.named)

        return await self._video(entry, request, ctx, fn)

    async def image_to_video(self, entry: ModelEntry, request: Request, ctx: RunContext) -> VideoResult:
        image = request.image
        if image is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "image-to-video needs an input image", model=entry.name)

        def fn(client: AsyncInferenceClient, v: _VideoArgs) -> Awaitable[bytes]:
            return client.image_to_video(image, prompt=request.prompt or None, negative_prompt=v.negative,
                                         seed=v.seed, **v.named, **v.extra)

        return await self._video(entry, request, ctx, fn)

    async def _video(self, entry: ModelEntry, request: Request, ctx: RunContext,
                     fn: Callable[[AsyncInferenceClient, _VideoArgs], Awaitable[bytes]]) -> VideoResult:
        """A video task: only providers serve them (they take hub ids), and the answer must be a video."""
        if is_url(entry.model):
            raise BackendError(
                ErrorKind.UNSUPPORTED,
                f"{request.task} cannot target an endpoint URL with huggingface_hub; use a hub id and a provider",
                model=entry.name,
            )
        params = merged_params(entry, request)
        named, extra = split_params(params, ("num_frames", "num_inference_steps", "guidance_scale"))
        seed = request.seed if request.seed is not None else extra.pop("seed", None)
        args = _VideoArgs(named, extra, seed, request.negative_prompt or extra.pop("negative_prompt", None))
        data = await self._call(entry, ctx, request.task, lambda client: fn(client, args))
        fmt = video_format(data)
        if fmt is None:
            raise BackendError(ErrorKind.INTERNAL, f"malformed answer: {len(data)} bytes that are not a video")
        return VideoResult(data=data, format=fmt, meta=self._meta(entry, params))

    async def image_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        if request.image is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "image-to-text needs an input image")
        image = request.image

        async def fn(client: AsyncInferenceClient) -> Any:
            return await client.image_to_text(image)

        output = await self._call(entry, ctx, "image-to-text", fn)
        return TextResult(text=str(output.generated_text or ""), meta=self._meta(entry, {}))

    async def speech_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        if request.audio is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "speech-to-text needs input audio")
        params = merged_params(entry, request)
        audio = request.audio

        async def fn(client: AsyncInferenceClient) -> Any:
            return await client.automatic_speech_recognition(audio, extra_body=params or None)

        output = await self._call(entry, ctx, "speech-to-text", fn)
        return TextResult(text=str(output.text or "").strip(), meta=self._meta(entry, params))

    async def image_classification(self, entry: ModelEntry, request: Request, ctx: RunContext) -> LabelsResult:
        if request.image is None:
            raise BackendError(ErrorKind.BAD_REQUEST, "image-classification needs an input image")
        params = merged_params(entry, request)
        image = request.image
        top_k = params.get("top_k")

        async def fn(client: AsyncInferenceClient) -> Any:
            return await client.image_classification(image, top_k=top_k)

        output = await self._call(entry, ctx, "image-classification", fn)
        labels = sorted(((str(o.label), float(o.score)) for o in output), key=lambda pair: -pair[1])
        return LabelsResult(labels=labels, meta=self._meta(entry, params))

    # -- readiness --

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        """Hub ids: runnable when the key is set. URLs: the server accepts a TCP connection, and the key is set."""
        if entry.api_key_env and not entry.api_key:
            return False, f"set {entry.api_key_env}"
        if not is_url(entry.model):
            if not entry.api_key_env:
                return False, "set HF_TOKEN and api_key_env = \"HF_TOKEN\" for this entry"
            return True, f"ok (provider {entry.provider or 'auto'})"
        ok, why = await probe(entry.model, self.probe_timeout)
        return ok, why

