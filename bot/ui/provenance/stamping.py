"""`stamp`: pick the format's writer (`_WRITERS`) and write natty's label; `STAMPABLE` lists the formats."""

from __future__ import annotations

import struct

from bot.ui.provenance.flac import _stamp_flac
from bot.ui.provenance.id3 import _stamp_mp3
from bot.ui.provenance.jpeg import _stamp_jpeg
from bot.ui.provenance.ogg import _stamp_ogg
from bot.ui.provenance.png import _stamp_png
from bot.ui.provenance.record import Provenance
from bot.ui.provenance.riff import _stamp_wav, _stamp_webp
from models.media import detect_format  # one sniffer for the whole bot

STAMPABLE = frozenset({"png", "jpeg", "webp", "ogg", "flac", "wav", "mp3"})


_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "opus": "ogg", "oga": "ogg", "m4a": "mp4", "mov": "mp4"}


def _format_of(data: bytes, fmt_or_filename: str) -> str | None:
    found = detect_format(data)
    if found:
        return found
    ext = fmt_or_filename.rsplit(".", 1)[-1].lower()
    return _FORMAT_ALIASES.get(ext, ext)


_WRITERS = {
    "png": _stamp_png,
    "jpeg": _stamp_jpeg,
    "webp": _stamp_webp,
    "wav": _stamp_wav,
    "flac": _stamp_flac,
    "ogg": _stamp_ogg,
    "mp3": _stamp_mp3,
}


def stamp(data: bytes, fmt_or_filename: str, prov: Provenance) -> bytes:
    """Return `data` with `prov` written into its metadata; unsupported formats come back unchanged.

    The format is read from the bytes; `fmt_or_filename` ("png", "out.ogg") is only a fallback. An
    earlier natty label is replaced, other metadata is kept. Raises ValueError on a malformed file.
    """
    fmt = _format_of(data, fmt_or_filename)
    writer = _WRITERS.get(fmt or "")
    if writer is None:
        return data
    try:
        return writer(data, prov)
    except (struct.error, IndexError, KeyError) as e:
        raise ValueError(f"malformed {fmt} file: {e}") from e
