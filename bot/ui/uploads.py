"""Fit result files under Discord's upload limit: re-encode images (PNG to WebP or JPEG, scaled down when it
must) and audio (WAV to OGG/Opus, mono and lower rates when it must), keep natty's label through every
re-encoding, and say in the user's language what was changed or left out. Pure and local: no network, no
Discord calls; sizes are in bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import discord
import numpy as np
import soundfile as sf
from PIL import Image, ImageOps, ImageSequence

from bot.i18n import t
from bot.ui import provenance  # provenance never imports uploads
from bot.ui.delivery import DEFAULT_FILE_LIMIT, MAX_FILES, human_size
from models.media import MAX_AUDIO_SECONDS, detect_format, mime_type


def upload_limit(recorded: int | None) -> int:
    """The upload limit a message may use: the one Discord gave the interaction it answers (kept in the job or
    session that came of it), else Discord's smallest."""
    return recorded or DEFAULT_FILE_LIMIT


class TooLarge(Exception):
    """A file that cannot be made to fit the upload limit."""

    def __init__(self, size: int, limit: int, filename: str, reason: str | None = None,
                 **values: Any) -> None:
        self.size = size
        self.limit = limit
        self.filename = filename
        self.reason = reason  # a "delivery.why.<reason>" key of the message catalogs, filled with `values`
        self.values = values
        super().__init__(self.user_message)

    @property
    def user_message(self) -> str:
        """One sentence a user can read (in English)."""
        return self.message("en-US")

    def message(self, locale: str | None) -> str:
        """That sentence in `locale`."""
        values = dict(filename=self.filename, size=human_size(self.size), limit=human_size(self.limit))
        if self.reason:
            return t("delivery.too_large_because", locale, **values,
                     reason=t(f"delivery.why.{self.reason}", locale, **self.values))
        return t("delivery.too_large", locale, **values)


@dataclass(frozen=True)
class Fitted:
    """A file ready to upload, with a note for the user when it was changed to fit."""

    data: bytes
    filename: str
    note: str | None  # in English
    content_type: str
    note_values: dict[str, Any] | None = field(default=None, compare=False)  # to say the note in other languages

    def localized_note(self, locale: str | None) -> str | None:
        """The note in `locale`."""
        return _note_text(locale, **self.note_values) if self.note_values else self.note

    def to_file(self, *, spoiler: bool = False, description: str | None = None) -> discord.File:
        """A discord.File for a send or an edit."""
        return discord.File(io.BytesIO(self.data), self.filename, spoiler=spoiler, description=description)


@dataclass(frozen=True)
class FittedFiles:
    """The files of one message after fitting: what will be sent, and what could not be."""

    files: list[Fitted]
    skipped: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """Every line the user should read: re-encodings first, then what was left out."""
        return [f.note for f in self.files if f.note] + self.skipped


_EXTENSIONS = {"jpeg": "jpg"}
_LABELS = {"jpeg": "JPEG", "webp": "WebP", "ogg": "OGG"}


def _rename(filename: str, fmt: str) -> str:
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return f"{stem}.{_EXTENSIONS.get(fmt, fmt)}"


def _label(fmt: str) -> str:
    return _LABELS.get(fmt, fmt.upper())


def _note_values(src: str, size: int, target: str, new_size: int, limit: int,
                 scaled: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    return dict(src=_label(src), size=human_size(size), target=target, new_size=human_size(new_size),
                limit=human_size(limit), scaled=scaled)


def _note_text(locale: str | None, *, scaled: tuple[int, int, int, int] | None = None, target: str = "",
               **values: Any) -> str:
    """"Re-encoded from PNG (12 MB) to WebP (1.9 MB) to fit …", in `locale`."""
    extra = t("delivery.scaled", locale, w=scaled[0], h=scaled[1], to_w=scaled[2], to_h=scaled[3]) if scaled else ""
    target = target.replace(" mono ", f" {t('delivery.mono', locale)} ").replace(
        " stereo ", f" {t('delivery.stereo', locale)} ")
    return t("delivery.reencoded", locale, target=target, extra=extra, **values)


def _fitted(data: bytes, filename: str, values: dict[str, Any], content_type: str) -> Fitted:
    return Fitted(data, filename, _note_text("en-US", **values), content_type, values)


def fit_file(data: bytes, filename: str, limit: int) -> Fitted:
    """Return the file unchanged if it fits, else a smaller re-encoding with a note; raise TooLarge.

    Images (PNG, JPEG, WebP, GIF) go to WebP, then JPEG, then smaller sizes; audio (WAV, FLAC, OGG, MP3)
    to OGG/Opus (OGG/Vorbis where Opus is missing), then mono, then MP3. Video and other files are never
    re-encoded. The format is read from the bytes, not the name. natty's provenance label is carried over.
    """
    fmt = detect_format(data)
    if len(data) <= limit:
        return Fitted(data, filename, None, mime_type(fmt, filename))
    if fmt in ("png", "jpeg", "webp", "gif"):
        return _fit_image(data, filename, fmt, limit)
    if fmt in ("wav", "flac", "ogg", "mp3"):
        return _fit_audio(data, filename, fmt, limit)
    if fmt in ("mp4", "webm"):
        raise TooLarge(len(data), limit, filename, "video")
    raise TooLarge(len(data), limit, filename)


def fit_files(files: Iterable[tuple[str, bytes]], limit: int, max_files: int = MAX_FILES,
              locale: str | None = None) -> FittedFiles:
    """Fit each (filename, data) pair; files that cannot fit, or past `max_files`, become skip notes."""
    fitted: list[Fitted] = []
    skipped: list[str] = []
    extra = 0
    for filename, data in files:
        if len(fitted) >= max_files:
            extra += 1
            continue
        try:
            fitted.append(fit_file(data, filename, limit))
        except TooLarge as e:
            skipped.append(e.message(locale))
    if extra:
        key = "delivery.more_files" if extra > 1 else "delivery.one_more_file"
        skipped.append(t(key, locale, count=extra, max=max_files))
    return FittedFiles(fitted, skipped)


def _carry_provenance(original: bytes, new: bytes, fmt: str) -> bytes:
    """The re-encoded file with the original's natty label, so a re-encoding never loses it."""
    try:
        found = provenance.read(original)["natty"]
        return provenance.stamp(new, fmt, found) if found else new
    except ValueError:  # a label is a courtesy; never fail a delivery over it
        return new


def _label_reserve(original: bytes) -> int:
    """Room to keep for the natty label when an encoder searches for a size (audio, where it is costly to
    check each try with the label on). The label's JSON appears at most twice in any format's tags."""
    try:
        found = provenance.read(original)["natty"]
    except ValueError:
        return 0
    return 2 * len(found.to_json()) + 512 if found else 0


# Image re-encoding ladder.
_WEBP_QUALITIES = (90, 80, 70)
_JPEG_QUALITIES = (85, 70, 50)
_SCALE_STEP = 0.75
_MIN_SIDE = 256
_AIM = 0.95  # aim a little under the limit so one try usually lands


def _encode_image(frames: list[Image.Image], fmt: str, quality: int, exif: bytes | None, duration: Any) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {"quality": quality}
    if exif:
        options["exif"] = exif
    if fmt == "webp":
        options["method"] = 4
        if len(frames) > 1:
            options.update(save_all=True, append_images=frames[1:], duration=duration, loop=0)
        frames[0].save(out, "WEBP", **options)
    else:
        frames[0].convert("RGB").save(out, "JPEG", optimize=True, **options)
    return out.getvalue()


def _has_alpha(im: Image.Image) -> bool:
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        alpha = im.convert("RGBA").getchannel("A")
        return alpha.getextrema()[0] < 255  # type: ignore[operator]  # one band: (min, max)
    return False


def _fit_image(data: bytes, filename: str, src: str, limit: int) -> Fitted:
    try:
        im = Image.open(io.BytesIO(data))
        n_frames = getattr(im, "n_frames", 1)
        duration = im.info.get("duration", 100)
        exif_obj = im.getexif()
        # Re-encoding drops the orientation tag, so bake it in.
        frames = [ImageOps.exif_transpose(f.copy()) for f in ImageSequence.Iterator(im)]
    except Exception as e:
        raise TooLarge(len(data), limit, filename, "unreadable_image") from e
    alpha = _has_alpha(frames[0])
    frames = [f.convert("RGBA" if alpha else "RGB") for f in frames]
    if 0x0112 in exif_obj:
        del exif_obj[0x0112]
    exif = exif_obj.tobytes() if len(exif_obj) else None
    animated = n_frames > 1
    formats = ["webp"] if animated or alpha else ["webp", "jpeg"]
    if src == "webp" and not animated and not alpha:
        formats = ["jpeg", "webp"]

    best: tuple[int, str, int] | None = None  # smallest (size, format, quality) seen at full size
    for fmt in formats:
        for quality in _WEBP_QUALITIES if fmt == "webp" else _JPEG_QUALITIES:
            out = _carry_provenance(data, _encode_image(frames, fmt, quality, exif, duration), fmt)
            if len(out) <= limit:  # checked with the label on: it is part of what uploads
                return _fitted(
                    out,
                    _rename(filename, fmt),
                    _note_values(src, len(data), _label(fmt), len(out), limit),
                    mime_type(fmt),
                )
            if best is None or len(out) < best[0]:
                best = (len(out), fmt, quality)
            if len(out) > 2 * limit:
                break  # lower quality alone will not close a gap this large

    assert best is not None
    size, fmt, _ = best
    quality = 80 if fmt == "webp" else 75
    w, h = frames[0].size
    floor = min(1.0, _MIN_SIDE / max(w, h))
    # Size falls roughly with pixel count, so aim each try from the last size; never shrink a side by
    # less than _SCALE_STEP at a time (or more than half), and stop at the floor.
    scale = 1.0
    while scale > floor:
        step = min(_SCALE_STEP, max(0.5, _AIM * math.sqrt(limit / size)))
        scale = max(scale * step, floor)
        size_to = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = [f.resize(size_to, Image.Resampling.LANCZOS) for f in frames]
        out = _carry_provenance(data, _encode_image(small, fmt, quality, exif, duration), fmt)
        if len(out) <= limit:
            return _fitted(
                out,
                _rename(filename, fmt),
                _note_values(src, len(data), _label(fmt), len(out), limit, (w, h, size_to[0], size_to[1])),
                mime_type(fmt),
            )
        size = len(out)
    raise TooLarge(len(data), limit, filename, "scaled", px=_MIN_SIDE)


# Audio re-encoding. libsndfile maps a compression level to a bitrate (0 = best, 1 = smallest); for
# Opus that is about 256 kbps per channel times (1 - level), down to 6 kbps. Each configuration is
# searched for the best level that fits, on an excerpt first for long audio.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_EXCERPT_SECONDS = 10.0
_FULL_ENCODE_UNDER = 30.0
_MONO_BELOW_BPS = 48_000  # under this, one good channel beats two poor ones
# (container, codec, mono, sample rate or None for the source's, best level tried, highest level)
_Config = tuple[str, str, bool, int | None, float, float]


def _audio_configs(opus: bool, channels: int, target_bps: float) -> list[_Config]:
    if opus:
        configs: list[_Config] = [
            ("OGG", "OPUS", False, None, 0.75, 1.0),
            ("OGG", "OPUS", True, None, 0.75, 1.0),
        ]
    else:
        # Vorbis cannot go much under 50 kbps at 48 kHz, so lower the sample rate, then try MP3.
        configs = [("OGG", "VORBIS", mono, None, 0.5, 1.0) for mono in (False, True)]
        configs += [("OGG", "VORBIS", True, rate, 0.5, 1.0) for rate in (22050, 11025)]
        configs += [("MP3", "MPEG_LAYER_III", True, rate, 0.5, 0.99) for rate in (16000, 8000)]
    if channels > 1 and target_bps < _MONO_BELOW_BPS:
        configs = [c for c in configs if c[2]]
    return configs


def _resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample (frames, channels) float audio; polyphase filtering when scipy is present."""
    if sr_from == sr_to:
        return x
    try:
        from scipy.signal import resample_poly
    except ImportError:
        # scipy comes with the local extra only; linear interpolation is fine for a last-resort encode.
        n_out = round(len(x) * sr_to / sr_from)
        t_out = np.arange(n_out) * (sr_from / sr_to)
        cols = [np.interp(t_out, np.arange(len(x)), x[:, c]) for c in range(x.shape[1])]
        return np.stack(cols, axis=1).astype(np.float32)
    g = math.gcd(sr_from, sr_to)
    return resample_poly(x, sr_to // g, sr_from // g, axis=0).astype(np.float32)


def _encode_rate(codec: str, container: str, rate: int) -> int:
    if codec == "OPUS" and rate not in _OPUS_RATES:
        return 48000 if rate > 24000 else min(r for r in _OPUS_RATES if r >= rate)
    if container == "MP3" and rate not in _MP3_RATES:
        return 44100
    return rate


class _Prepared:
    """Mono mixes and resamplings of one signal, made once however many rungs use them."""

    def __init__(self, x: np.ndarray, sr: int) -> None:
        self.x, self.sr = x, sr
        self._cache: dict[tuple[bool, int], np.ndarray] = {}

    def get(self, mono: bool, rate: int) -> np.ndarray:
        key = (mono and self.x.shape[1] > 1, rate)
        if key not in self._cache:
            x = self.x.mean(axis=1, keepdims=True) if key[0] else self.x
            self._cache[key] = np.clip(_resample(x, self.sr, rate), -1.0, 1.0)
        return self._cache[key]


def _encode_audio(prep: _Prepared, config: _Config, level: float) -> tuple[bytes, int, int]:
    """Encode at one level; returns (bytes, sample rate, channels)."""
    container, codec, mono, rate, _, _ = config
    target = _encode_rate(codec, container, rate or prep.sr)
    x = prep.get(mono, target)
    out = io.BytesIO()
    sf.write(out, x, target, format=container, subtype=codec, compression_level=level)
    return out.getvalue(), target, x.shape[1]


def _search_level(prep: _Prepared, config: _Config, limit: float, level: float) -> tuple[float, bytes] | None:
    """The first level from `level` up whose encoding fits `limit`, aiming from each miss."""
    top = config[5]
    for _ in range(6):
        out, _, _ = _encode_audio(prep, config, level)
        if len(out) <= limit:
            return level, out
        if level >= top:
            return None
        level = min(top, 1 - (1 - level) * limit / len(out) * 0.93)
    return None


def _opus_available() -> bool:
    return "OPUS" in sf.available_subtypes("OGG")


def _decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    if audio_duration(data) > MAX_AUDIO_SECONDS:  # the header alone: never decode hours of samples
        raise ValueError(f"longer than {MAX_AUDIO_SECONDS} seconds")
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return x, sr


def _describe_audio(codec: str, size: int, seconds: float, rate: int, channels: int) -> str:
    name = {"OPUS": "OGG/Opus", "VORBIS": "OGG/Vorbis"}.get(codec, "MP3")
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels} channels")
    khz = f"{rate / 1000:g}"
    return f"{name} {round(size * 8 / seconds / 1000)} kbps {layout} {khz} kHz"


def _fit_audio(data: bytes, filename: str, src: str, limit: int) -> Fitted:
    try:
        x, sr = _decode_audio(data)
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise TooLarge(len(data), limit, filename, "unreadable_audio") from e
    seconds = len(x) / sr
    if seconds <= 0:
        raise TooLarge(len(data), limit, filename, "no_audio")
    whole = _Prepared(x, sr)
    short = seconds <= _FULL_ENCODE_UNDER
    excerpt = whole if short else _Prepared(x[: int(_EXCERPT_SECONDS * sr)], sr)
    share = len(excerpt.x) / len(x)
    budget = limit - _label_reserve(data)  # the label carried over must fit too
    for config in _audio_configs(_opus_available(), x.shape[1], budget * 8 / seconds):
        try:
            # Headers weigh more in a short excerpt, so its share of the limit errs small.
            found = _search_level(excerpt, config, budget * share, config[4])
            if found and not short:
                found = _search_level(whole, config, budget, found[0])
            if not found:
                continue
            _, out = found
        except (sf.LibsndfileError, RuntimeError, ValueError):
            continue  # this libsndfile lacks the encoder or the setting
        fmt = "ogg" if config[0] == "OGG" else "mp3"
        out = _carry_provenance(data, out, fmt)
        if len(out) > limit:
            continue
        rate = _encode_rate(config[1], config[0], config[3] or sr)
        channels = 1 if config[2] else x.shape[1]
        target = _describe_audio(config[1], len(out), seconds, rate, channels)
        return _fitted(out, _rename(filename, fmt), _note_values(src, len(data), target, len(out), limit),
                       mime_type(fmt))
    raise TooLarge(len(data), limit, filename, "mono_audio")


def audio_duration(data: bytes) -> float:
    """Length of WAV/FLAC/OGG/MP3 audio in seconds; ValueError if it cannot be read."""
    try:
        info = sf.info(io.BytesIO(data))
    except Exception as e:
        raise ValueError(f"not readable audio: {e}") from e
    return info.frames / info.samplerate if info.samplerate else 0.0


def to_discord_audio(data: bytes) -> tuple[bytes, str, float]:
    """Audio as Discord plays it inline: WAV/FLAC become OGG/Opus; OGG/MP3 pass through.

    Returns (bytes, extension without dot, duration in seconds). Opus is written at 8/12/16/24/48 kHz
    (others are resampled to 48 kHz); where this libsndfile lacks Opus, OGG/Vorbis is written instead.
    """
    fmt = detect_format(data)
    if fmt in ("ogg", "mp3"):
        return data, fmt, audio_duration(data)
    if fmt not in ("wav", "flac"):
        raise ValueError("not WAV, FLAC, OGG or MP3 audio")
    x, sr = _decode_audio(data)
    codec = "OPUS" if _opus_available() else "VORBIS"
    # Level 0.6 is about 100 kbps for Opus: transparent for speech and music at a fraction of WAV.
    out, _, _ = _encode_audio(_Prepared(x, sr), ("OGG", codec, False, None, 0.6, 1.0), 0.6)
    return _carry_provenance(data, out, "ogg"), "ogg", len(x) / sr
