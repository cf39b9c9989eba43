"""Label natty's outputs as AI-generated, and read such labels (natty's own and other tools') back.

Labels are written into the file's own metadata without re-encoding, so pixels and audio samples stay
exactly as they were:

- PNG: tEXt "Software", iTXt "Description" (a sentence) and iTXt "natty:provenance" (JSON).
- JPEG, WebP: EXIF Software, ImageDescription (JSON) and UserComment (the sentence).
- OGG (Opus, Vorbis), FLAC: Vorbis comments SOFTWARE, COMMENT, NATTY_PROVENANCE.
- WAV: LIST/INFO ISFT (software), ISBJ (the sentence), ICMT (JSON).
- MP3: an ID3v2 tag with TSSE, COMM and TXXX:natty:provenance.
- GIF, MP4, WebM and anything else: left unchanged (see `STAMPABLE`).

The prompt itself is never stored, only its SHA-256, so a user can prove which prompt made a file
without the file revealing it.

The package, by concern (imports point down this list, never up):

- `stamping`: `stamp` and `STAMPABLE`, the format's writer picked from `_WRITERS`.
- `reading`: `read`, natty's label and other generators' traces: `GENERATOR_HINTS`, XMP, C2PA.
- Containers, one per format family, each with its writer and reader: `png`, `jpeg`, `riff` (WebP, WAV),
  `flac` and `ogg` (both on `vorbis` comments), `id3` (MP3); `exif` is shared by JPEG and WebP.
- `record`: `Provenance`, `hash_prompt`, the keys the label is written under.
- `limits`: `open_image`, `TooLargeToRead`, the `MAX_*` bounds on reading hostile uploads.

Outside code imports from here only.
"""

from __future__ import annotations

from bot.ui.provenance.limits import (
    MAX_HINT_TEXT,
    MAX_PIXELS,
    MAX_TEXT_CHUNK,
    MAX_TEXT_MEMORY,
    TooLargeToRead,
    open_image,
)
from bot.ui.provenance.reading import GENERATOR_HINTS, read
from bot.ui.provenance.record import GENERATOR, PROVENANCE_KEY, VORBIS_KEY, Provenance, hash_prompt
from bot.ui.provenance.stamping import STAMPABLE, stamp

__all__ = [
    "GENERATOR",
    "GENERATOR_HINTS",
    "MAX_HINT_TEXT",
    "MAX_PIXELS",
    "MAX_TEXT_CHUNK",
    "MAX_TEXT_MEMORY",
    "PROVENANCE_KEY",
    "STAMPABLE",
    "VORBIS_KEY",
    "Provenance",
    "TooLargeToRead",
    "hash_prompt",
    "open_image",
    "read",
    "stamp",
]
