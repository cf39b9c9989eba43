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
    # Further files that go with the result as they are, (filename, bytes): a tune's score as MIDI beside its audio.
    extra_files: list[tuple[str, bytes]] = field(default_factory=list, kw_only=True)


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


@dataclass(frozen=True)
class TaskSpec:
    """A task: its name ("text-to-image"), what it makes ("text", "image", "audio", "video", "labels": the
    kinds of the Result classes) and what it needs besides a prompt ("image", "audio" or None)."""

    name: str
    makes: str
    takes: str | None = None


_KINDS, _INPUTS = ("text", "image", "audio", "video", "labels"), (None, "image", "audio")
_DECLARED: list[TaskSpec] = []  # filled by @task as the Backend class body runs, in its order


def task(makes: str, takes: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declares a `Backend` method to be a task, named after it (`text_to_image` is "text-to-image"). This is
    where a task comes into being: the catalog accepts entries of it, the engine, safety and `natty generate`
    read its kinds, and backends serve it by overriding the method."""
    if makes not in _KINDS or takes not in _INPUTS:
        raise ValueError(f"a task makes one of {_KINDS} and takes one of {_INPUTS}")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        _DECLARED.append(TaskSpec(fn.__name__.replace("_", "-"), makes, takes))
        return fn

    return mark


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

    @task(makes="text")
    async def chat(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        """A reply to `messages` (or the prompt), streamed as `Progress(text=...)`."""
        raise self._unsupported(entry, request.task)

    @task(makes="image")
    async def text_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        """Pictures from the prompt."""
        raise self._unsupported(entry, request.task)

    @task(makes="image", takes="image")
    async def image_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        """`image` changed as the prompt says."""
        raise self._unsupported(entry, request.task)

    @task(makes="audio")
    async def text_to_speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        """The prompt read aloud."""
        raise self._unsupported(entry, request.task)

    @task(makes="audio")
    async def text_to_audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        """Music or sound the prompt describes."""
        raise self._unsupported(entry, request.task)

    @task(makes="video")
    async def text_to_video(self, entry: ModelEntry, request: Request, ctx: RunContext) -> VideoResult:
        """A clip the prompt describes."""
        raise self._unsupported(entry, request.task)

    @task(makes="video", takes="image")
    async def image_to_video(self, entry: ModelEntry, request: Request, ctx: RunContext) -> VideoResult:
        """A clip that starts from `image` and does what the prompt says."""
        raise self._unsupported(entry, request.task)

    @task(makes="text", takes="image")
    async def image_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        """A caption of `image`."""
        raise self._unsupported(entry, request.task)

    @task(makes="text", takes="audio")
    async def speech_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        """What is said in `audio`."""
        raise self._unsupported(entry, request.task)

    @task(makes="labels", takes="image")
    async def image_classification(self, entry: ModelEntry, request: Request, ctx: RunContext) -> LabelsResult:
        """Labels of `image` with scores (natty's AI-image detector)."""
        raise self._unsupported(entry, request.task)


# The tasks natty knows, in the order menus show them: the `@task` methods of `Backend`, nothing else to edit.
TASKS: tuple[str, ...] = tuple(spec.name for spec in _DECLARED)
# what a task makes: "text", "image", "audio", "video" or "labels" (the kinds of the Result classes)
OUTPUT: dict[str, str] = {spec.name: spec.makes for spec in _DECLARED}
# what a task needs besides its prompt: "image", "audio" or nothing
INPUT: dict[str, str | None] = {spec.name: spec.takes for spec in _DECLARED}


async def collect_text(chunks: AsyncIterator[str], ctx: RunContext) -> str:
    """Accumulate streamed text, reporting the running text and honouring cancellation between chunks."""
    text = ""
    async for piece in chunks:
        ctx.cancel.raise_if_cancelled()
        text += piece
        ctx.report(Progress(text=text))
    return text
