"""PNG: chunks, the tEXt/iTXt label natty writes, and the text chunks Pillow reads within the limits."""

from __future__ import annotations

import struct
import zlib

from PIL import Image, PngImagePlugin

from bot.ui.provenance.limits import MAX_TEXT_MEMORY, TooLargeToRead
from bot.ui.provenance.record import GENERATOR, PROVENANCE_KEY, Provenance

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks = []
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_keyword(kind: bytes, body: bytes) -> str | None:
    """The keyword of a tEXt, zTXt or iTXt chunk (read without inflating anything)."""
    if kind not in (b"tEXt", b"zTXt", b"iTXt"):
        return None
    return body.partition(b"\0")[0].decode("latin-1")


def _itxt(keyword: str, text: str) -> bytes:
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def _stamp_png(data: bytes, prov: Provenance) -> bytes:
    ours = {"Software", "Description", PROVENANCE_KEY}
    out = [_PNG_SIGNATURE]
    for kind, body in _png_chunks(data):
        if _png_keyword(kind, body) in ours:
            continue
        out.append(_png_chunk(kind, body))
        if kind == b"IHDR":
            out.append(_png_chunk(b"tEXt", b"Software\0" + GENERATOR.encode("latin-1")))
            out.append(_itxt("Description", prov.description))
            out.append(_itxt(PROVENANCE_KEY, prov.to_json()))
    return b"".join(out)


def _png_texts(image: Image.Image) -> dict[str, str]:
    """A PNG's tEXt, zTXt and iTXt chunks, as Pillow reads them within MAX_TEXT_CHUNK and MAX_TEXT_MEMORY.

    Chunks after the pixels are only reachable by decoding them, which open_image has bounded."""
    assert isinstance(image, PngImagePlugin.PngImageFile)
    try:
        found = image.text  # decodes the pixels to reach text chunks stored after them
    except ValueError as e:
        raise TooLargeToRead(f"its metadata is larger than {MAX_TEXT_MEMORY >> 20} MiB of text") from e
    except (OSError, SyntaxError, EOFError):  # damaged pixels: the text before them still counts
        found = {k: v for k, v in image.info.items() if isinstance(v, str)}  # type: ignore[misc]  # PNG keys are str
    return {k: str(v) for k, v in found.items()}
