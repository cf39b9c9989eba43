"""Ogg (Opus, Vorbis): pages, their CRC, and the comment header rewritten and re-paged."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from bot.ui.provenance.record import Provenance
from bot.ui.provenance.vorbis import _comments_dict, _vorbis_block, _vorbis_comments, _with_our_comments

# Ogg's CRC is CRC-32/MPEG-2 without reflection; zlib's is the reflected twin, so reflecting the bytes
# in and the result out lets zlib's C loop do the work.
_REFLECT = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    raw = zlib.crc32(page.translate(_REFLECT), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{raw:032b}"[::-1], 2)


@dataclass
class _Page:
    flags: int
    granule: int
    serial: int
    seq: int
    segments: list[int]
    body: bytes

    def encode(self) -> bytes:
        head = struct.pack("<4sBBqIII", b"OggS", 0, self.flags, self.granule, self.serial, self.seq, 0) + bytes(
            [len(self.segments), *self.segments]
        )
        page = head + self.body
        crc = _ogg_crc(page)
        return page[:22] + struct.pack("<I", crc) + page[26:]


def _ogg_pages(data: bytes) -> list[_Page]:
    pages = []
    pos = 0
    while pos + 27 <= len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError("bad Ogg page")
        _, _, flags, granule, serial, seq, _ = struct.unpack("<4sBBqIII", data[pos : pos + 26])
        n = data[pos + 26]
        segments = list(data[pos + 27 : pos + 27 + n])
        start = pos + 27 + n
        pages.append(_Page(flags, granule, serial, seq, segments, data[start : start + sum(segments)]))
        pos = start + sum(segments)
    return pages


def _ogg_header_packets(pages: list[_Page], count: int, whole: bool = True) -> tuple[list[bytes], int]:
    """The first `count` packets after the identification page, and how many pages they fill.

    With `whole`, the last of them must end its page (true of the complete header set)."""
    packets: list[bytes] = []
    current = b""
    for i, page in enumerate(pages[1:], start=1):
        pos = 0
        for lace in page.segments:
            current += page.body[pos : pos + lace]
            pos += lace
            if lace < 255:
                packets.append(current)
                current = b""
                if len(packets) == count:
                    if whole and pos != len(page.body):
                        raise ValueError("Ogg header shares a page with audio")
                    return packets, i + 1
    raise ValueError("Ogg stream ends inside its headers")


def _ogg_layout(packets: list[bytes], serial: int, first_seq: int) -> list[_Page]:
    """Pages holding `packets` (headers: granule 0), each page at most 255 lacing values."""
    laces: list[tuple[int, bool]] = []  # (lace, ends a packet)
    for p in packets:
        full, rest = divmod(len(p), 255)
        laces += [(255, False)] * full + [(rest, True)]
    pages: list[_Page] = []
    body = b"".join(packets)
    pos = 0
    continued = False
    for start in range(0, len(laces), 255):
        group = laces[start : start + 255]
        size = sum(lace for lace, _ in group)
        pages.append(
            _Page(
                0x01 if continued else 0,
                0 if any(end for _, end in group) else -1,
                serial,
                first_seq + len(pages),
                [lace for lace, _ in group],
                body[pos : pos + size],
            )
        )
        pos += size
        continued = not group[-1][1]
    return pages


def _stamp_ogg(data: bytes, prov: Provenance) -> bytes:
    pages = _ogg_pages(data)
    if not pages or any(p.serial != pages[0].serial for p in pages):
        raise ValueError("Ogg files with several streams are not labelled")
    ident = pages[0].body
    if ident.startswith(b"OpusHead"):
        magic, count = b"OpusTags", 1
    elif ident.startswith(b"\x01vorbis"):
        magic, count = b"\x03vorbis", 2
    else:
        return data  # FLAC-in-Ogg, Speex, Theora: not labelled
    headers, used = _ogg_header_packets(pages, count)
    vendor, comments, end = _vorbis_comments(headers[0][len(magic) :])
    # Opus may keep binary data after the comments; Vorbis ends with a framing bit.
    trailer = headers[0][len(magic) + end :] if magic == b"OpusTags" else b"\x01"
    headers[0] = magic + _vorbis_block(vendor, _with_our_comments(comments, prov)) + trailer
    new_headers = _ogg_layout(headers, pages[0].serial, 1)
    shift = len(new_headers) - (used - 1)
    out = [pages[0].encode(), *(p.encode() for p in new_headers)]
    for page in pages[used:]:
        page.seq += shift
        out.append(page.encode())
    return b"".join(out)


def _ogg_tags(data: bytes) -> dict[str, str]:
    pages = _ogg_pages(data[: 1 << 20] if len(data) > 1 << 20 else data)
    ident = pages[0].body
    if ident.startswith(b"OpusHead"):
        magic = b"OpusTags"
    elif ident.startswith(b"\x01vorbis"):
        magic = b"\x03vorbis"
    else:
        return {}
    serial = pages[0].serial
    packets, _ = _ogg_header_packets([p for p in pages if p.serial == serial], 1, whole=False)
    return _comments_dict(_vorbis_comments(packets[0][len(magic) :])[1])
