"""The tasks natty knows, in the order menus show them. Each has a `Backend` method (models/base.py), catalog
entries (models/catalog.py), a command (bot/policy.py `TASK_COMMANDS`) and a name in each language."""

from __future__ import annotations

TASKS: tuple[str, ...] = (
    "chat",
    "text-to-image",
    "image-to-image",
    "text-to-speech",
    "text-to-audio",
    "text-to-video",
    "image-to-text",
    "speech-to-text",
    "image-classification",
)
