"""EXIF, shared by JPEG and WebP: natty's tags written (`_exif_for`) and any file's tags read (`_exif_dict`)."""

from __future__ import annotations

import io
import struct

from PIL import ExifTags, Image

from bot.ui.provenance.limits import TooLargeToRead, open_image
from bot.ui.provenance.record import GENERATOR, Provenance

_EXIF_IFD = 0x8769
_SOFTWARE, _IMAGE_DESCRIPTION, _USER_COMMENT = 0x0131, 0x010E, 0x9286


def _exif_for(data: bytes, prov: Provenance) -> bytes:
    """The file's EXIF (as Pillow reads it) with natty's tags set, as TIFF bytes with 'Exif' header."""
    exif = Image.open(io.BytesIO(data)).getexif()
    exif[_SOFTWARE] = GENERATOR
    exif[_IMAGE_DESCRIPTION] = prov.to_json()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"ASCII\0\0\0" + prov.description.encode("ascii", "replace")
    return exif.tobytes()


def _exif_dict(data: bytes, im: Image.Image | None = None) -> dict[str, str]:
    try:
        exif = (im or open_image(data)).getexif()
    except TooLargeToRead:
        raise
    except (OSError, ValueError, SyntaxError):
        return {}
    out: dict[str, str] = {}
    items = list(exif.items())
    try:
        items += list(exif.get_ifd(_EXIF_IFD).items())
    except (KeyError, ValueError, struct.error):
        pass
    for tag, value in items:
        if tag in (_EXIF_IFD, 0x8825, 0x927C):  # IFD pointers and the maker note blob
            continue
        name = ExifTags.TAGS.get(tag, f"0x{tag:04x}")
        if tag == _USER_COMMENT and isinstance(value, bytes):
            value = _user_comment(value)
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace").rstrip("\0")
        out[name] = str(value)[:4000]
    return out


def _user_comment(value: bytes) -> str:
    code, text = value[:8], value[8:]
    if code.startswith(b"UNICODE"):
        # The byte order follows the TIFF header, which Pillow hides; pick the reading that looks like text.
        le, be = text.decode("utf-16-le", "replace"), text.decode("utf-16-be", "replace")
        return le if sum(c.isascii() for c in le) >= sum(c.isascii() for c in be) else be
    return text.decode("ascii" if code.startswith(b"ASCII") else "utf-8", "replace").rstrip("\0")
