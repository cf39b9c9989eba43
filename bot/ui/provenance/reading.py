"""`read`: natty's label and other generators' traces (`GENERATOR_HINTS`, EXIF, text, XMP, C2PA) in any file."""

from __future__ import annotations

import re
import struct
import zlib
from typing import Any

from bot.ui.provenance.exif import _exif_dict
from bot.ui.provenance.flac import _flac_blocks
from bot.ui.provenance.id3 import _mp3_tags
from bot.ui.provenance.jpeg import _jpeg_segments
from bot.ui.provenance.limits import MAX_HINT_TEXT, TooLargeToRead, open_image
from bot.ui.provenance.ogg import _ogg_tags
from bot.ui.provenance.png import _png_chunks, _png_texts
from bot.ui.provenance.record import PROVENANCE_KEY, VORBIS_KEY, Provenance
from bot.ui.provenance.riff import _info_entries, _riff_chunks
from bot.ui.provenance.vorbis import _comments_dict, _vorbis_comments
from models.media import detect_format  # one sniffer for the whole bot

# Metadata that betrays an AI generator: (label, metadata keys that only it writes, words to look for
# in any metadata value, the software string, EXIF or a C2PA manifest). Words match case-insensitively
# on word boundaries.
GENERATOR_HINTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Stable Diffusion web UI (A1111/Forge)", ("parameters",), ("stable diffusion web ui",)),
    ("ComfyUI", ("prompt", "workflow"), ("comfyui",)),
    ("InvokeAI", ("invokeai_metadata", "invokeai_graph", "sd-metadata"), ("invokeai",)),
    ("NovelAI", (), ("novelai",)),
    ("Fooocus", ("fooocus_scheme",), ("fooocus",)),
    ("Stable Diffusion", (), ("stable diffusion", "stablediffusion", "stability ai", "sdxl")),
    ("DALL·E", (), ("dall·e", "dall-e", "dalle", "gpt-image")),
    ("Midjourney", (), ("midjourney",)),
    ("Adobe Firefly", (), ("adobe firefly", "adobe_firefly")),
    ("Imagen", (), ("imagen", "synthid")),
    ("FLUX", (), ("flux.1", "black forest labs")),
    ("Microsoft Designer / Bing Image Creator", (), ("bing image creator", "microsoft designer")),
    ("Suno", (), ("suno",)),
    ("ElevenLabs", (), ("elevenlabs",)),
    ("IPTC: made by a trained algorithm", (), ("trainedalgorithmicmedia",)),
)


def _xmp_of(data: bytes) -> str | None:
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        return None
    end = data.find(b"</x:xmpmeta>", start)
    return data[start : end + 12 if end > 0 else start + 65536].decode("utf-8", "replace")


def _c2pa(data: bytes, fmt: str | None) -> bytes | None:
    """The bytes of an embedded C2PA manifest store (JUMBF), or None."""
    if fmt == "png":
        return next((body for kind, body in _png_chunks(data) if kind == b"caBX"), None)
    if fmt == "jpeg":
        found = [b for m, b in _jpeg_segments(data)[0] if m == 0xEB and (b"jumb" in b or b"c2pa" in b)]
        return b"".join(found) or None
    if fmt == "webp":
        chunk = next((c for k, c in _riff_chunks(data, b"WEBP") if k == b"C2PA"), None)
        if chunk is not None:
            return chunk
    i = data.find(b"c2pa")
    if i >= 0 and b"jumb" in data[max(0, i - 4096) : i + 4096]:
        return data[max(0, i - 4096) : i + 65536]
    return None


_HINT_WORDS = {w: label for label, _, words in GENERATOR_HINTS for w in words}
_HINT_PATTERN = re.compile(
    "(?<![a-z0-9])(" + "|".join(re.escape(w) for w in sorted(_HINT_WORDS, key=len, reverse=True)) + ")(?![a-z0-9])"
)


def _hints(text_chunks: dict[str, str], texts: list[str]) -> list[str]:
    keys = {k.lower() for k in text_chunks}
    # One pass of one pattern over at most MAX_HINT_TEXT characters, whatever the file holds.
    haystack, budget = [], MAX_HINT_TEXT
    for text in texts:
        haystack.append(text[:budget])
        budget -= len(haystack[-1])
        if budget <= 0:
            break
    seen = {_HINT_WORDS[m.group(1)] for m in _HINT_PATTERN.finditer("\n".join(haystack).lower())}
    return [label for label, hint_keys, _ in GENERATOR_HINTS
            if label in seen or any(k in keys for k in hint_keys)]


def read(data: bytes) -> dict[str, Any]:
    """What a file says about where it came from.

    Returns {"format", "natty" (Provenance or None), "software", "text_chunks" (PNG text, Vorbis
    comments, RIFF INFO, ID3 text frames, XMP), "exif", "c2pa" (a C2PA manifest is embedded; it is
    not verified), "generator_hints" (labels from GENERATOR_HINTS)}. Never raises on odd input, but raises
    TooLargeToRead for a file beyond the bounds in limits.py (a decompression bomb). The work
    is bounded, yet CPU-bound: call it off the event loop.
    """
    fmt = detect_format(data)
    text: dict[str, str] = {}
    exif: dict[str, str] = {}
    natty: Provenance | None = None
    manifest: bytes | None = None
    kind: bytes | int  # RIFF chunk ids are bytes, FLAC block types ints
    try:
        if fmt == "png":
            image = open_image(data)  # Pillow's reader, with its text bounds
            text.update(_png_texts(image))
            exif = _exif_dict(data, image)
        elif fmt == "wav":
            for kind, body in _riff_chunks(data, b"WAVE"):
                if kind == b"LIST" and body[:4] == b"INFO":
                    for k, v in _info_entries(body).items():
                        text[k.decode("latin-1")] = v.decode("utf-8", "replace")
        elif fmt == "flac":
            for kind, body in _flac_blocks(data)[0]:
                if kind == 4:
                    text.update(_comments_dict(_vorbis_comments(body)[1]))
        elif fmt == "ogg":
            text.update(_ogg_tags(data))
        elif fmt == "mp3":
            text.update(_mp3_tags(data))
        elif fmt == "jpeg":
            for marker, body in _jpeg_segments(data)[0]:
                if marker == 0xFE:
                    text["JPEG comment"] = body.decode("utf-8", "replace")
        elif fmt == "gif":
            comment = open_image(data).info.get("comment")
            if comment:
                text["GIF comment"] = comment.decode("utf-8", "replace")
        if fmt in ("jpeg", "webp"):
            exif = _exif_dict(data)
        xmp = _xmp_of(data[: 4 << 20]) if fmt in ("png", "jpeg", "webp", "gif", "mp4") else None
        if xmp and "XMP" not in text:
            text["XMP"] = xmp
        manifest = _c2pa(data, fmt)
    except TooLargeToRead:
        raise
    except (ValueError, OSError, SyntaxError, struct.error, IndexError, KeyError, zlib.error):
        pass  # a damaged file reports what was read before the damage

    for candidate in (
        text.get(PROVENANCE_KEY),
        text.get(VORBIS_KEY),
        text.get("ICMT"),
        text.get(f"TXXX:{PROVENANCE_KEY}"),
        exif.get("ImageDescription"),
    ):
        if candidate and (natty := Provenance.from_json(candidate)) is not None:
            break
    software = next(
        (
            v
            for v in (
                text.get("Software"),
                text.get("SOFTWARE"),
                text.get("ISFT"),
                text.get("TSSE"),
                exif.get("Software"),
                text.get("ENCODER"),
            )
            if v
        ),
        None,
    )
    haystack = [software or "", *text.values(), *exif.values()]
    if manifest:
        haystack.append(manifest[:65536].decode("utf-8", "replace"))
    return {
        "format": fmt or "unknown",
        "natty": natty,
        "software": software,
        "text_chunks": text,
        "exif": exif,
        "c2pa": manifest is not None,
        "generator_hints": _hints(text, haystack),
    }
