"""MP3: an ID3v2 tag (TSSE, COMM, TXXX) written, and ID3v2/ID3v1 text read."""

from __future__ import annotations

import struct

from bot.ui.provenance.record import GENERATOR, PROVENANCE_KEY, Provenance


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def _unsyncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _id3_text(text: str) -> bytes:
    """Encoding byte and text: Latin-1 where it fits, else UTF-16 (both valid in ID3v2.3 and 2.4)."""
    try:
        return b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        return b"\x01" + text.encode("utf-16")


def _id3_decode(body: bytes) -> str:
    enc, raw = body[0], body[1:]
    codec = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}.get(enc, "latin-1")
    return raw.decode(codec, "replace")


def _id3_split(enc: int, raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first terminator of the frame's encoding."""
    term = b"\0\0" if enc in (1, 2) else b"\0"
    i = 0
    while True:
        i = raw.find(term, i)
        if i < 0:
            return raw, b""
        if len(term) == 1 or i % 2 == 0:
            return raw[:i], raw[i + len(term) :]
        i += 1


def _id3_frames(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], int]:
    """(major version, frames, tag length) of a leading ID3v2.3/2.4 tag; (0, [], 0) if none."""
    if not data.startswith(b"ID3"):
        return 0, [], 0
    major, flags = data[3], data[5]
    size = 10 + _unsyncsafe(data[6:10]) + (10 if flags & 0x10 else 0)
    if major not in (3, 4) or flags & 0xC0:
        raise ValueError("ID3 tags with unsynchronisation or an extended header are not rewritten")
    frames = []
    pos = 10
    while pos + 10 <= size - (10 if flags & 0x10 else 0) and data[pos] != 0:
        kind = data[pos : pos + 4]
        raw = data[pos + 4 : pos + 8]
        length = _unsyncsafe(raw) if major == 4 else struct.unpack(">I", raw)[0]
        frames.append((kind, data[pos + 8 : pos + 10 + length]))  # keeps the 2 flag bytes
        pos += 10 + length
    return major, frames, size


def _id3_frame_text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    """(key, text) of a text frame; TXXX and COMM are keyed by their description."""
    payload = body[2:]
    if not payload:
        return None
    if kind == b"TXXX":
        desc, value = _id3_split(payload[0], payload[1:])
        return "TXXX:" + _id3_decode(bytes([payload[0]]) + desc), _id3_decode(bytes([payload[0]]) + value)
    if kind == b"COMM":
        desc, value = _id3_split(payload[0], payload[4:])
        key = "COMM:" + _id3_decode(bytes([payload[0]]) + desc) if desc else "COMM"
        return key, _id3_decode(bytes([payload[0]]) + value)
    if kind[:1] == b"T":
        return kind.decode("latin-1"), _id3_decode(payload).rstrip("\0")
    return None


def _stamp_mp3(data: bytes, prov: Provenance) -> bytes:
    major, frames, size = _id3_frames(data)
    major = major or 4
    ours = {"TSSE", f"TXXX:{PROVENANCE_KEY}", "COMM:natty"}
    kept = [(k, b) for k, b in frames if (_id3_frame_text(k, b) or ("",))[0] not in ours]

    def text_frame(kind: bytes, payload: bytes) -> tuple[bytes, bytes]:
        return kind, b"\0\0" + payload

    desc = _id3_text(prov.description)
    new = [
        text_frame(b"TSSE", _id3_text(GENERATOR)),
        text_frame(b"TXXX", b"\0" + PROVENANCE_KEY.encode() + b"\0" + prov.to_json().encode("ascii")),
        text_frame(
            b"COMM",
            desc[:1] + b"eng" + ("natty".encode("utf-16") + b"\0\0" if desc[0] else b"natty\0") + desc[1:],
        ),
    ]
    body = b""
    for kind, frame in kept + new:
        length = len(frame) - 2
        body += kind + (_syncsafe(length) if major == 4 else struct.pack(">I", length)) + frame
    header = b"ID3" + bytes([major, 0, 0]) + _syncsafe(len(body))
    return header + body + data[size:]


def _mp3_tags(data: bytes) -> dict[str, str]:
    tags: dict[str, str] = {}
    try:
        _, frames, _ = _id3_frames(data)
    except ValueError:
        frames = []
    for kind, body in frames:
        if found := _id3_frame_text(kind, body):
            tags[found[0]] = found[1]
    tail = data[-128:]
    if tail.startswith(b"TAG"):  # ID3v1
        for name, a, b in (("title", 3, 33), ("artist", 33, 63), ("album", 63, 93), ("comment", 97, 127)):
            if value := tail[a:b].rstrip(b"\0 ").decode("latin-1"):
                tags[f"ID3v1:{name}"] = value
    return tags
