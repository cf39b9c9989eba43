"""What kind of file a blob of bytes is, from its first bytes: the one sniffer the bot and the backends share."""

from __future__ import annotations

import mimetypes

IMAGE_FORMATS = frozenset({"png", "jpeg", "webp", "gif"})
AUDIO_FORMATS = frozenset({"wav", "flac", "ogg", "mp3", "mp4"})
# The longest audio natty decodes: an hour of 48 kHz stereo float32 is 1.4 GB, from a 25 MB Opus upload.
MAX_AUDIO_SECONDS = 30 * 60
MIME_TYPES = {
    "png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "wav": "audio/wav",
    "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg", "mp4": "video/mp4", "webm": "video/webm",
    "m4a": "audio/mp4",
}


def mime_type(fmt: str | None, filename: str = "") -> str:
    """The MIME type of a format (as `detect_format` names it), else guessed from the file name."""
    if fmt and fmt in MIME_TYPES:
        return MIME_TYPES[fmt]
    return (mimetypes.guess_type(filename)[0] if filename else None) or "application/octet-stream"


def detect_format(data: bytes) -> str | None:
    """The format of a file from its first bytes: png, jpeg, webp, gif, wav, flac, ogg, mp3, mp4, webm."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 == 0xE2):
        return "mp3"  # MPEG audio frame sync with layer III
    return None
