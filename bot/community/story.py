"""/story's script: the prompt that asks a language model for scenes, and the parser that reads them back.

A model that ignores the format (a small local one, say) still yields a story: its text, or the premise,
is cut into the asked number of passages, each illustrated from its own words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.i18n import t

_SCENE = re.compile(r"^\s*(?:\*\*)?scene\s*(\d+)\s*[:.\-–—]?\s*(?:\*\*)?\s*(.*)$", re.I)
_IMAGE = re.compile(r"^\s*(?:\*\*)?image(?: prompt)?\s*[:\-–—]\s*(?:\*\*)?\s*(.*)$", re.I)
_TITLE = re.compile(r"^\s*(?:#+\s*|\*\*)?title\s*[:\-–—]\s*(.*?)\**\s*$", re.I)


@dataclass
class Scene:
    passage: str
    image_prompt: str


@dataclass
class Script:
    title: str
    scenes: list[Scene]

    def markdown(self, premise: str, locale: str | None = None) -> str:
        parts = [f"# {self.title}", "", t("story.md_premise", locale, premise=premise), ""]
        for i, scene in enumerate(self.scenes, 1):
            parts += [t("story.md_scene", locale, n=i), "", scene.passage, "",
                      t("story.md_illustration", locale, prompt=scene.image_prompt), ""]
        parts.append(t("story.md_credit", locale))
        return "\n".join(parts)


def writer_prompt(premise: str, scenes: int, locale: str | None = None) -> str:
    """The request to the language model; the format's keywords stay English whatever the story's language."""
    return (
        f"Write a short film script in exactly {scenes} scenes from this premise: {premise}\n"
        f"{t('story.language_hint', locale)}\n"
        "Answer in this format and nothing else:\n"
        "TITLE: <a short title>\n"
        "SCENE 1: <two to four sentences of narration>\n"
        "IMAGE: <one line describing the picture for an illustrator>\n"
        "SCENE 2: ...\nIMAGE: ...\n"
    )


def parse_script(text: str, premise: str, scenes: int) -> Script:
    """The scenes the model wrote, or a fallback cut of its text into `scenes` passages."""
    title = ""
    found: list[list[str]] = []  # [passage lines, image prompt]
    for line in text.splitlines():
        if m := _TITLE.match(line):
            title = title or m.group(1).strip()
        elif m := _SCENE.match(line):
            found.append([m.group(2).strip(), ""])
        elif (m := _IMAGE.match(line)) and found:
            found[-1][1] = m.group(1).strip()
        elif found and line.strip() and not found[-1][1]:
            found[-1][0] = f"{found[-1][0]} {line.strip()}".strip()
    title = title or premise.strip().rstrip(".")[:80] or "Untitled"
    parsed = [Scene(p, img or f"{premise}, {p}"[:300]) for p, img in found if p]
    if len(parsed) >= scenes:
        return Script(title, parsed[:scenes])
    return Script(title, _fallback(text, premise, scenes))


def _fallback(text: str, premise: str, scenes: int) -> list[Scene]:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(text.split())) if s.strip()]
    if len(sentences) < scenes:
        sentences = sentences + [premise] * (scenes - len(sentences))
    size = len(sentences) / scenes
    passages = [" ".join(sentences[round(i * size):round((i + 1) * size)]) for i in range(scenes)]
    return [Scene(p, f"{premise}, {p}"[:300]) for p in passages]
