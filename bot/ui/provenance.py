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
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zlib
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from PIL import ExifTags, Image, PngImagePlugin

from models.media import detect_format  # one sniffer for the whole bot

GENERATOR = "natty"
PROVENANCE_KEY = "natty:provenance"
VORBIS_KEY = "NATTY_PROVENANCE"
STAMPABLE = frozenset({"png", "jpeg", "webp", "ogg", "flac", "wav", "mp3"})

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


# Metadata that betrays an AI generator: (label, metadata keys that only it writes, words to look for
# in any metadata value, the software string, EXIF or a C2PA manifest). Words match case-insensitively
# on word boundaries.
GENERATOR_HINTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Stable Diffusion web UI (A1111/Forge)", ("parameters",), ("stable diffusion web ui",)),
    ("ComfyUI", ("prompt", "workflow"), ("comfyui",)),
    ("InvokeAI", ("invokeai_metadata", "invokeai_graph", "sd-metadata"), ("invokeai",)),
    ("NovelAI", (), ("novelai",)),
    ("Fooocus", ("fooocus_scheme",), ("fooocus",)),
    ("Stable Diffusion", (), ("stable diffusion", "stablediffusion", "stability ai", "sdxl")),
    ("DALL·E", (), ("dall·e", "dall-e", "dalle", "gpt-image")),
    ("Midjourney", (), ("midjourney",)),
    ("Adobe Firefly", (), ("adobe firefly", "adobe_firefly")),
    ("Imagen", (), ("imagen", "synthid")),
    ("FLUX", (), ("flux.1", "black forest labs")),
    ("Microsoft Designer / Bing Image Creator", (), ("bing image creator", "microsoft designer")),
    ("Suno", (), ("suno",)),
    ("ElevenLabs", (), ("elevenlabs",)),
    ("IPTC: made by a trained algorithm", (), ("trainedalgorithmicmedia",)),
)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """Who made a file and how, without the prompt itself."""

    generator: str = GENERATOR
    model: str
    backend: str
    task: str
    prompt_sha256: str
    created: str = field(default_factory=_now)  # ISO-8601 UTC
    seed: int | None = None
    job_id: str | None = None

    @classmethod
    def for_prompt(
        cls,
        prompt: str,
        *,
        model: str,
        backend: str,
        task: str,
        seed: int | None = None,
        job_id: str | None = None,
        created: str | None = None,
    ) -> Provenance:
        """A label for output made from `prompt`; only the prompt's hash is kept."""
        return cls(
            model=model,
            backend=backend,
            task=task,
            prompt_sha256=hash_prompt(prompt),
            created=created or _now(),
            seed=seed,
            job_id=job_id,
        )

    @property
    def description(self) -> str:
        """The sentence a person reads in a file's properties."""
        return f"AI-generated by {self.generator} with {self.model}"

    def matches_prompt(self, prompt: str) -> bool:
        """True if `prompt` is the prompt this output was made from."""
        return hash_prompt(prompt) == self.prompt_sha256

    def to_json(self) -> str:
        """Compact ASCII JSON (ASCII so it survives EXIF and RIFF INFO text)."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str) -> Provenance | None:
        """Parse a label; None if it is not one (unknown keys are ignored)."""
        try:
            raw = json.loads(text)
        except (ValueError, TypeError):
            return None
        if not isinstance(raw, dict):
            return None
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError:
            return None


def hash_prompt(prompt: str) -> str:
    """SHA-256 of the prompt's UTF-8 bytes, as hex."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "opus": "ogg", "oga": "ogg", "m4a": "mp4", "mov": "mp4"}


def _format_of(data: bytes, fmt_or_filename: str) -> str | None:
    found = detect_format(data)
    if found:
        return found
    ext = fmt_or_filename.rsplit(".", 1)[-1].lower()
    return _FORMAT_ALIASES.get(ext, ext)


def stamp(data: bytes, fmt_or_filename: str, prov: Provenance) -> bytes:
    """Return `data` with `prov` written into its metadata; unsupported formats come back unchanged.

    The format is read from the bytes; `fmt_or_filename` ("png", "out.ogg") is only a fallback. An
    earlier natty label is replaced, other metadata is kept. Raises ValueError on a malformed file.
    """
    fmt = _format_of(data, fmt_or_filename)
    writer = _WRITERS.get(fmt or "")
    if writer is None:
        return data
    try:
        return writer(data, prov)
    except (struct.error, IndexError, KeyError) as e:
        raise ValueError(f"malformed {fmt} file: {e}") from e


# ------------------------------------------------------------------------------------------------ PNG

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


# ------------------------------------------------------------------------------------- JPEG and WebP

_EXIF_IFD = 0x8769
_SOFTWARE, _IMAGE_DESCRIPTION, _USER_COMMENT = 0x0131, 0x010E, 0x9286


def _exif_for(data: bytes, prov: Provenance) -> bytes:
    """The file's EXIF (as Pillow reads it) with natty's tags set, as TIFF bytes with 'Exif' header."""
    exif = Image.open(io.BytesIO(data)).getexif()
    exif[_SOFTWARE] = GENERATOR
    exif[_IMAGE_DESCRIPTION] = prov.to_json()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"ASCII\0\0\0" + prov.description.encode("ascii", "replace")
    return exif.tobytes()


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """APPn/COM/other header segments before the scan, and where the scan (SOS) starts."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("bad JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return segments, pos
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG without image data")


def _stamp_jpeg(data: bytes, prov: Provenance) -> bytes:
    segments, scan = _jpeg_segments(data)
    exif = _exif_for(data, prov)
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("EXIF too large for one JPEG segment")
    kept = [(m, body) for m, body in segments if not (m == 0xE1 and body.startswith(b"Exif\0\0"))]
    # EXIF goes first, after a JFIF APP0 if there is one.
    at = 1 if kept and kept[0][0] == 0xE0 else 0
    kept.insert(at, (0xE1, exif))
    head = b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(body) + 2) + body for m, body in kept)
    return b"\xff\xd8" + head + data[scan:]


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


# -------------------------------------------------------------------------------- Vorbis comments


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


# ----------------------------------------------------------------------------------------------- FLAC


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


# ------------------------------------------------------------------------------------------------ OGG

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


# ------------------------------------------------------------------------------------------------ MP3


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


_WRITERS = {
    "png": _stamp_png,
    "jpeg": _stamp_jpeg,
    "webp": _stamp_webp,
    "wav": _stamp_wav,
    "flac": _stamp_flac,
    "ogg": _stamp_ogg,
    "mp3": _stamp_mp3,
}


# ----------------------------------------------------------------------------------------------- read


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


def _xmp_of(data: bytes) -> str | None:
    start = data.find(b"<x:xmpmeta")
    if start < 0:
        return None
    end = data.find(b"</x:xmpmeta>", start)
    return data[start : end + 12 if end > 0 else start + 65536].decode("utf-8", "replace")


def _c2pa(data: bytes, fmt: str | None) -> bytes | None:
    """The bytes of an embedded C2PA manifest store (JUMBF), or None."""
    if fmt == "png":
        return next((body for kind, body in _png_chunks(data) if kind == b"caBX"), None)
    if fmt == "jpeg":
        found = [b for m, b in _jpeg_segments(data)[0] if m == 0xEB and (b"jumb" in b or b"c2pa" in b)]
        return b"".join(found) or None
    if fmt == "webp":
        chunk = next((c for k, c in _riff_chunks(data, b"WEBP") if k == b"C2PA"), None)
        if chunk is not None:
            return chunk
    i = data.find(b"c2pa")
    if i >= 0 and b"jumb" in data[max(0, i - 4096) : i + 4096]:
        return data[max(0, i - 4096) : i + 65536]
    return None


_HINT_WORDS = {w: label for label, _, words in GENERATOR_HINTS for w in words}
_HINT_PATTERN = re.compile(
    "(?<![a-z0-9])(" + "|".join(re.escape(w) for w in sorted(_HINT_WORDS, key=len, reverse=True)) + ")(?![a-z0-9])"
)


def _hints(text_chunks: dict[str, str], texts: list[str]) -> list[str]:
    keys = {k.lower() for k in text_chunks}
    # One pass of one pattern over at most MAX_HINT_TEXT characters, whatever the file holds.
    haystack, budget = [], MAX_HINT_TEXT
    for text in texts:
        haystack.append(text[:budget])
        budget -= len(haystack[-1])
        if budget <= 0:
            break
    seen = {_HINT_WORDS[m.group(1)] for m in _HINT_PATTERN.finditer("\n".join(haystack).lower())}
    return [label for label, hint_keys, _ in GENERATOR_HINTS
            if label in seen or any(k in keys for k in hint_keys)]


def read(data: bytes) -> dict[str, Any]:
    """What a file says about where it came from.

    Returns {"format", "natty" (Provenance or None), "software", "text_chunks" (PNG text, Vorbis
    comments, RIFF INFO, ID3 text frames, XMP), "exif", "c2pa" (a C2PA manifest is embedded; it is
    not verified), "generator_hints" (labels from GENERATOR_HINTS)}. Never raises on odd input, but raises
    TooLargeToRead for a file beyond the bounds at the top of this module (a decompression bomb). The work
    is bounded, yet CPU-bound: call it off the event loop.
    """
    fmt = detect_format(data)
    text: dict[str, str] = {}
    exif: dict[str, str] = {}
    natty: Provenance | None = None
    manifest: bytes | None = None
    kind: bytes | int  # RIFF chunk ids are bytes, FLAC block types ints
    try:
        if fmt == "png":
            image = open_image(data)  # Pillow's reader, with its text bounds
            text.update(_png_texts(image))
            exif = _exif_dict(data, image)
        elif fmt == "wav":
            for kind, body in _riff_chunks(data, b"WAVE"):
                if kind == b"LIST" and body[:4] == b"INFO":
                    for k, v in _info_entries(body).items():
                        text[k.decode("latin-1")] = v.decode("utf-8", "replace")
        elif fmt == "flac":
            for kind, body in _flac_blocks(data)[0]:
                if kind == 4:
                    text.update(_comments_dict(_vorbis_comments(body)[1]))
        elif fmt == "ogg":
            text.update(_ogg_tags(data))
        elif fmt == "mp3":
            text.update(_mp3_tags(data))
        elif fmt == "jpeg":
            for marker, body in _jpeg_segments(data)[0]:
                if marker == 0xFE:
                    text["JPEG comment"] = body.decode("utf-8", "replace")
        elif fmt == "gif":
            comment = open_image(data).info.get("comment")
            if comment:
                text["GIF comment"] = comment.decode("utf-8", "replace")
        if fmt in ("jpeg", "webp"):
            exif = _exif_dict(data)
        xmp = _xmp_of(data[: 4 << 20]) if fmt in ("png", "jpeg", "webp", "gif", "mp4") else None
        if xmp and "XMP" not in text:
            text["XMP"] = xmp
        manifest = _c2pa(data, fmt)
    except TooLargeToRead:
        raise
    except (ValueError, OSError, SyntaxError, struct.error, IndexError, KeyError, zlib.error):
        pass  # a damaged file reports what was read before the damage

    for candidate in (
        text.get(PROVENANCE_KEY),
        text.get(VORBIS_KEY),
        text.get("ICMT"),
        text.get(f"TXXX:{PROVENANCE_KEY}"),
        exif.get("ImageDescription"),
    ):
        if candidate and (natty := Provenance.from_json(candidate)) is not None:
            break
    software = next(
        (
            v
            for v in (
                text.get("Software"),
                text.get("SOFTWARE"),
                text.get("ISFT"),
                text.get("TSSE"),
                exif.get("Software"),
                text.get("ENCODER"),
            )
            if v
        ),
        None,
    )
    haystack = [software or "", *text.values(), *exif.values()]
    if manifest:
        haystack.append(manifest[:65536].decode("utf-8", "replace"))
    return {
        "format": fmt or "unknown",
        "natty": natty,
        "software": software,
        "text_chunks": text,
        "exif": exif,
        "c2pa": manifest is not None,
        "generator_hints": _hints(text, haystack),
    }
