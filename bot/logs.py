"""Logging set-up: one format that follows a job by id, and a formatter that never prints a secret."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import re

from models.errors import redact_credentials

# Interaction and webhook tokens travel in URLs; discord.py logs those URLs at DEBUG.
_URL_TOKENS = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
_BEARER = re.compile(r"((?:Bot|Bearer)\s+)[A-Za-z0-9_.\-]{20,}")
_HF_KEY = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes every known secret and every token-shaped string."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _URL_TOKENS.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return redact_credentials(_HF_KEY.sub("hf_[redacted]", text))


_listener: logging.handlers.QueueListener | None = None


def _stop_listener() -> None:
    """Write out what is still queued (at exit, or before a new set-up)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(_stop_listener)


def setup_logging(level: str, secrets: list[str]) -> None:
    """Route every logger (ours and discord.py's) through one redacting handler on stderr.

    A record is only queued where it is logged; a thread of its own formats it, redacts it and writes it, so the
    event loop never waits for stderr (a file or a pipe that a busy machine drains late) nor runs the redaction's
    regular expressions."""
    global _listener
    _stop_listener()
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
    _listener.start()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(records))
    root.setLevel(level)
    # discord.py's HTTP debug lines are noisy but redacted; keep them at the chosen level.
    logging.getLogger("discord").setLevel(level)
