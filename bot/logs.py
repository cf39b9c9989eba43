"""Logging set-up: one format that follows a job by id, and a formatter that never prints a secret."""

from __future__ import annotations

import logging
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


def setup_logging(level: str, secrets: list[str]) -> None:
    """Route every logger (ours and discord.py's) through one redacting handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # discord.py's HTTP debug lines are noisy but redacted; keep them at the chosen level.
    logging.getLogger("discord").setLevel(level)
