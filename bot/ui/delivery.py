"""Make messages fit Discord: its limits, text split into messages, embeds clamped, mentions, the warning mark.

This is the one place that knows Discord's size limits; files that must fit the upload limit are fitted by
bot/ui/uploads.py. Everything here is pure and local: no network, no Discord calls.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import discord

from bot.i18n import t

# Discord's limits (discord.com/developers/docs: messages, embeds, uploads).
MESSAGE_LIMIT = 2000
MAX_FILES = 10
MAX_EMBEDS = 10
DEFAULT_FILE_LIMIT = 10 * 1024 * 1024
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELDS = 25
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
EMBED_TOTAL = 6000

# Text longer than this many messages or characters is also attached whole, as ATTACHMENT_NAME.
MAX_TEXT_MESSAGES = 4
ATTACH_OVER_CHARS = 8000
ATTACHMENT_NAME = "response.md"

ELLIPSIS = "…"
NO_MENTIONS = discord.AllowedMentions.none()


def warning(text: str) -> str:
    """A problem as members see it, wherever it is said: one mark, then the short sentence."""
    return f"⚠️ {text}"


def requester_only(user_id: int) -> discord.AllowedMentions:
    """Mentions that may ping only the requester: no @everyone, no roles, no reply ping."""
    return discord.AllowedMentions(everyone=False, users=[discord.Object(id=user_id)], roles=False, replied_user=False)


def human_size(n: float) -> str:
    """Bytes as Discord writes them: 1024-based, one decimal ("12.3 MB", "10 MB", "512 B")."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            text = f"{n:.1f}".removesuffix(".0")
            return f"{text} {unit}"
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------- text

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,})([^`]*)$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,})\s*$")


@dataclass(frozen=True)
class _Fence:
    ticks: str
    lang: str

    @property
    def opener(self) -> str:
        return f"{self.ticks}{self.lang}\n"

    @property
    def closer(self) -> str:
        return f"\n{self.ticks}"


class _Layout:
    """Line starts of a text and the code fence open at each line, for cut decisions."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []
        self.state: list[_Fence | None] = []  # the fence open before each line
        self.kind: list[str] = []  # "open", "close" or "text"
        fence: _Fence | None = None
        pos = 0
        for line in text.splitlines(keepends=True):
            self.starts.append(pos)
            self.state.append(fence)
            bare = line.rstrip("\n")
            if fence is None and (m := _FENCE_OPEN.match(bare)):
                # Only the first word of the info string is reopened; it must stay short.
                words = m.group(2).split()
                fence = _Fence(m.group(1), words[0][:32] if words else "")
                self.kind.append("open")
            elif fence is not None and (m := _FENCE_CLOSE.match(bare)) and len(m.group(1)) >= len(fence.ticks):
                fence = None
                self.kind.append("close")
            else:
                self.kind.append("text")
            pos += len(line)
        self.end_state = fence

    def line_of(self, pos: int) -> int:
        lo, hi = 0, len(self.starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def state_at(self, pos: int, text_len: int) -> _Fence | None:
        """The fence open at pos (a line start, or inside a line)."""
        if pos >= text_len:
            return self.end_state
        i = self.line_of(pos)
        if pos == self.starts[i] or self.kind[i] == "text":
            return self.state[i]
        return self.state[i + 1] if i + 1 < len(self.state) else self.end_state


def _breaks_grapheme(text: str, c: int) -> bool:
    """True if cutting before text[c] would split a visible character (emoji sequence, accent)."""
    if c <= 0 or c >= len(text):
        return False
    before, after = text[c - 1], text[c]
    if after in "\u200d\ufe0e\ufe0f" or before == "\u200d" or unicodedata.combining(after):
        return True
    if "\U0001f3fb" <= after <= "\U0001f3ff" or "\U000e0020" <= after <= "\U000e007f":
        return True  # skin tone modifiers and tag sequences (subdivision flags)
    if "\U0001f1e6" <= before <= "\U0001f1ff" and "\U0001f1e6" <= after <= "\U0001f1ff":
        run = 0
        while c - 1 - run >= 0 and "\U0001f1e6" <= text[c - 1 - run] <= "\U0001f1ff":
            run += 1
        return run % 2 == 1  # inside a flag (a pair of regional indicators)
    return False


def _render(text: str, start: int, end: int, head: _Fence | None, tail: _Fence | None) -> str:
    body = text[start:end].rstrip()
    return (head.opener if head else "") + body + (tail.closer if tail else "")


def with_footer(body: str, footer: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """`body` as messages of at most `limit` characters, each ending with `footer` (the job id and the AI
    label: every message with generated content says so): the body split by `split_text` where it must be."""
    footer = footer[: limit // 2]
    if not body:
        return [footer]
    return [f"{part}\n{footer}" for part in split_text(body, limit - len(footer) - 1)]


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split text into messages of at most `limit` characters, never breaking a code fence.

    Cuts at a blank line if one leaves the message at least half full, else at a line end, else after a
    space, else anywhere (but not inside an emoji or accented letter). A cut inside a ``` block closes the
    block at the end of one message and reopens it, with its language, at the start of the next. Line
    endings become "\\n"; whitespace at the cuts is dropped. Empty or blank text gives [].
    """
    if limit < 40:
        raise ValueError("limit must be at least 40 characters")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return []
    layout = _Layout(text)
    n = len(text)
    chunks: list[str] = []
    p = len(text) - len(text.lstrip("\n"))
    while p < n:
        head = layout.state_at(p, n)
        head_len = len(head.opener) if head else 0
        rest = _render(text, p, n, head, layout.end_state)
        if len(rest) <= limit:
            if text[p:].strip():
                chunks.append(rest)
            break
        c = _find_cut(text, layout, p, limit - head_len)
        tail = layout.state_at(c, n)
        chunks.append(_render(text, p, c, head, tail))
        p = c
        # Outside code, leading blank lines are noise; inside it, indentation is meaning.
        while p < n and text[p] == "\n":
            p += 1
    return chunks


def _find_cut(text: str, layout: _Layout, p: int, room: int) -> int:
    """The best cut position c > p so that text[p:c] (plus a closing fence) fits in room."""
    n = len(text)
    hi = min(n, p + room)
    half = p + room // 2

    def fits(c: int) -> bool:
        tail = layout.state_at(c, n)
        return len(text[p:c].rstrip()) + (len(tail.closer) if tail else 0) <= room

    def clean(c: int) -> bool:
        if not text[p:c].strip():
            return False
        i = layout.line_of(c)
        at_line_start = layout.starts[i] == c
        if not at_line_start and layout.kind[i] != "text":
            return False  # never cut through a fence line
        if layout.state_at(c, n) is not None and at_line_start:
            # Would leave an empty code block on either side of the cut.
            if i > 0 and layout.kind[i - 1] == "open" and layout.starts[i - 1] >= p:
                return False
            if layout.kind[i] == "close":
                return False
        return True

    def candidates(kind: str, floor: int) -> Iterable[int]:
        if kind == "hard":
            yield from range(hi, floor, -1)
            return
        sep = {"para": "\n\n", "line": "\n", "word": " "}[kind]
        end = hi
        while True:
            i = text.rfind(sep, floor, end)
            if i < 0:
                return
            c = i + len(sep)
            if c <= hi:
                yield c
            end = i + len(sep) - 1

    plan = [("para", half), ("line", half), ("word", half), ("line", p), ("word", p), ("hard", p)]
    for kind, floor in plan:
        for c in candidates(kind, floor):
            if c > p and fits(c) and clean(c) and (kind != "hard" or not _breaks_grapheme(text, c)):
                return c
    # Pathological input (a fence line longer than a message): cut anywhere that fits.
    for c in range(hi, p, -1):
        if fits(c) and text[p:c].strip():
            return c
    return p + 1


@dataclass(frozen=True)
class TextPlan:
    """The messages to send for one text result, and the whole text as a file when it is long."""

    chunks: list[str]
    attachment: tuple[str, bytes] | None = None
    continued: str = ""  # the notice that ends the last shown chunk when the rest is only attached

    @property
    def truncated(self) -> bool:
        """True when some of the text is only in the attachment."""
        return self.attachment is not None and bool(self.continued) and self.chunks[-1].endswith(self.continued)


def plan_text_messages(
    text: str,
    limit: int = MESSAGE_LIMIT,
    max_messages: int = MAX_TEXT_MESSAGES,
    attach_over: int = ATTACH_OVER_CHARS,
    locale: str | None = None,
) -> TextPlan:
    """Plan how to send text: up to `max_messages` chunks, plus `response.md` when the text is long.

    Text over `attach_over` characters or `max_messages` messages is attached whole; when it needs more
    than `max_messages` messages, the last shown one ends with "… (continued in response.md)".
    """
    chunks = split_text(text, limit)
    if not chunks:
        return TextPlan([])
    long = len(text) > attach_over or len(chunks) > max_messages
    attachment = (ATTACHMENT_NAME, text.encode("utf-8")) if long else None
    if len(chunks) <= max_messages:
        return TextPlan(chunks, attachment)
    shown = chunks[:max_messages]
    continued = t("delivery.continued", locale, ellipsis=ELLIPSIS, filename=ATTACHMENT_NAME)
    notice = "\n\n" + continued
    if len(shown[-1]) + len(notice) > limit:
        # Re-split the last shown message smaller so the notice fits; fences stay balanced.
        shown[-1] = split_text(shown[-1], limit - len(notice))[0]
    shown[-1] += notice
    return TextPlan(shown, attachment, continued)


# ------------------------------------------------------------------------------------------- embeds


def _cut(s: str, n: int) -> str:
    if len(s) <= n:
        return s
    return s[: max(0, n - 1)] + ELLIPSIS if n > 0 else ""


def _embed_size(e: Mapping[str, Any]) -> int:
    total = len(e.get("title") or "") + len(e.get("description") or "")
    total += sum(len(f.get("name") or "") + len(f.get("value") or "") for f in e.get("fields") or [])
    total += len((e.get("footer") or {}).get("text") or "") + len((e.get("author") or {}).get("name") or "")
    return total


def _clamp_dict(embed: Mapping[str, Any], budget: int) -> dict[str, Any]:
    e = dict(embed)
    if e.get("title"):
        e["title"] = _cut(e["title"], EMBED_TITLE)
    if e.get("description"):
        e["description"] = _cut(e["description"], EMBED_DESCRIPTION)
    if e.get("fields"):
        e["fields"] = [
            {
                **f,
                "name": _cut(f.get("name") or "", EMBED_FIELD_NAME),
                "value": _cut(f.get("value") or "", EMBED_FIELD_VALUE),
            }
            for f in e["fields"][:EMBED_FIELDS]
        ]
    if e.get("footer", {}).get("text"):
        e["footer"] = {**e["footer"], "text": _cut(e["footer"]["text"], EMBED_FOOTER)}
    if e.get("author", {}).get("name"):
        e["author"] = {**e["author"], "name": _cut(e["author"]["name"], EMBED_AUTHOR)}

    over = _embed_size(e) - budget
    if over > 0 and e.get("description"):
        keep = len(e["description"]) - over
        if keep >= 2:
            e["description"] = _cut(e["description"], keep)
        else:
            del e["description"]
        over = _embed_size(e) - budget
    fields = list(e.get("fields") or [])
    while over > 0 and fields:
        last = fields[-1]
        keep = len(last["value"]) - over
        if keep >= 2:
            fields[-1] = {**last, "value": _cut(last["value"], keep)}
        else:
            fields.pop()
        e["fields"] = fields
        over = _embed_size(e) - budget
    # Only a tiny shared budget (clamp_embeds) gets this far.
    for key, sub in (("footer", "text"), ("author", "name"), ("title", None)):
        if over <= 0:
            break
        value = e.get(key) if sub is None else (e.get(key) or {}).get(sub)
        if not value:
            continue
        keep = len(value) - over
        new = _cut(value, keep) if keep >= 2 else ""
        if sub is None:
            e[key] = new
        else:
            e[key] = {**e[key], sub: new}
        over = _embed_size(e) - budget
    return e


E = TypeVar("E", dict[str, Any], discord.Embed)


def clamp_embed(embed: E, budget: int = EMBED_TOTAL) -> E:
    """Trim an embed (a dict or a discord.Embed) to Discord's limits; cut text ends with "…".

    Each part is cut to its own limit first; if the total is still over `budget` (6000), the description
    is trimmed, then fields from the end.
    """
    if isinstance(embed, discord.Embed):
        return discord.Embed.from_dict(_clamp_dict(embed.to_dict(), budget))
    return _clamp_dict(embed, budget)


def clamp_embeds(embeds: Sequence[E]) -> list[E]:
    """At most 10 embeds, each clamped, sharing the 6000-character total of one message."""
    out: list[E] = []
    left = EMBED_TOTAL
    for embed in embeds[:MAX_EMBEDS]:
        if left <= 0:
            break
        clamped = clamp_embed(embed, left)
        size = _embed_size(clamped.to_dict() if isinstance(clamped, discord.Embed) else clamped)
        left -= size
        out.append(clamped)
    return out
