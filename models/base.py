"""The one async interface every backend implements, and the typed requests and results it trades in.

`models/` knows nothing of Discord: the job engine builds a `Request`, picks the `Backend` for the catalog
entry, and awaits `backend.run(entry, request, ctx)`. Progress flows back through `ctx.report(...)`, which is
safe to call from any thread (local models run off the event loop), and cancellation flows in through
`ctx.cancel`, a flag that both async and threaded code can poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.errors import BackendError, ErrorKind
from models.tasks import TASKS

if TYPE_CHECKING:
    from models.catalog import ModelEntry

@dataclass
class Request:
    """What a job asks a backend for. Only the fields that matter for its task are set."""

    task: str
    prompt: str = ""
    messages: list[dict[str, Any]] | None = None  # chat history, OpenAI shape: {"role", "content"}
    image: bytes | None = None  # input image (image-to-image, image-to-text, classification)
    audio: bytes | None = None  # input audio (speech-to-text)
    negative_prompt: str | None = None
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)  # per-call parameters over the entry's defaults


@dataclass
class Progress:
    """One progress report. The job engine keeps only the latest, so reports may be as frequent as is cheap."""

    fraction: float | None = None  # 0..1 where known
    step: int | None = None
    total: int | None = None
    message: str = ""  # e.g. "row 12/28" or "downloading 40%"
    preview: bytes | None = None  # a PNG preview (PixelCNN rows, diffusion latents)
    text: str | None = None  # the text so far, for streamed chat


class CancelToken:
    """A thread-safe cancellation flag: the engine sets it, backends poll it between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise BackendError(ErrorKind.CANCELLED, "cancelled")


@dataclass
class RunContext:
    """What a backend gets besides the request: a progress sink and the cancel flag."""

    report: Callable[[Progress], None] = lambda p: None
    cancel: CancelToken = field(default_factory=CancelToken)
    deadline: float | None = None  # time.monotonic() by which the task must finish

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


@dataclass
class Result:
    """Base of every result: metadata for provenance (model, backend, seed, parameters, timings)."""

    meta: dict[str, Any] = field(default_factory=dict, kw_only=True)


@dataclass
class TextResult(Result):
    text: str


@dataclass
class ImageResult(Result):
    data: bytes
    format: str = "png"  # file extension: png | jpeg | webp
    width: int | None = None
    height: int | None = None


@dataclass
class AudioResult(Result):
    data: bytes
    format: str = "wav"  # wav | flac | ogg | mp3
    duration: float | None = None  # seconds
    sample_rate: int | None = None


@dataclass
class VideoResult(Result):
    data: bytes
    format: str = "mp4"


@dataclass
class LabelsResult(Result):
    labels: list[tuple[str, float]]  # (label, score), best first


def method_of(task: str) -> str:
    """The Backend method a task dispatches to: its name with underscores ("text-to-image" -> text_to_image),
    as huggingface_hub's InferenceClient names them."""
    return task.replace("-", "_")


class Backend:
    """Base class of the hf, openai and local backends: one async method per task.

    A backend that does not serve a task leaves its method alone; calling it raises an `UNSUPPORTED`
    `BackendError`. `chat` streams: it reports `Progress(text=...)` as tokens arrive and returns the whole text.
    """

    kind: str = "base"

    async def run(self, entry: ModelEntry, request: Request, ctx: RunContext) -> Result:
        """Dispatch a request to the method for its task, stamping backend metadata on the result."""
        if request.task not in TASKS:
            raise BackendError(ErrorKind.BAD_REQUEST, f"unknown task {request.task!r}")
        method = getattr(self, method_of(request.task), None)
        if method is None:  # a task newer than this backend: it does not serve it
            raise self._unsupported(entry, request.task)
        started = time.monotonic()
        result: Result = await method(entry, request, ctx)
        result.meta.setdefault("model", entry.name)
        result.meta.setdefault("model_id", entry.model)
        result.meta.setdefault("backend", self.kind)
        result.meta.setdefault("task", request.task)
        if request.seed is not None:
            result.meta.setdefault("seed", request.seed)
        result.meta.setdefault("seconds", round(time.monotonic() - started, 3))
        return result

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        """Whether the entry can run now (key present, files present, server reachable), and why not."""
        return True, "ok"

    async def aclose(self) -> None:
        """Release clients, threads and models."""

    def _unsupported(self, entry: ModelEntry, task: str) -> BackendError:
        return BackendError(ErrorKind.UNSUPPORTED, f"the {self.kind} backend cannot run {task} for {entry.name}")

    async def chat(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        raise self._unsupported(entry, "chat")

    async def text_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        raise self._unsupported(entry, "text-to-image")

    async def image_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        raise self._unsupported(entry, "image-to-image")

    async def text_to_speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        raise self._unsupported(entry, "text-to-speech")

    async def text_to_audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        raise self._unsupported(entry, "text-to-audio")

    async def text_to_video(self, entry: ModelEntry, request: Request, ctx: RunContext) -> VideoResult:
        raise self._unsupported(entry, "text-to-video")

    async def image_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        raise self._unsupported(entry, "image-to-text")

    async def speech_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        raise self._unsupported(entry, "speech-to-text")

    async def image_classification(self, entry: ModelEntry, request: Request, ctx: RunContext) -> LabelsResult:
        raise self._unsupported(entry, "image-classification")


async def collect_text(chunks: AsyncIterator[str], ctx: RunContext) -> str:
    """Accumulate streamed text, reporting the running text and honouring cancellation between chunks."""
    text = ""
    async for piece in chunks:
        ctx.cancel.raise_if_cancelled()
        text += piece
        ctx.report(Progress(text=text))
    return text
