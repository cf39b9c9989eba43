"""Hostile files for tests: small uploads that would cost the bot far more than their size to read."""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(out, "PNG")
    return out.getvalue()


@functools.cache
def ztxt_bomb_png(inflated_mib: int = 300) -> bytes:
    """A valid 8x8 PNG whose zTXt chunk (about 300 KB) inflates to `inflated_mib` MiB of text."""
    packer = zlib.compressobj(9)
    block = b"a" * (1 << 20)
    body = b"".join(packer.compress(block) for _ in range(inflated_mib)) + packer.flush()
    png = _small_png()
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length and type, IHDR body, CRC
    return png[:ihdr_end] + _chunk(b"zTXt", b"Comment\0\0" + body) + png[ihdr_end:]


def huge_canvas_png(side: int = 30_000) -> bytes:
    """A PNG header declaring a side x side canvas (900 megapixels by default) over a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
