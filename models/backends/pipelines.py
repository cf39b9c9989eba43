"""transformers models in this process: a hub id or a local folder, loaded on first use, run off the event loop.

Chat runs on a causal LM through a per-model `Batcher` (continuous batching, streamed tokens); the other tasks
run transformers pipelines in a worker thread, one call at a time per pipeline. Models load on the GPU when
there is one. A hub id that is not in the local cache is downloaded first with `snapshot_download`, its
progress reported to the job (`Progress(message="downloading <model> 40%")`) and logged to the console.

`check()` policy: a folder must hold a `config.json`; a cached hub id is ready; an uncached one is runnable
only when the Hub answers for it (a quick metadata call), because otherwise the first job would fail, and
never when `HF_HUB_OFFLINE` is set.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.backends.batching import Batcher, GenerationRequest, RequestStopped, pack_linears
from models.base import (
    AudioResult,
    Backend,
    LabelsResult,
    Progress,
    Request,
    RunContext,
    TextResult,
)
from models.catalog import ModelEntry, param_on
from models.errors import BackendError, ErrorKind

log = logging.getLogger("natty.models.pipelines")

# Weight formats transformers does not load with torch; skipped so a download fetches one copy of the weights.
_IGNORE = ["*.onnx", "*.onnx_data", "onnx/*", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.gguf", "openvino/*",
           "coreml/*", "*.mlmodel", "*.mlpackage/*", "tf_model*", "flax_model*", "rust_model*"]
_PROBE_TIMEOUT = 5.0


def pick_device() -> str:
    """cuda when torch sees a GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _looks_like_path(model: str) -> bool:
    """A folder rather than a hub id ("name" or "owner/name")."""
    if model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1:
        return True
    return Path(model).expanduser().exists()


def progress_tqdm(report: Callable[[Progress], None], label: str, min_interval: float = 0.5) -> type:
    """A tqdm class for `snapshot_download` that forwards its byte progress to `report` and the console.

    snapshot_download makes three bars: files fetched, bytes transferred and bytes written; the last one
    (unit "B", not ".transfer") is the one whose total grows to the whole download, so only it is forwarded.
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    class ProgressTqdm(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            name = kwargs.get("name") or ""
            self._forward = kwargs.get("unit") == "B" and not str(name).endswith(".transfer")
            self._done = 0.0
            self._last = 0.0
            self._last_percent = -1
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            if self._forward and n:
                self._done += n
                self._emit()
            return out

        def _emit(self, force: bool = False) -> None:
            total = getattr(self, "total", None) or 0
            if total <= 0:
                return
            fraction = min(1.0, self._done / total)
            percent = int(fraction * 100)
            now = time.monotonic()
            if not force and (percent == self._last_percent or now - self._last < min_interval) and percent < 100:
                return
            self._last, self._last_percent = now, percent
            message = f"downloading {label} {percent}%"
            log.info("%s (%.1f of %.1f MB)", message, self._done / 1e6, total / 1e6)
            report(Progress(fraction=fraction, message=message))

    return ProgressTqdm


@dataclass
class _ChatModel:
    model: Any
    tokenizer: Any
    batcher: Batcher
    max_positions: int | None


class PipelinesBackend(Backend):
    """The transformers half of the `local` backend."""

    kind = "local"

    def __init__(self, *, cache_dir: str | None = None, endpoint: str | None = None, max_batch: int = 8) -> None:
        self.cache_dir = cache_dir  # None: huggingface_hub's default (HF_HUB_CACHE)
        self.endpoint = endpoint  # None: huggingface_hub's default (HF_ENDPOINT)
        self.max_batch = max_batch
        self._loaded: dict[tuple[str, str], Any] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        self._run_locks: dict[tuple[str, str], threading.Lock] = {}
        self._device: str | None = None

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = pick_device()
        return self._device

    # ---- locating and downloading ----

    def _cached_snapshot(self, repo_id: str) -> str | None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return snapshot_download(repo_id, cache_dir=self.cache_dir, local_files_only=True)
        except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
            return None

    def _download(self, repo_id: str, report: Callable[[Progress], None]) -> str:
        from huggingface_hub import HfApi, snapshot_download

        ignore = list(_IGNORE)
        try:
            files = HfApi(endpoint=self.endpoint).list_repo_files(repo_id)
            if any(f.endswith(".safetensors") for f in files):
                ignore += ["*.bin", "*.pt", "*.pth", "*.ckpt"]
        except Exception:  # the download below reports the real problem
            pass
        report(Progress(fraction=0.0, message=f"downloading {repo_id} 0%"))
        log.info("downloading %s into the Hugging Face cache", repo_id)
        path = snapshot_download(
            repo_id, cache_dir=self.cache_dir, endpoint=self.endpoint, ignore_patterns=ignore,
            tqdm_class=progress_tqdm(report, repo_id),
        )
        report(Progress(fraction=1.0, message=f"downloaded {repo_id}"))
        return path

    def _resolve(self, entry: ModelEntry, report: Callable[[Progress], None]) -> str:
        """A local folder for the entry's model, downloading it first if it is an uncached hub id."""
        model = entry.model
        if _looks_like_path(model):
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file():
                raise BackendError(ErrorKind.NOT_CONFIGURED, f"no model files (config.json) in {folder}",
                                   model=entry.name)
            return str(folder)
        cached = self._cached_snapshot(model)
        if cached is not None:
            return cached
        # snapshot_download retries a dead connection for tens of seconds; one quick metadata call fails fast.
        try:
            self._probe(model)
        except BackendError as exc:
            exc.model = entry.name
            raise
        try:
            return self._download(model, report)
        except Exception as exc:
            raise _hub_error(exc, entry) from exc

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        model = entry.model
        if _looks_like_path(model):
            folder = Path(model).expanduser()
            if not folder.is_dir():
                return False, f"folder {folder} does not exist"
            if not (folder / "config.json").is_file():
                return False, f"folder {folder} has no config.json"
            return True, "ok"
        if await asyncio.to_thread(self._cached_snapshot, model) is not None:
            return True, "ok (in the local Hugging Face cache)"
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return False, f"{model} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        try:
            await asyncio.wait_for(asyncio.to_thread(self._probe, model), _PROBE_TIMEOUT + 1)
        except BackendError as exc:
            return False, exc.detail
        except TimeoutError:
            return False, f"{model} is not cached and the Hugging Face Hub did not answer"
        return True, "ok (will download on first use)"

    def _probe(self, repo_id: str) -> None:
        from huggingface_hub import HfApi

        try:
            HfApi(endpoint=self.endpoint).model_info(repo_id, timeout=_PROBE_TIMEOUT)
        except Exception as exc:
            err = _hub_error(exc, None)
            raise BackendError(err.kind, f"{repo_id} is not cached and {err.detail}") from exc

    # ---- loading ----

    def _dtype_name(self, entry: ModelEntry) -> str:
        # Half-precision weights stay half on a GPU; on CPU float32 is the safe default, and bfloat16 (params
        # dtype = "bfloat16") is much faster where the CPU has native bf16 matmuls (AVX512-BF16, AMX).
        return str(entry.params.get("dtype") or ("auto" if self.device == "cuda" else "float32"))

    def _key(self, entry: ModelEntry, kind: str) -> tuple[str, str]:
        return (entry.model, f"{kind}:{self._dtype_name(entry)}")

    async def _get(self, entry: ModelEntry, kind: str, ctx: RunContext, build: Callable[[str, Any], Any]) -> Any:
        """The loaded object of this kind for the entry's model, loading it once in a worker thread."""
        key = self._key(entry, kind)
        if key in self._loaded:
            return self._loaded[key]
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._loaded:
                dtype = _torch_dtype(self._dtype_name(entry))

                def load() -> Any:
                    folder = self._resolve(entry, ctx.report)
                    ctx.report(Progress(message=f"loading {entry.name}"))
                    started = time.monotonic()
                    obj = build(folder, dtype)
                    log.info("loaded %s (%s) on %s in %.1f s", entry.model, kind, self.device,
                             time.monotonic() - started)
                    return obj

                try:
                    self._loaded[key] = await asyncio.to_thread(load)
                except BackendError:
                    raise
                except Exception as exc:
                    log.exception("could not load %s for %s", entry.model, kind)
                    raise BackendError(ErrorKind.NOT_CONFIGURED, f"could not load {entry.model} for {kind}: {exc}",
                                       model=entry.name) from exc
                self._run_locks[key] = threading.Lock()
        return self._loaded[key]

    def _build_chat(self, folder: str, dtype: Any, name: str, packed: Any = True) -> _ChatModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(
            self.device).eval()  # type: ignore[arg-type]  # transformers types to() without self
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        if self.device == "cpu" and param_on(packed):
            if swapped := pack_linears(model, self.max_batch):  # batched decode steps on a CPU: see PackedLinear
                log.info("%s: %d linear layers laid out for oneDNN", name, swapped)
        return _ChatModel(model, tokenizer, Batcher(model, max_batch=self.max_batch, name=name), max_positions)

    def _build_pipeline(self, task: str) -> Callable[[str, Any], Any]:
        def build(folder: str, dtype: Any) -> Any:
            from transformers import pipeline

            # transformers overloads pipeline() per literal task name
            return pipeline(task, model=folder, device=self.device, dtype=dtype)  # type: ignore[call-overload]  # a str

        return build

    async def _run_locked(self, entry: ModelEntry, kind: str, fn: Callable[[], Any]) -> Any:
        """Run a pipeline call in a worker thread; one call at a time per pipeline, as they are not thread-safe."""
        lock = self._run_locks[self._key(entry, kind)]

        def call() -> Any:
            with lock:
                return fn()

        return await asyncio.to_thread(call)

    # ---- chat ----

    def _prompt_ids(self, lm: _ChatModel, request: Request, max_new_tokens: int) -> list[int]:
        tok = lm.tokenizer
        messages = request.messages or [{"role": "user", "content": request.prompt}]
        messages = [{"role": m.get("role", "user"), "content": _text_of(m.get("content"))} for m in messages]
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # some versions return a BatchEncoding
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            # No template: a base model continues the conversation as plain text.
            text = request.prompt if request.messages is None else "\n".join(m["content"] for m in messages)
            ids = tok(text).input_ids
            if not ids and tok.bos_token_id is not None:
                ids = [tok.bos_token_id]
        if lm.max_positions:
            room = max(1, lm.max_positions - max_new_tokens)
            ids = ids[-room:]  # keep the end of a long conversation
        if not ids:
            raise BackendError(ErrorKind.BAD_REQUEST, "empty prompt")
        return ids

    async def chat(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        packed = entry.params.get("packed", True)
        lm: _ChatModel = await self._get(entry, "chat", ctx, lambda f, d: self._build_chat(f, d, entry.name, packed))
        params = {**entry.params, **request.params}
        gen = lm.model.generation_config
        max_new_tokens = int(params.get("max_new_tokens") or params.get("max_tokens") or 256)
        if lm.max_positions:
            max_new_tokens = min(max_new_tokens, lm.max_positions - 1)
        sampling = bool(getattr(gen, "do_sample", False))
        temperature = float(params.get("temperature", (gen.temperature or 1.0) if sampling else 0.0))
        top_k = params.get("top_k", gen.top_k if sampling else None)
        top_p = params.get("top_p", gen.top_p if sampling else None)
        eos: list[int] = []
        if not params.get("ignore_eos"):
            for ids in (gen.eos_token_id, lm.tokenizer.eos_token_id):
                eos += ids if isinstance(ids, list) else [ids] if ids is not None else []
        input_ids = self._prompt_ids(lm, request, max_new_tokens)

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int | _Done] = asyncio.Queue()
        deadline = ctx.deadline
        gen_request = GenerationRequest(
            input_ids, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=int(top_k) if top_k else None, top_p=float(top_p) if top_p is not None else None,
            seed=request.seed, eos_token_ids=eos,
            on_token=lambda t: loop.call_soon_threadsafe(queue.put_nowait, t),
            on_done=lambda e: loop.call_soon_threadsafe(queue.put_nowait, _Done(e)),
            should_stop=lambda: ctx.cancel.cancelled or (deadline is not None and time.monotonic() > deadline),
        )
        lm.batcher.submit(gen_request)
        tokens: list[int] = []
        text = ""
        try:
            while True:
                item = await queue.get()
                batch = [item]
                while not queue.empty():  # decode once for all tokens that arrived together
                    batch.append(queue.get_nowait())
                done = next((b for b in batch if isinstance(b, _Done)), None)
                tokens += [b for b in batch if isinstance(b, int)]
                new_text = lm.tokenizer.decode(tokens, skip_special_tokens=True)
                if new_text != text:
                    text = new_text
                    ctx.report(Progress(text=text, step=len(tokens), total=max_new_tokens))
                if done is not None:
                    break
        finally:
            gen_request.abort()  # no-op once finished; stops the sequence if this coroutine was cancelled
        if isinstance(done.error, RequestStopped):
            ctx.cancel.raise_if_cancelled()
            if deadline is not None and time.monotonic() > deadline:
                raise BackendError(ErrorKind.TIMEOUT, "generation passed its deadline", model=entry.name)
            raise BackendError(ErrorKind.CANCELLED, str(done.error), model=entry.name)
        if done.error is not None:
            raise BackendError(ErrorKind.INTERNAL, f"generation failed: {done.error}", model=entry.name)
        return TextResult(text=text, meta={"tokens": len(tokens), "prompt_tokens": len(input_ids),
                                           "device": self.device})

    # ---- the pipeline tasks ----

    async def text_to_speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        return await self._audio(entry, request, ctx)

    async def text_to_audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        return await self._audio(entry, request, ctx)

    async def _audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        import numpy as np
        import soundfile as sf

        if not request.prompt.strip():
            raise BackendError(ErrorKind.BAD_REQUEST, "nothing to say: the text is empty")
        pipe = await self._get(entry, "text-to-audio", ctx, self._build_pipeline("text-to-audio"))
        params = {**entry.params, **request.params}
        forward = dict(params.get("forward_params") or {})
        generate = dict(params.get("generate_kwargs") or {})
        ctx.cancel.raise_if_cancelled()

        def call() -> Any:
            _seed(request.seed)
            kwargs: dict[str, Any] = {}
            if forward:
                kwargs["forward_params"] = forward
            if generate:
                kwargs["generate_kwargs"] = generate
            return pipe(request.prompt, **kwargs)

        out = await self._run_locked(entry, "text-to-audio", call)
        out = out[0] if isinstance(out, list) else out
        audio = np.asarray(out["audio"], dtype=np.float32)
        rate = int(out["sampling_rate"])
        audio = audio.reshape(-1, audio.shape[-1]).T if audio.ndim > 1 else audio  # (channels, n) -> (n, channels)
        if audio.ndim == 2 and audio.shape[1] == 1:
            audio = audio[:, 0]
        buf = io.BytesIO()
        sf.write(buf, np.clip(audio, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
        return AudioResult(data=buf.getvalue(), format="wav", duration=len(audio) / rate, sample_rate=rate)

    async def image_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        image = _open_image(request.image)
        captioner = await self._get(entry, "image-to-text", ctx, self._build_captioner)
        params = {**entry.params, **request.params}
        max_new_tokens = int(params.get("max_new_tokens", 40))
        ctx.cancel.raise_if_cancelled()

        def call() -> str:
            _seed(request.seed)
            return captioner(image, request.prompt or None, max_new_tokens)

        text = await self._run_locked(entry, "image-to-text", call)
        return TextResult(text=text.strip())

    def _build_captioner(self, folder: str, dtype: Any) -> Callable[[Any, str | None, int], str]:
        """Captioning: an image-text-to-text pipeline when the model has a processor, else encoder-decoder generate.

        transformers 5 folded the image-to-text pipeline into image-text-to-text, which needs a multimodal
        processor; VisionEncoderDecoder checkpoints (ViT-GPT2 and the like) ship only an image processor and a
        tokenizer, so they are driven by hand.
        """
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
        from transformers.processing_utils import ProcessorMixin

        try:
            processor = AutoProcessor.from_pretrained(folder)
        except Exception:
            processor = None
        if isinstance(processor, ProcessorMixin):
            from transformers import pipeline

            pipe = pipeline("image-text-to-text", model=folder, device=self.device, dtype=dtype)

            def run_pipeline(image: Any, prompt: str | None, max_new_tokens: int) -> str:
                outs = pipe(images=image, text=prompt or "", max_new_tokens=max_new_tokens, return_full_text=False)
                out = outs[0] if isinstance(outs, list) else outs
                text = out.get("generated_text", "")
                return text if isinstance(text, str) else _text_of(text[-1].get("content") if text else "")

            return run_pipeline

        images = AutoImageProcessor.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype).to(
            self.device).eval()  # type: ignore[arg-type]  # transformers types to() without self

        def run_model(image: Any, prompt: str | None, max_new_tokens: int) -> str:
            pixels = images(images=image, return_tensors="pt").pixel_values.to(self.device, model.dtype)
            with torch.inference_mode():
                ids = model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens)
            text = tokenizer.decode(ids[0], skip_special_tokens=True)
            return text  # type: ignore[return-value]  # decode() of one sequence is a str

        return run_model

    async def speech_to_text(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        pipe = await self._get(entry, "speech-to-text", ctx, self._build_pipeline("automatic-speech-recognition"))
        rate = int(getattr(pipe.feature_extractor, "sampling_rate", 16000))
        audio = decode_audio(request.audio, rate)
        params = {**entry.params, **request.params}
        ctx.cancel.raise_if_cancelled()

        def call() -> Any:
            kwargs: dict[str, Any] = {}
            if len(audio) > 30 * rate:
                kwargs["chunk_length_s"] = 30  # long audio: transcribe in windows
            if params.get("generate_kwargs"):
                kwargs["generate_kwargs"] = dict(params["generate_kwargs"])
            return pipe({"raw": audio, "sampling_rate": rate}, **kwargs)

        out = await self._run_locked(entry, "speech-to-text", call)
        return TextResult(text=str(out.get("text", "")).strip(), meta={"audio_seconds": round(len(audio) / rate, 2)})

    async def image_classification(self, entry: ModelEntry, request: Request, ctx: RunContext) -> LabelsResult:
        image = _open_image(request.image)
        pipe = await self._get(entry, "image-classification", ctx, self._build_pipeline("image-classification"))
        top_k = int({**entry.params, **request.params}.get("top_k", 5))
        out = await self._run_locked(entry, "image-classification", lambda: pipe(image, top_k=top_k))
        labels = sorted(((str(o["label"]), float(o["score"])) for o in out), key=lambda x: x[1], reverse=True)
        return LabelsResult(labels=labels)

    async def aclose(self) -> None:
        loaded, self._loaded = self._loaded, {}
        for obj in loaded.values():
            if isinstance(obj, _ChatModel):
                await asyncio.to_thread(obj.batcher.close)
        if loaded and self._device == "cuda":
            import torch

            torch.cuda.empty_cache()


@dataclass
class _Done:
    error: BaseException | None


def _text_of(content: Any) -> str:
    """The text of an OpenAI-shaped message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _torch_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise BackendError(ErrorKind.NOT_CONFIGURED, f"unknown dtype {name!r} (use auto, float32, bfloat16, float16)")
    return dtype


def _seed(seed: int | None) -> None:
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)


def _open_image(data: bytes | None) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BackendError(ErrorKind.BAD_REQUEST, "no image was given")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise BackendError(ErrorKind.BAD_REQUEST, "the image could not be read") from exc
    return image.convert("RGB")


def decode_audio(data: bytes | None, rate: int) -> Any:
    """Audio bytes (anything libsndfile reads) as float32 mono at `rate`, resampled by linear interpolation."""
    import numpy as np
    import soundfile as sf

    if not data:
        raise BackendError(ErrorKind.BAD_REQUEST, "no audio was given")
    from models.media import MAX_AUDIO_SECONDS

    try:
        info = sf.info(io.BytesIO(data))  # the header only: refuse what would decode to gigabytes
        too_long = info.samplerate > 0 and info.frames / info.samplerate > MAX_AUDIO_SECONDS
        if not too_long:
            audio, source_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError and RuntimeError subclasses
        raise BackendError(ErrorKind.BAD_REQUEST, "the audio could not be read (use WAV, FLAC or OGG)") from exc
    if too_long:
        raise BackendError(ErrorKind.BAD_REQUEST, f"the audio is longer than {MAX_AUDIO_SECONDS // 60} minutes")
    mono = audio.mean(axis=1)
    if source_rate != rate and len(mono) > 1:
        n = max(1, round(len(mono) * rate / source_rate))
        mono = np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _hub_error(exc: BaseException, entry: ModelEntry | None) -> BackendError:
    """Classify a huggingface_hub failure."""
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    name = entry.name if entry else None
    if isinstance(exc, GatedRepoError):
        return BackendError(ErrorKind.AUTH, "the model is gated on the Hub: accept its terms and set HF_TOKEN",
                            model=name)
    if isinstance(exc, RepositoryNotFoundError):
        return BackendError(ErrorKind.NOT_FOUND, "the model was not found on the Hugging Face Hub", model=name)
    if isinstance(exc, OfflineModeIsEnabled):
        return BackendError(ErrorKind.UNREACHABLE, "HF_HUB_OFFLINE is set, so it cannot be downloaded", model=name)
    if isinstance(exc, BackendError):
        return exc
    return BackendError(ErrorKind.UNREACHABLE, f"the Hugging Face Hub cannot be reached ({type(exc).__name__})",
                        model=name)
