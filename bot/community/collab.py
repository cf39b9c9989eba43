"""Collaborative prompting, without Discord: sessions, ideas, votes, and how the top ideas become one prompt.

A session collects ideas from anyone in its thread and votes on them (one vote per member per idea, pressed
again to take it back). When its time is up, or its host presses Generate, the top ideas are fused into one
prompt and generated as a job. State and deadline live in `play_sessions` (kind "collab"), so sessions
outlive restarts.

The fusion rule, used when no language model is configured (or it fails):
    1. rank ideas by votes, most first; ties go to the idea added first;
    2. keep the top `TOP_IDEAS` (3) ideas that have at least one vote; with no votes at all, keep the first
       `TOP_IDEAS` ideas;
    3. the prompt is the theme (when there is one) followed by those ideas in rank order, joined with ", ",
       dropping ideas already contained in the text so far (case-insensitive), capped at `MAX_PROMPT` chars.

What a session posts in its thread (the panel, ideas, buttons, the result and its credit line) is in
`Session.locale`, the server's language when the session started; refusals (`CollabError`) are worded in the
language of whoever they answer.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.i18n import DEFAULT, t

TOP_IDEAS = 3
MAX_PROMPT = 500
PANEL_CHARS = 2000  # the panel is one message: Discord's limit
PANEL_IDEA_CHARS = 120  # of each idea in the panel; the idea's own message has all of it
MAX_IDEAS = 50
TASKS = {"image": "text-to-image", "text": "chat"}


@dataclass
class Idea:
    author_id: int
    text: str
    voters: list[int] = field(default_factory=list)
    message_id: int | None = None
    created_at: float = field(default_factory=time.time)

    @property
    def votes(self) -> int:
        return len(self.voters)


@dataclass
class Session:
    id: str
    guild_id: int | None
    channel_id: int  # where /collab start was used
    host_id: int
    task: str  # "image" or "text"
    theme: str
    deadline: float
    minutes: float = 5.0  # how long it stays open; a remix reuses it
    thread_id: int | None = None
    panel_id: int | None = None  # the message with Add idea / Generate in the thread
    start_message_id: int | None = None
    state: str = "open"  # open -> generating -> done | failed
    ideas: list[Idea] = field(default_factory=list)
    parent_id: str | None = None  # the session this one remixes
    prompt: str | None = None  # the fused prompt
    fused_by: str | None = None  # a model's name, or "rule"
    job_id: str | None = None
    error: str | None = None  # why it failed, in the session's language
    created_at: float = field(default_factory=time.time)
    locale: str = DEFAULT  # the language of what it posts (the server's, picked when it started)
    filesize_limit: int | None = None  # the upload limit Discord gave the interaction that started it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Session:
        raw = json.loads(text)
        return cls(**{**raw, "ideas": [Idea(**i) for i in raw["ideas"]]})

    @property
    def contributors(self) -> list[int]:
        """Everyone who added an idea or voted, host first, then in order of first contribution."""
        seen: dict[int, None] = {self.host_id: None}
        for idea in self.ideas:
            seen.setdefault(idea.author_id, None)
        for idea in self.ideas:
            for voter in idea.voters:
                seen.setdefault(voter, None)
        return list(seen)


class CollabError(Exception):
    """A user action the session refuses: a catalog key and its values; `text(locale)` words it for the user
    (`str()` gives the English)."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(t(key, DEFAULT, **values))
        self.key, self.values = key, values

    def text(self, locale: str | None) -> str:
        return t(self.key, locale, **self.values)


def add_idea(session: Session, author_id: int, text: str) -> Idea:
    text = " ".join(text.split())
    if session.state != "open":
        raise CollabError("collab.closed")
    if not text:
        raise CollabError("collab.idea_empty")
    if len(session.ideas) >= MAX_IDEAS:
        raise CollabError("collab.too_many_ideas", max=MAX_IDEAS)
    if any(i.text.lower() == text.lower() for i in session.ideas):
        raise CollabError("collab.duplicate_idea")
    idea = Idea(author_id=author_id, text=text)
    session.ideas.append(idea)
    return idea


def toggle_vote(session: Session, index: int, user_id: int) -> bool:
    """Vote for idea `index`, or take the vote back; True when the user now votes for it."""
    if session.state != "open":
        raise CollabError("collab.voting_closed")
    if not 0 <= index < len(session.ideas):
        raise CollabError("collab.no_such_idea")
    voters = session.ideas[index].voters
    if user_id in voters:
        voters.remove(user_id)
        return False
    voters.append(user_id)
    return True


def ranked(session: Session) -> list[Idea]:
    """Ideas by votes, most first; ties keep the order they were added in (sorted() is stable)."""
    return sorted(session.ideas, key=lambda i: -i.votes)


def top_ideas(session: Session, n: int = TOP_IDEAS) -> list[Idea]:
    order = ranked(session)
    voted = [i for i in order if i.votes > 0]
    return (voted or order)[:n]


def fuse_by_rule(theme: str, ideas: list[str], limit: int = MAX_PROMPT) -> str:
    """The documented fusion rule (module docstring, step 3)."""
    parts: list[str] = []
    for text in [theme, *ideas]:
        text = text.strip().rstrip(".,;")
        if text and text.lower() not in ", ".join(parts).lower():
            parts.append(text)
    return ", ".join(parts)[:limit].rstrip(", ")


def fusion_messages(task: str, theme: str, ideas: list[str]) -> list[dict[str, Any]]:
    """The request that asks a language model to fuse the ideas into one prompt."""
    target = "an image generation model" if task == "image" else "a writer"
    listing = "\n".join(f"- {i}" for i in ideas)
    return [
        {"role": "system", "content": f"You merge ideas from a group into one prompt for {target}. Keep every "
                                      "idea's substance, resolve clashes sensibly, and answer with the prompt only: "
                                      f"one line, at most {MAX_PROMPT // 2} characters, no quotes, no preamble."},
        {"role": "user", "content": f"Theme: {theme or '(none)'}\nIdeas, most voted first:\n{listing}"},
    ]


def clean_fused(text: str, limit: int = MAX_PROMPT) -> str:
    """A model's answer as a prompt: the first non-empty line, without quotes or a "Prompt:" label."""
    line = next((ln for ln in (text or "").splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(?:\*\*)?(?:final\s+)?prompt\s*(?::\s*\*\*|\*\*\s*:|:)\s*", "", line, flags=re.I)
    return line.strip().strip("\"'“”`").strip()[:limit]


def credit_line(session: Session) -> str:
    """Who made it: idea authors (their ideas that made the cut marked), voters, and the host."""
    loc = session.locale
    used = {id(i) for i in top_ideas(session)}
    authors: dict[int, int] = {}
    for idea in session.ideas:
        if id(idea) in used:
            authors[idea.author_id] = authors.get(idea.author_id, 0) + 1
        else:
            authors.setdefault(idea.author_id, 0)
    voters = [u for u in session.contributors if u not in authors and u != session.host_id]
    bits = [t("collab.credit_host", loc, host=f"<@{session.host_id}>")]
    if authors:
        bits.append(t("collab.credit_ideas", loc, users=", ".join(
            f"<@{u}>" + (t("collab.credit_used", loc, n=n) if n else "") for u, n in authors.items())))
    if voters:
        bits.append(t("collab.credit_votes", loc, users=", ".join(f"<@{u}>" for u in voters)))
    return t("collab.credit", loc, parts="; ".join(bits))


def _preview(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def panel_text(session: Session, limit: int = 10, max_chars: int = PANEL_CHARS) -> str:
    """The thread's panel: the theme, the deadline and the current top ideas, within one Discord message.

    Each idea shows its first PANEL_IDEA_CHARS characters (its own message holds all of it); ideas that do
    not fit are counted in "and N more"."""
    loc = session.locale
    title = t("collab.panel_title_image" if session.task == "image" else "collab.panel_title_text", loc)
    lines = [title + (f": *{session.theme}*" if session.theme else "")]
    if session.parent_id:
        lines.append(t("collab.panel_remixing", loc))
    if session.state == "open":
        lines.append(t("collab.panel_open", loc, when=f"<t:{int(session.deadline) + 1}:R>"))
    elif session.state == "generating":
        lines.append(t("collab.panel_generating", loc))
    elif session.state == "done":
        lines.append(t("collab.panel_done", loc))
    else:
        lines.append(t("collab.panel_failed", loc, error=session.error or t("collab.unknown_error", loc)))
    order = ranked(session)
    if not order:
        lines.append(t("collab.panel_empty", loc))
        return _preview("\n".join(lines), max_chars)
    lines.append("")
    shown = []
    for n, i in enumerate(order[:limit]):
        votes = t("collab.n_votes.one" if i.votes == 1 else "collab.n_votes.other", loc, n=i.votes)
        shown.append(f"**{n + 1}.** {_preview(i.text, PANEL_IDEA_CHARS)} · {votes} · <@{i.author_id}>")
    while True:  # drop ideas from the bottom until the panel fits
        more = len(order) - len(shown)
        text = "\n".join([*lines, *shown, *([t("collab.panel_more", loc, count=more)] if more else [])])
        if len(text) <= max_chars or not shown:
            return _preview(text, max_chars)
        shown.pop()
