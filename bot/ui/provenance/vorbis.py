"""Vorbis comments, the tag block that FLAC and Ogg (Opus, Vorbis) share."""

from __future__ import annotations

import struct

from bot.ui.provenance.record import GENERATOR, VORBIS_KEY, Provenance


def _vorbis_comments(packet: bytes) -> tuple[bytes, list[bytes], int]:
    """(vendor, comments, end offset) of a Vorbis comment block (no packet magic)."""
    (n,) = struct.unpack("<I", packet[:4])
    vendor = packet[4 : 4 + n]
    pos = 4 + n
    (count,) = struct.unpack("<I", packet[pos : pos + 4])
    pos += 4
    comments = []
    for _ in range(count):
        (n,) = struct.unpack("<I", packet[pos : pos + 4])
        comments.append(packet[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return vendor, comments, pos


def _vorbis_block(vendor: bytes, comments: list[bytes]) -> bytes:
    out = [struct.pack("<I", len(vendor)), vendor, struct.pack("<I", len(comments))]
    for c in comments:
        out += [struct.pack("<I", len(c)), c]
    return b"".join(out)


def _with_our_comments(comments: list[bytes], prov: Provenance) -> list[bytes]:
    ours = {b"SOFTWARE", b"COMMENT", VORBIS_KEY.encode()}
    kept = [c for c in comments if c.split(b"=", 1)[0].upper() not in ours]
    return kept + [
        b"SOFTWARE=" + GENERATOR.encode(),
        b"COMMENT=" + prov.description.encode("utf-8"),
        VORBIS_KEY.encode() + b"=" + prov.to_json().encode("ascii"),
    ]


def _comments_dict(comments: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in comments:
        key, _, value = c.decode("utf-8", "replace").partition("=")
        out[key.upper()] = value if key.upper() not in out else out[key.upper()] + "\n" + value
    return out
