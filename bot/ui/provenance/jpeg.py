"""JPEG: the header segments before the scan, and the EXIF APP1 segment natty writes."""

from __future__ import annotations

import struct

from bot.ui.provenance.exif import _exif_for
from bot.ui.provenance.record import Provenance


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """APPn/COM/other header segments before the scan, and where the scan (SOS) starts."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("bad JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return segments, pos
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG without image data")


def _stamp_jpeg(data: bytes, prov: Provenance) -> bytes:
    segments, scan = _jpeg_segments(data)
    exif = _exif_for(data, prov)
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("EXIF too large for one JPEG segment")
    kept = [(m, body) for m, body in segments if not (m == 0xE1 and body.startswith(b"Exif\0\0"))]
    # EXIF goes first, after a JFIF APP0 if there is one.
    at = 1 if kept and kept[0][0] == 0xE0 else 0
    kept.insert(at, (0xE1, exif))
    head = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(body) + 2) + body for m, body in kept)
    return b"\xff\xd8" + head + data[scan:]
