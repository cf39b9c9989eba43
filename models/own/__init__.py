"""natty's own models behind the `local` backend: char-RNN chat, PixelCNN digits and scenes, WaveNet tones, the
natty-tunes melody LSTM, and NVIDIA's Tacotron 2 for speech.

`model = "natty:NAME"` means the bundled checkpoint in `models/own/checkpoints/NAME/` (config.json naming its
`natty_model`, plus model.safetensors); any other folder with such a config.json works too. Models load once
and stay cached; every generation runs in a worker thread, reports progress through `ctx.report` and stops
between steps when `ctx.cancel` is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import random
import re
import threading
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.base import AudioResult, Backend, ImageResult, Progress, Request, RunContext, TextResult
from models.catalog import ModelEntry, param_on
from models.errors import BackendError, ErrorKind
from models.own.charrnn import CharRNN, CharRNNConfig
from models.own.gpt import GPT, GPTConfig
from models.own.pixelcnn import PixelCNN, PixelCNNConfig
from models.own.tunes import TuneLSTM, TuneLSTMConfig
from models.own.wavenet import WaveNet, WaveNetConfig, mu_law_decode, mu_law_encode

CHECKPOINTS = Path(__file__).with_name("checkpoints")
MODEL_TYPES: dict[str, tuple[type[torch.nn.Module], type]] = {
    "charrnn": (CharRNN, CharRNNConfig),
    "gpt": (GPT, GPTConfig),
    "pixelcnn": (PixelCNN, PixelCNNConfig),
    "wavenet": (WaveNet, WaveNetConfig),
    "tunelstm": (TuneLSTM, TuneLSTMConfig),
}
TRAIN_KIND = {"charrnn": "rnn", "gpt": "gpt", "pixelcnn": "pixelcnn", "scenes": "scenes", "wavenet": "wavenet",
              "tunes": "tunes", "instrument": "instrument"}
INSTRUMENTS = ("synthesizer", "wavenet")  # what natty-tunes' `instrument` param may name
INSTRUMENT_NOTES = {"synthesizer": "the melody played by natty-tunes' simple synthesizer",
                    "wavenet": "the melody played by natty's own WaveNet instrument (trained on the synthesizer's "
                               "notes; bass and chords synthesized)"}
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEXT_NOTE = ("natty's own offline model continued your words in the style of Shakespeare's plays; it does not "
             "answer questions or follow instructions: for that, choose a hosted chat model")
NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


# --- checkpoints ----------------------------------------------------------------------------------------------

def save_checkpoint(model: torch.nn.Module, folder: str | Path, info: dict[str, Any] | None = None) -> None:
    """Write model.safetensors and config.json ({"natty_model", "config", ...info})."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = next(k for k, (cls, _) in MODEL_TYPES.items() if isinstance(model, cls))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "model.safetensors"))
    assert isinstance(model, CharRNN | GPT | PixelCNN | WaveNet | TuneLSTM)  # MODEL_TYPES' classes: `name` found it
    meta = {"natty_model": name, "config": model.config.to_dict(), **(info or {})}
    (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The model in `folder` and its config.json, in eval mode on `device`."""
    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    model_cls, config_cls = MODEL_TYPES[meta["natty_model"]]
    model = model_cls(config_cls(**meta["config"]))
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model.to(device).eval(), meta


# --- prompts and media ----------------------------------------------------------------------------------------

DIGIT_FILLER = frozenset("a an the digit number numeral handwritten draw imagine me please and or".split())


def parse_digit(prompt: str) -> int | None:
    """The digit a prompt asks for, as a numeral or an English word ("7", "draw a seven", "digit 3"): only when
    every other word is filler, so that "a 4k photo of a cat" is not taken for a digit. The first if several."""
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    digits = [int(w) if w.isdigit() else DIGIT_WORDS.index(w) for w in words
              if (w.isdigit() and len(w) == 1) or w in DIGIT_WORDS]
    if not digits or any(w not in DIGIT_FILLER and w not in DIGIT_WORDS and not (w.isdigit() and len(w) == 1)
                         for w in words):
        return None
    return digits[0]


def digits_png(x: np.ndarray, n_levels: int, scale: int, rows_done: int | None = None) -> tuple[bytes, int, int]:
    """Levels (B, H, W) as dark ink on white, nearest-neighbour upscaled, side by side; unsampled rows grey."""
    from PIL import Image

    b, h, w = x.shape
    grey = (255 - x.astype(np.float64) * 255 / (n_levels - 1)).astype(np.uint8)
    if rows_done is not None:
        grey[:, rows_done:] = 200
    cols = min(b, 4)
    rows = -(-b // cols)
    sheet = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), 255, np.uint8)
    for i in range(b):
        r, c = divmod(i, cols)
        sheet[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = grey[i]
    img = Image.fromarray(sheet, "L").resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), img.width, img.height


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono float audio in [-1, 1] as a 16-bit PCM WAV file."""
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return buf.getvalue()


def _prompt_text(request: Request) -> str:
    if request.prompt:
        return request.prompt
    for msg in reversed(request.messages or []):
        if msg.get("role") == "user":
            content = msg.get("content")
            if isinstance(content, list):  # OpenAI content parts
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _cancelled() -> BackendError:
    return BackendError(ErrorKind.CANCELLED, "cancelled")


class OwnModelsBackend(Backend):
    """Serves natty's own checkpoints (and tacotron2) in this process."""

    kind = "local"

    def __init__(self) -> None:
        self._models: dict[str, Any] = {}
        self._meta: dict[str, dict] = {}  # each loaded checkpoint's config.json
        self._lock = threading.Lock()

    # -- loading --

    @staticmethod
    def folder(entry: ModelEntry) -> Path:
        if entry.model.startswith("natty:"):
            return CHECKPOINTS / entry.model.removeprefix("natty:")
        return Path(entry.model)

    def _load_with_meta(self, entry: ModelEntry, expected: str | tuple[str, ...]) -> tuple[Any, dict]:
        folder = self.folder(entry)
        key = str(folder.resolve())
        with self._lock:
            if key not in self._models:
                if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
                    raise BackendError(ErrorKind.NOT_CONFIGURED, self._missing(entry, folder))
                model, meta = load_checkpoint(folder)
                self._models[key], self._meta[key] = model, meta
            model, meta = self._models[key], self._meta.get(key, {})
        name = next(k for k, (cls, _) in MODEL_TYPES.items() if isinstance(model, cls))
        allowed = (expected,) if isinstance(expected, str) else expected
        if name not in allowed:
            raise BackendError(ErrorKind.UNSUPPORTED, f"{entry.name} is a {name}, not a {' or '.join(allowed)}")
        return model, meta

    @staticmethod
    def _missing(entry: ModelEntry, folder: Path) -> str:
        kind = TRAIN_KIND.get(folder.name, "rnn|pixelcnn|wavenet")
        return (f"{entry.name}: checkpoint files missing in {folder} (config.json, model.safetensors); "
                f"make them with `natty train {kind} --out {folder}`")

    def _is_tacotron(self, entry: ModelEntry) -> bool:
        return entry.model == "natty:tacotron2"

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        if self._is_tacotron(entry):
            from models.backends import tacotron

            return await asyncio.to_thread(tacotron.check)
        folder = self.folder(entry)
        try:
            meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False, self._missing(entry, folder)
        if meta.get("natty_model") not in MODEL_TYPES or not (folder / "model.safetensors").is_file():
            return False, self._missing(entry, folder)
        if str(entry.params.get("instrument", "")).lower() == "wavenet":  # natty-tunes-wavenet needs its instrument too
            which = dataclasses.replace(entry, model=str(entry.params.get("instrument_model", "natty:instrument")))
            folder = self.folder(which)
            if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
                return False, self._missing(which, folder)
        return True, "ok"

    async def aclose(self) -> None:
        with self._lock:
            self._models.clear()
            self._meta.clear()

    # -- tasks --

    async def chat(self, entry: ModelEntry, request: Request, ctx: RunContext) -> TextResult:
        """The char-RNN or the GPT continues the prompt (or the last user message): the reply starts where the
        prompt ends and, for a model trained on real writing, ends at a word boundary. meta["note"] says what
        the model is, since it continues text rather than answering it."""
        params = {**entry.params, **request.params}
        n = max(1, min(int(params.get("max_new_tokens", 400)), 4000))
        temperature = float(params.get("temperature", 0.8))
        top_k = int(params["top_k"]) if params.get("top_k") else None
        prime = _prompt_text(request)[-entry.max_prompt_chars :]
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        model, meta = await asyncio.to_thread(self._load_with_meta, entry, ("charrnn", "gpt"))
        whole_words = meta.get("data") == "shakespeare"

        def work() -> str:
            def on_char(text: str) -> bool:
                if len(text) % 8 == 0 or len(text) == n:
                    ctx.report(Progress(fraction=min(1.0, len(text) / n), step=len(text), total=n, text=text))
                return ctx.cancel.cancelled

            text = model.generate(prime, n, temperature=temperature, top_k=top_k, seed=seed, callback=on_char,
                                  whole_words=whole_words)
            ctx.cancel.raise_if_cancelled()
            return text

        text = await asyncio.to_thread(work)
        result_meta: dict[str, Any] = {"seed": seed, "temperature": temperature, "top_k": top_k}
        if whole_words:  # shown under the prompt it continues, with what made it
            result_meta.update(note=TEXT_NOTE, continues=True)
        return TextResult(text=text, meta=result_meta)

    async def text_to_image(self, entry: ModelEntry, request: Request, ctx: RunContext) -> ImageResult:
        """A digit PixelCNN draws the digit the prompt names; a scene PixelCNN (a checkpoint trained on
        `scenes`) the shapes, colours and places it names. The result's meta["note"] says what was drawn."""
        params = {**entry.params, **request.params}
        count = max(1, min(int(params.get("count", 1)), 16))
        size = max(8, min(int(params.get("size", 256)), 1024))
        temperature = float(params.get("temperature", 1.0))
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        model, meta = await asyncio.to_thread(self._load_with_meta, entry, "pixelcnn")
        if meta.get("data") == "scenes":
            # classifier-free guidance: the checkpoint's own (config.guidance) unless the catalog or request sets
            # guidance_scale, the name the hosted image models take for the same u + g (c - u)
            guidance = max(1.0, min(float(params.get("guidance_scale", model.config.guidance)), 8.0))
            return await self._draw_scene(request, ctx, model, count, size, temperature, guidance, seed)
        digit = parse_digit(request.prompt)
        if digit is None:
            raise BackendError(ErrorKind.BAD_REQUEST,
                               f"{entry.name} draws handwritten digits: prompt a digit 0-9, e.g. /imagine 7")

        def work() -> tuple[bytes, int, int]:
            cfg = model.config
            scale = max(1, size // cfg.width)

            def on_row(row: int, x: np.ndarray) -> bool:
                preview, _, _ = digits_png(x, cfg.n_levels, scale=max(1, 128 // cfg.width), rows_done=row + 1)
                ctx.report(Progress(fraction=(row + 1) / cfg.height, step=row + 1, total=cfg.height,
                                    message=f"row {row + 1}/{cfg.height}", preview=preview))
                return ctx.cancel.cancelled

            x = model.generate([digit] * count, seed=seed, temperature=temperature, callback=on_row)
            ctx.cancel.raise_if_cancelled()
            return digits_png(x, cfg.n_levels, scale)

        png, width, height = await asyncio.to_thread(work)
        return ImageResult(data=png, width=width, height=height,
                           meta={"seed": seed, "digit": digit, "count": count, "temperature": temperature,
                                 "note": f"drew: a handwritten {digit}"})

    async def _draw_scene(self, request: Request, ctx: RunContext, model: PixelCNN, count: int, size: int,
                          temperature: float, guidance: float, seed: int) -> ImageResult:
        from models.own import scenes

        scene, understood, ignored = scenes.parse_prompt(request.prompt, np.random.default_rng(seed))
        if scene is None:
            raise BackendError(ErrorKind.BAD_REQUEST, scenes.CAN_DRAW)
        note = f"drew: {understood}" + (f"; ignored: {', '.join(repr(w) for w in ignored)}" if ignored else "")
        cfg = model.config
        scale = max(1, size // cfg.width)

        def work() -> tuple[bytes, int, int]:
            def on_row(row: int, x: np.ndarray) -> bool:
                if row % 4 == 3 or row == cfg.height - 1:
                    preview, _, _ = scenes.png_grid(x, scale=max(1, 128 // cfg.width), rows_done=row + 1)
                    ctx.report(Progress(fraction=(row + 1) / cfg.height, step=row + 1, total=cfg.height,
                                        message=f"row {row + 1}/{cfg.height}", preview=preview))
                return ctx.cancel.cancelled

            tokens = np.repeat(scene.tokens()[None], count, axis=0)
            x = model.generate(tokens, seed=seed, temperature=temperature, guidance=guidance, callback=on_row)
            ctx.cancel.raise_if_cancelled()
            return scenes.png_grid(x, scale)

        png, width, height = await asyncio.to_thread(work)
        return ImageResult(data=png, width=width, height=height,
                           meta={"seed": seed, "count": count, "temperature": temperature, "guidance_scale": guidance,
                                 "drew": understood,
                                 "ignored": ignored, "note": note})

    async def text_to_audio(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        """A WaveNet continues a synthesized onset of the tone or chord the prompt names; a tune LSTM
        (natty-tunes) plays a melody in the key, mode, meter and tempo it names (see _play_tune)."""
        params = {**entry.params, **request.params}
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        loaded, _ = await asyncio.to_thread(self._load_with_meta, entry, ("wavenet", "tunelstm"))
        if isinstance(loaded, TuneLSTM):
            return await self._play_tune(entry, request, ctx, loaded, params, seed)
        seconds = max(0.1, min(float(params.get("seconds", 1.0)), 10.0))
        temperature = float(params.get("temperature", 1.0))
        prompt = request.prompt or ""
        kind = "chord" if "chord" in prompt.lower() else "tone" if re.search(r"tone|note", prompt, re.I) else None
        m = re.search(r"\b([A-G])([#b]?)(m(?:inor)?)?(?![A-Za-z])", prompt)
        root = None if m is None else 57 + (NOTE_NAMES[m.group(1)] + {"#": 1, "b": -1, "": 0}[m.group(2)] - 9) % 12
        minor = True if (m and m.group(3)) or "minor" in prompt.lower() else (False if "major" in prompt.lower()
                                                                              else None)

        def work() -> tuple[np.ndarray, int, str]:
            from models.own import data

            model: WaveNet = loaded
            cfg = model.config
            rng = np.random.default_rng(seed)
            sound = kind or data.SOUND_KINDS[int(rng.integers(0, len(data.SOUND_KINDS)))]
            # WaveNet continues audio: prime it with the onset of a synthesized note of the asked kind and pitch.
            onset = data.synth(sound, rng, seconds=cfg.receptive_field / cfg.sample_rate, sr=cfg.sample_rate,
                               root=root, minor=minor)
            g = data.SOUND_KINDS.index(sound) if cfg.n_global else None
            n = int(seconds * cfg.sample_rate)

            def on_chunk(done: int, _: np.ndarray) -> bool:
                ctx.report(Progress(fraction=done / n, step=done, total=n,
                                    message=f"{done / cfg.sample_rate:.1f}/{seconds:.1f} s"))
                return ctx.cancel.cancelled

            ctx.report(Progress(fraction=0.0, step=0, total=n, message="priming"))
            q = model.generate(n, g=g, seed=seed, temperature=temperature, prime=mu_law_encode(onset)[None],
                               callback=on_chunk, every=max(1, cfg.sample_rate // 10))
            ctx.cancel.raise_if_cancelled()
            return mu_law_decode(q[0], cfg.n_classes), cfg.sample_rate, sound

        audio, sr, sound = await asyncio.to_thread(work)
        return AudioResult(data=wav_bytes(audio, sr), duration=len(audio) / sr, sample_rate=sr,
                           meta={"seed": seed, "kind": sound, "temperature": temperature})

    async def _play_tune(self, entry: ModelEntry, request: Request, ctx: RunContext, model: TuneLSTM,
                         params: dict[str, Any], seed: int) -> AudioResult:
        """natty-tunes: the prompt's key, mode, meter, tempo, mood and length, a melody sampled bar by bar, a bass
        and chords by rule, rendered by a small synthesizer, or, with params instrument = "wavenet", the melody
        played by the WaveNet instrument (the checkpoint params instrument_model names, natty:instrument unless
        given); the score comes along as tune.mid."""
        from models.own import tunes

        temperature = float(params.get("temperature", 1.0))
        in_key = param_on(params.get("in_key", True))  # keep to the scale
        instrument = str(params.get("instrument", "synthesizer")).lower()
        if instrument not in INSTRUMENTS:
            raise BackendError(ErrorKind.BAD_REQUEST, f"{entry.name}: instrument must be one of "
                                                      f"{', '.join(INSTRUMENTS)}, not {instrument!r}")
        wavenet = None
        if instrument == "wavenet":
            which = dataclasses.replace(entry, model=str(params.get("instrument_model", "natty:instrument")))
            wavenet, _ = await asyncio.to_thread(self._load_with_meta, which, "wavenet")
            if not wavenet.config.n_local:
                raise BackendError(ErrorKind.NOT_CONFIGURED, f"{which.model} is a WaveNet without local "
                                                             "conditioning, not an instrument")
        wave_temperature = float(params.get("instrument_temperature", 1.0))
        req, picked, ignored = tunes.parse_prompt(request.prompt or _prompt_text(request), np.random.default_rng(seed))

        def work() -> tunes.Played:
            def on_bar(done: int) -> bool:
                ctx.report(Progress(fraction=done / req.n_bars, step=done, total=req.n_bars,
                                    message=f"bar {done}/{req.n_bars}"))
                return ctx.cancel.cancelled

            def on_audio(done: int, total: int) -> bool:
                sr = wavenet.config.sample_rate if wavenet is not None else 1
                ctx.report(Progress(fraction=done / total, step=done, total=total,
                                    message=f"wavenet playing {done / sr:.1f}/{total / sr:.1f} s"))
                return ctx.cancel.cancelled

            ctx.report(Progress(fraction=0.0, step=0, total=req.n_bars, message=req.describe()))
            played = tunes.play(model, req, seed=seed, temperature=temperature, callback=on_bar, in_key=in_key,
                                instrument=wavenet, instrument_callback=on_audio,
                                instrument_temperature=wave_temperature)
            ctx.cancel.raise_if_cancelled()
            if played.melody is not None:
                on_audio(len(played.melody), len(played.melody))
            return played

        played = await asyncio.to_thread(work)
        note = f"played: {req.describe()}; {INSTRUMENT_NOTES[played.instrument]}"
        if picked:
            note += f"; {'nothing musical asked, so ' if len(picked) >= 5 else ''}picked: {', '.join(picked)}"
        if ignored:
            note += f"; ignored: {', '.join(repr(w) for w in ignored[:8])}" + (" …" if len(ignored) > 8 else "")
        note += f"\nnotes: {tunes.notes_text(played.bars, limit=400)}"
        return AudioResult(data=wav_bytes(played.audio, played.sample_rate),
                           duration=len(played.audio) / played.sample_rate, sample_rate=played.sample_rate,
                           meta={"seed": seed, "temperature": temperature, "in_key": in_key,
                                 "instrument": played.instrument, "request": dataclasses.asdict(req),
                                 "note": note},
                           extra_files=[("tune.mid", played.midi)])

    async def text_to_speech(self, entry: ModelEntry, request: Request, ctx: RunContext) -> AudioResult:
        if not self._is_tacotron(entry):
            raise self._unsupported(entry, "text-to-speech")
        text = request.prompt.strip()
        if not text:
            raise BackendError(ErrorKind.BAD_REQUEST, "give some text to speak")
        ok, why = await self.check(entry)
        if not ok:
            raise BackendError(ErrorKind.NOT_CONFIGURED, why)

        def work() -> np.ndarray:
            from models.backends import tacotron

            with self._lock:
                tts = self._models.get("tacotron2")
                if tts is None:
                    tts = tacotron.Tacotron2TTS(report=lambda m: ctx.report(Progress(message=m)))
                    self._models["tacotron2"] = tts
            ctx.cancel.raise_if_cancelled()
            ctx.report(Progress(fraction=0.5, message="synthesizing"))
            return tts.synthesize(text)

        audio = await asyncio.to_thread(work)
        sr = 22050
        return AudioResult(data=wav_bytes(audio, sr), duration=len(audio) / sr, sample_rate=sr)
