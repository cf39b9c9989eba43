"""Reading hostile uploads within bounds: `open_image`, `TooLargeToRead` and the `MAX_*` limits (set on Pillow
when this module is imported)."""

from __future__ import annotations

import io

from PIL import Image, PngImagePlugin

# Bounds on what reading a file may cost: uploads are hostile until read. A 300 KB zTXt chunk can inflate
# to 300 MB, and a small PNG can declare a gigapixel canvas.
MAX_TEXT_CHUNK = 1 << 20  # one decompressed PNG text chunk (Pillow's own default)
MAX_TEXT_MEMORY = 4 << 20  # all PNG text of one file together
MAX_HINT_TEXT = 1 << 20  # metadata text scanned for generator hints
MAX_PIXELS = 50_000_000  # decoded pixels of one image (a 48 MP photo still fits)
PngImagePlugin.MAX_TEXT_CHUNK = MAX_TEXT_CHUNK
PngImagePlugin.MAX_TEXT_MEMORY = MAX_TEXT_MEMORY
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow warns above this and refuses above twice it


class TooLargeToRead(ValueError):
    """A file whose metadata or pixels exceed what natty reads (the bounds above)."""


def open_image(data: bytes) -> Image.Image:
    """Open an image without decoding it, refusing more than MAX_PIXELS or too much PNG text.

    Raises TooLargeToRead for those, OSError/ValueError/SyntaxError for files Pillow cannot read."""
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise TooLargeToRead(f"the image has more than {MAX_PIXELS:,} pixels") from e
    except ValueError as e:  # Pillow's MAX_TEXT_CHUNK / MAX_TEXT_MEMORY
        raise TooLargeToRead(f"its metadata is larger than {MAX_TEXT_MEMORY >> 20} MiB of text") from e
    if im.width * im.height > MAX_PIXELS:
        raise TooLargeToRead(f"the image has more than {MAX_PIXELS:,} pixels")
    return im
