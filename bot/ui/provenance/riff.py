"""RIFF containers: WebP (an EXIF chunk) and WAV (a LIST/INFO chunk)."""

from __future__ import annotations

import io
import struct

from PIL import Image

from bot.ui.provenance.exif import _exif_for
from bot.ui.provenance.record import GENERATOR, Provenance


def _riff_chunks(data: bytes, form: bytes) -> list[tuple[bytes, bytes]]:
    if data[:4] != b"RIFF" or data[8:12] != form:
        raise ValueError(f"not a RIFF {form.decode()} file")
    chunks = []
    pos = 12
    declared = struct.unpack("<I", data[4:8])[0]
    end = min(len(data), 8 + declared) if declared >= 4 else len(data)  # 0: a WAV written as a stream
    while pos + 8 <= end:
        kind = data[pos : pos + 4]
        (length,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 8 + length + (length & 1)
    return chunks


def _riff(form: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(kind + struct.pack("<I", len(c)) + c + (b"\0" if len(c) & 1 else b"") for kind, c in chunks)
    return b"RIFF" + struct.pack("<I", len(body) + 4) + form + body


def _stamp_webp(data: bytes, prov: Provenance) -> bytes:
    chunks = [(k, c) for k, c in _riff_chunks(data, b"WEBP") if k != b"EXIF"]
    exif = _exif_for(data, prov).removeprefix(b"Exif\0\0")  # WebP stores bare TIFF
    if chunks[0][0] == b"VP8X":
        flags = chunks[0][1][0] | 0x08
        chunks[0] = (b"VP8X", bytes([flags]) + chunks[0][1][1:])
    else:
        # A simple WebP has no room for metadata: promote it to the extended format.
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        alpha = 0x10 if "A" in im.mode else 0
        vp8x = bytes([0x08 | alpha, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", vp8x))
    at = next((i for i, (k, _) in enumerate(chunks) if k == b"XMP "), len(chunks))
    chunks.insert(at, (b"EXIF", exif))
    return _riff(b"WEBP", chunks)


# ------------------------------------------------------------------------------------------------ WAV


def _stamp_wav(data: bytes, prov: Provenance) -> bytes:
    chunks = _riff_chunks(data, b"WAVE")
    info: dict[bytes, bytes] = {}
    kept = []
    for kind, body in chunks:
        if kind == b"LIST" and body[:4] == b"INFO":
            info.update(_info_entries(body))
        else:
            kept.append((kind, body))
    info[b"ISFT"] = GENERATOR.encode()
    info[b"ISBJ"] = prov.description.encode("utf-8")
    info[b"ICMT"] = prov.to_json().encode("ascii")
    body = b"INFO" + b"".join(
        k + struct.pack("<I", len(v) + 1) + v + b"\0" + (b"\0" if (len(v) + 1) & 1 else b"") for k, v in info.items()
    )
    at = next((i for i, (k, _) in enumerate(kept) if k == b"data"), len(kept))
    kept.insert(at, (b"LIST", body))
    return _riff(b"WAVE", kept)


def _info_entries(body: bytes) -> dict[bytes, bytes]:
    entries = {}
    pos = 4
    while pos + 8 <= len(body):
        kind = body[pos : pos + 4]
        (length,) = struct.unpack("<I", body[pos + 4 : pos + 8])
        entries[kind] = body[pos + 8 : pos + 8 + length].rstrip(b"\0")
        pos += 8 + length + (length & 1)
    return entries
