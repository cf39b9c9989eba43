"""The tasks natty knows, in the order menus show them, with what each takes besides a prompt and what it makes.

Each has a `Backend` method of its name (models/base.py `method_of`), catalog entries (models/catalog.py), a
command (bot/policy.py `TASK_COMMANDS`) and a name in each language (`task.<name>` in bot/locales). Code that
treats results or inputs alike asks `OUTPUT` and `INPUT`, never a list of task names."""

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

# what a task makes: "text", "image", "audio", "video" or "labels" (the kinds of the Result classes)
OUTPUT: dict[str, str] = {
    "chat": "text", "text-to-image": "image", "image-to-image": "image", "text-to-speech": "audio",
    "text-to-audio": "audio", "text-to-video": "video", "image-to-text": "text", "speech-to-text": "text",
    "image-classification": "labels",
}
# what a task needs besides its prompt: "image", "audio" or nothing
INPUT: dict[str, str | None] = {
    "chat": None, "text-to-image": None, "image-to-image": "image", "text-to-speech": None, "text-to-audio": None,
    "text-to-video": None, "image-to-text": "image", "speech-to-text": "audio", "image-classification": "image",
}
