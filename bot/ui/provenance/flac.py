"""FLAC: metadata blocks, with natty's label in the VORBIS_COMMENT block."""

from __future__ import annotations

from bot.ui.provenance.record import Provenance
from bot.ui.provenance.vorbis import _vorbis_block, _vorbis_comments, _with_our_comments


def _flac_blocks(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    if not data.startswith(b"fLaC"):
        raise ValueError("not a FLAC file")
    blocks = []
    pos = 4
    while True:
        header = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 4], "big")
        blocks.append((header & 0x7F, data[pos + 4 : pos + 4 + length]))
        pos += 4 + length
        if header & 0x80:
            return blocks, pos


def _stamp_flac(data: bytes, prov: Provenance) -> bytes:
    blocks, audio = _flac_blocks(data)
    comments: list[bytes]
    vendor, comments = b"natty", []
    for kind, body in blocks:
        if kind == 4:
            vendor, comments, _ = _vorbis_comments(body)
    block = _vorbis_block(vendor, _with_our_comments(comments, prov))
    kept = [(k, b) for k, b in blocks if k != 4]
    kept.insert(1, (4, block))  # STREAMINFO must stay first
    out = [b"fLaC"]
    for i, (kind, body) in enumerate(kept):
        last = 0x80 if i == len(kept) - 1 else 0
        out.append(bytes([kind | last]) + len(body).to_bytes(3, "big") + body)
    return b"".join(out) + data[audio:]
