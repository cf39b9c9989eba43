"""A Discord-compatible test server for running the real discord.py client offline.

``FakeDiscord`` serves Discord's REST API (``/api/v10/...``), the gateway (a websocket at ``/gateway``)
and a CDN (``/attachments/...``) on 127.0.0.1 from inside the test's event loop, and enforces the
platform rules a bot meets in production: the 3 s acknowledgement deadline (10062), double
acknowledgement (40060), 15-minute interaction tokens (50027), message/embed/component/attachment limits
(50035), ``attachment_size_limit`` (413 / 40005), rate limits, permissions, pings, old-message edits,
modal/autocomplete/select/button rules, archived and locked threads and forums (below), and injected 429s.
Every rule the bot breaks is kept in ``server.violations``; tests/conftest.py fails every passing test whose
servers recorded one it did not ``tolerate(kind)``.

Strict rules:

- Rate limits: per-route buckets (``RATE_LIMITS``, per channel or per interaction token) answered with
  ``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket``; past a bucket or the global limit (50/s for
  bot-token requests; callbacks and interaction webhooks are exempt) a real 429 with ``retry_after``,
  ``global``, ``Via`` and ``X-RateLimit-Scope``. discord.py reads the headers and waits, so a well-behaved
  bot earns none; each one it earns is counted in ``rate_limit_hits`` (and ``rate_limited``), not a
  violation: it costs the bot time, and the user nothing they would notice.
- Permissions: the bot's guild permissions are @everyone's plus its role's (``set_bot_permissions``), with
  channel overwrites (``set_overwrite``; threads follow their parent). Bot-token routes answer 403 50001
  without View Channel and 50013 without what the request needs (send, attach files, embed links, threads,
  deleting others' messages, reactions). Interactions carry the result as ``app_permissions``; interaction
  responses need none (Discord lets apps answer, attach and embed there).
- Pings: a bot message (created, edited, followup, webhook; not ephemeral) whose content would ping under
  its ``allowed_mentions`` is an ``unexpected_ping`` violation unless the test called ``expect_ping``.
  Mention Everyone is not required: a server that grants it must not be pinged either.
- Edits of messages older than ``old_message_age`` (an hour, by ``now()``: ``clock`` plus
  ``advance_clock``) answer 400 30046; Discord allows only a few, this server none.
- Modals (title 45, custom_id 100, 1-5 rows, label 45, placeholder 100, value 4000), autocomplete (25
  choices, name and string value 1-100), selects (option label/value/description 100), buttons (link:
  url and no custom_id; others: custom_id and no url), duplicated custom_ids: 400 50035.
- Threads: posting or editing in an archived thread answers 400 50083; in a locked one 403 50013 without
  Manage Threads (``add_thread``, ``set_thread_state``, PATCH /channels/{id} to unarchive). Forums
  (``add_forum``): a plain message answers 400 50008; a post is a thread with its starter message.

Usage::

    async with FakeDiscord(token="t0ken") as server:           # or: await server.start() / stop()
        guild = server.add_guild(name="Test", locale="en-US")
        chan = server.add_channel(guild, name="general")
        alice = server.add_user("alice", locale="en-US", manage_messages=True)
        bot = commands.Bot(command_prefix="!", intents=..., guild_ready_timeout=0.05)
        async with run_bot(bot, server):                       # points discord.py here, waits for on_ready
            ix = await server.slash(alice, chan, "imagine", prompt="a cat", count=2)
            await ix.acked()                                   # ix.ack_type, ix.ack_latency, ix.ephemeral
            msg = await ix.response()                          # @original once it has a body
            await ix.wait_final(lambda ix: len(ix.followups) == 2)
            ix2 = await server.press(alice, msg, label="Re-roll")
            ix3 = await server.submit_modal(alice, ix2, {"prompt": "a dog"})   # after a type-9 response
            choices = await server.autocomplete(alice, chan, "imagine", focused="model", value="fl")
            m = await server.send_message(alice, chan, "hi", reply_to=msg, attachments=[("a.png", b"..", "image/png")])
            ix4 = await server.context_menu(alice, chan, "Transcribe", target=m)
        assert server.violations == []

Test-facing objects:

- ``FakeDiscord``: ``api_base``, ``gateway_url``, ``http_base``, ``application_id``, ``bot_user``,
  ``token``, ``ack_deadline``, ``token_lifetime``, ``attachment_size_limit`` (per interaction, settable
  any time), ``heartbeat_interval``, ``enforce_intents``; logs ``violations``, ``requests``,
  ``unknown_requests``, ``rate_limited``, ``rate_limit_hits``, ``interactions``, ``sessions``,
  ``identify_count``, ``command_syncs``, ``command_creations``, ``commands`` (global and per guild);
  settable ``rate_limits``, ``global_rate_limit``, ``old_message_age``, ``clock``.
  Expectations: ``expect_ping``, ``tolerate``, ``unexpected_violations``. Permissions: ``permissions_for``,
  ``bot_permissions``, ``set_bot_permissions``, ``set_overwrite``, ``everyone_role``, ``bot_role``.
  Actions: ``add_guild``, ``add_channel``, ``add_forum``, ``add_thread``, ``set_thread_state``, ``add_user``,
  ``dm_channel``, ``advance_clock``, ``slash``, ``autocomplete``,
  ``context_menu``, ``press``, ``submit_modal``, ``send_message``, ``inject_429``, ``wait_for``, ``ready``,
  ``request_reconnect`` (op 7; the bot RESUMEs).
- ``FakeInteraction``: ``acked()``, ``response()``, ``wait_final(pred)``, ``wait_modal()``, ``original``,
  ``followups``, ``messages``, ``modal``, ``choices``, ``ack_type``, ``ack_latency``, ``ephemeral``,
  ``error`` (10062 once a late callback killed it), ``rejections`` (codes of refused callbacks, e.g. 50035),
  ``callbacks`` (every callback body with its time), ``payload`` (the INTERACTION_CREATE data).
- ``FakeMessage``: ``id``, ``channel``, ``author``, ``content``, ``embeds``, ``attachments``, ``components``,
  ``buttons``, ``selects``, ``allowed_mentions``, ``would_ping``, ``pings``, ``flags``, ``ephemeral``,
  ``loading``, ``edits`` ((monotonic time, payload) per edit), ``deleted``, ``reference``, ``thread``,
  ``reactions``, ``interaction``.
- ``FakeChannel``: ``messages`` (visible ones), ``ephemeral_messages``, ``all_messages``, ``threads``.
- ``run_bot(bot, server)``: async context manager that points discord.py at the server (``Route.BASE``
  and ``DiscordWebSocket.DEFAULT_GATEWAY``), logs in, connects, waits for ``on_ready`` and closes the bot
  and restores the globals on exit. ``point_discord_py_at(server)`` does only the pointing.

Mention rules: with no ``allowed_mentions`` a bot-token channel message parses everything and an
interaction/webhook message parses users only; ``would_ping`` says whether the current content pings
anyone (``@everyone``/``@here``, ``<@id>``, ``<@&id>``) under the ``allowed_mentions`` last sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import mimetypes
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self, TypeVar
from urllib.parse import quote

import aiohttp
import discord
import yarl
from aiohttp import WSMsgType, web

__all__ = [
    "DEFAULT_ATTACHMENT_SIZE_LIMIT",
    "Button",
    "FakeAttachment",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeInteraction",
    "FakeMessage",
    "FakeModal",
    "FakeUser",
    "GatewaySession",
    "ModalField",
    "RateLimitHit",
    "RequestRecord",
    "Violation",
    "perms",
    "point_discord_py_at",
    "run_bot",
]

DISCORD_EPOCH_MS = 1420070400000
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024

# Permission bits (https://discord.com/developers/docs/topics/permissions)
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
ALL_PERMISSIONS = (1 << 51) - 1
DEFAULT_MEMBER_PERMISSIONS = (
    (1 << 6)  # add reactions
    | (1 << 10)  # view channel
    | (1 << 11)  # send messages
    | (1 << 14)  # embed links
    | (1 << 15)  # attach files
    | (1 << 16)  # read message history
    | (1 << 18)  # use external emojis
    | (1 << 20)  # connect
    | (1 << 21)  # speak
    | (1 << 26)  # change nickname
    | (1 << 31)  # use application commands
    | (1 << 35)  # create public threads
    | (1 << 38)  # send messages in threads
)
DEFAULT_BOT_PERMISSIONS = DEFAULT_MEMBER_PERMISSIONS | (1 << 36)  # create private threads

# Message flags
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15

# Gateway intents
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DM_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# Per-route buckets, (requests, seconds) per top-level resource (channel, or webhook id + token). Discord
# publishes none of them ("parse the headers"); these are the values bots see in X-RateLimit-* headers:
# message create and edit 5 per 5 s per channel, delete 5 per 1 s, reactions 1 per 0.25 s, interaction
# webhooks (followups and @original edits) 5 per 2 s per token. Every other route gets "default".
# Interaction callbacks carry no bucket, and neither they nor the interaction webhooks (no bot token)
# count against the global limit of 50 requests per second per bot token.
RATE_LIMITS: dict[str, tuple[int, float]] = {
    "message_create": (5, 5.0),
    "message_edit": (5, 5.0),
    "message_delete": (5, 1.0),
    "reaction": (1, 0.25),
    "webhook": (5, 2.0),
    "default": (50, 1.0),
}
GLOBAL_RATE_LIMIT = (50, 1.0)
OLD_MESSAGE_AGE = 3600.0  # edits of bot messages older than this answer 30046

_T = TypeVar("_T")
# Every server made in this process, newest last: tests/conftest.py checks them after each test
SERVERS: list[FakeDiscord] = []
# (method, path) of the request being handled, for violations recorded deep inside a handler
_CURRENT_REQUEST: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("_CURRENT_REQUEST")


def perms(*, admin: bool = False, manage_messages: bool = False, manage_guild: bool = False) -> int:
    """Permission integer for an ordinary member plus the named extras."""
    value = DEFAULT_MEMBER_PERMISSIONS
    if admin:
        value |= ADMINISTRATOR
    if manage_messages:
        value |= MANAGE_MESSAGES
    if manage_guild:
        value |= MANAGE_GUILD
    return value


def _effective(permissions: int) -> int:
    """Resolve administrator to every permission, as Discord reports it."""
    return ALL_PERMISSIONS if permissions & ADMINISTRATOR else permissions


def _iso(ts: float | None) -> str | None:
    """Wall-clock seconds to Discord's ISO 8601 timestamps."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


NONCE_WINDOW = 300.0  # seconds Discord remembers an enforced nonce ("the past few minutes")

class _Snowflakes:
    """Snowflake generator; every id gets its own millisecond so ``id >> 22`` picks shards predictably."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._last = 0
        self._clock = clock

    def next(self, *, shard: tuple[int, int] | None = None) -> int:
        """A fresh id (timestamped by the server's clock); with ``shard=(k, n)`` one whose ``(id >> 22) % n == k``."""
        ms = max(int(self._clock() * 1000) - DISCORD_EPOCH_MS, self._last + 1)
        if shard is not None:
            k, n = shard
            while ms % n != k:
                ms += 1
        self._last = ms
        return ms << 22


# --------------------------------------------------------------------------------------------------
# Model objects


@dataclass(eq=False)
class FakeUser:
    """A Discord user (simulated person or the bot)."""

    id: int
    name: str
    locale: str = "en-US"
    permissions: int = DEFAULT_MEMBER_PERMISSIONS
    bot: bool = False
    global_name: str | None = None

    @property
    def mention(self) -> str:
        """``<@id>``."""
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        """The user object Discord sends."""
        return {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
        }


@dataclass(eq=False)
class FakeRole:
    """A guild role."""

    id: int
    name: str
    permissions: int
    managed: bool = False
    bot_id: int | None = None
    position: int = 0

    def payload(self) -> dict[str, Any]:
        """The role object Discord sends."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }
        if self.bot_id is not None:
            data["tags"] = {"bot_id": str(self.bot_id)}
        return data


@dataclass(eq=False)
class FakeGuild:
    """A guild (server)."""

    id: int
    name: str
    locale: str
    owner_id: int
    features: list[str] = field(default_factory=list)
    app_permissions: int = DEFAULT_BOT_PERMISSIONS
    channels: list[FakeChannel] = field(default_factory=list)
    members: dict[int, FakeUser] = field(default_factory=dict)
    roles: list[FakeRole] = field(default_factory=list)
    joined_at: float = field(default_factory=time.time)

    def shard_id(self, shard_count: int) -> int:
        """Which shard receives this guild's events."""
        return (self.id >> 22) % max(shard_count, 1)

    def __repr__(self) -> str:
        return f"<FakeGuild {self.id} {self.name!r}>"


@dataclass(eq=False)
class FakeChannel:
    """A guild text channel, thread or DM channel."""

    id: int
    name: str
    type: int = 0
    guild: FakeGuild | None = None
    nsfw: bool = False
    topic: str | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    recipient: FakeUser | None = None
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT
    all_messages: list[FakeMessage] = field(default_factory=list)
    threads: list[FakeChannel] = field(default_factory=list)
    position: int = 0
    created_at: float = field(default_factory=time.time)
    # permission overwrites: target id -> (type 0 role / 1 member, allow, deny)
    overwrites: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    archived: bool = False
    locked: bool = False

    @property
    def is_thread(self) -> bool:
        """True for thread channels (types 10, 11, 12)."""
        return self.type in (10, 11, 12)

    @property
    def is_forum(self) -> bool:
        """True for forum (15) and media (16) channels: only threads with a starter message go there."""
        return self.type in (15, 16)

    def __repr__(self) -> str:
        return f"<FakeChannel {self.id} {self.name!r} type={self.type}>"

    @property
    def messages(self) -> list[FakeMessage]:
        """Messages as everyone sees the channel: not ephemeral, not deleted, oldest first."""
        return [m for m in self.all_messages if not m.ephemeral and not m.deleted]

    @property
    def ephemeral_messages(self) -> list[FakeMessage]:
        """Ephemeral messages shown to single users here (not deleted)."""
        return [m for m in self.all_messages if m.ephemeral and not m.deleted]

    @property
    def mention(self) -> str:
        """``<#id>``."""
        return f"<#{self.id}>"


@dataclass(eq=False)
class FakeAttachment:
    """A stored file (uploaded by a simulated user or by the bot)."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def __repr__(self) -> str:
        return f"<FakeAttachment {self.id} {self.filename!r} {self.content_type} {self.size} B>"

    def payload(self) -> dict[str, Any]:
        """The attachment object Discord sends."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
            "flags": 0,
        }
        if self.description is not None:
            data["description"] = self.description
        if self.ephemeral:
            data["ephemeral"] = True
        return data


@dataclass(frozen=True)
class Button:
    """A button flattened out of a message's components."""

    label: str | None
    custom_id: str | None
    style: int
    disabled: bool
    emoji: dict[str, Any] | None
    url: str | None


_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_EVERYONE = re.compile(r"@(everyone|here)")


@dataclass(eq=False)
class FakeMessage:
    """A message as the server stores it."""

    id: int
    channel: FakeChannel
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    allowed_mentions: dict[str, Any] | None = None
    flags: int = 0
    type: int = 0
    tts: bool = False
    reference: FakeMessage | None = None
    thread: FakeChannel | None = None
    webhook_id: int | None = None
    interaction: FakeInteraction | None = None
    via: str = "user"  # "user", "bot" (bot token), "interaction" (callback or webhook token)
    edits: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)
    sticker_ids: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None
    reported_pings: set[str] = field(default_factory=set)

    @property
    def channel_id(self) -> int:
        """The channel's id."""
        return self.channel.id

    def __repr__(self) -> str:
        extra = " ephemeral" if self.ephemeral else ""
        extra += " deleted" if self.deleted else ""
        files = [a.filename for a in self.attachments]
        return (
            f"<FakeMessage {self.id} by {self.author.name} in #{self.channel.name}{extra}: "
            f"{self.content[:80]!r} embeds={len(self.embeds)} files={files} buttons={[b.label for b in self.buttons]}>"
        )

    @property
    def ephemeral(self) -> bool:
        """True if only the invoking user sees it."""
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while it is a deferred "is thinking..." placeholder."""
        return bool(self.flags & FLAG_LOADING)

    @property
    def has_body(self) -> bool:
        """True once it shows something (content, embeds, files or components)."""
        return bool(self.content or self.embeds or self.attachments or self.components)

    @property
    def buttons(self) -> list[Button]:
        """Every button, flattened out of rows, sections and containers."""
        return [
            Button(
                label=c.get("label"),
                custom_id=c.get("custom_id"),
                style=int(c.get("style", 1)),
                disabled=bool(c.get("disabled", False)),
                emoji=c.get("emoji"),
                url=c.get("url"),
            )
            for c in _walk_components(self.components)
            if c.get("type") == 2
        ]

    @property
    def selects(self) -> list[dict[str, Any]]:
        """Every select menu (raw component dicts)."""
        return [c for c in _walk_components(self.components) if c.get("type") in (3, 5, 6, 7, 8)]

    @property
    def pings(self) -> list[str]:
        """What the message would ping: "@everyone", "@here", "user:ID", "role:ID", "reply:ID"."""
        am = self.allowed_mentions
        users: set[str] = set()
        roles: set[str] = set()
        if am is None:
            parse = {"users", "roles", "everyone"} if self.via == "bot" else {"users"}
        else:
            parse = set(am.get("parse") or [])
            users = {str(u) for u in am.get("users") or []}
            roles = {str(r) for r in am.get("roles") or []}
        out: list[str] = []
        if "everyone" in parse:
            out += [f"@{m.group(1)}" for m in _EVERYONE.finditer(self.content)]
        out += [f"user:{u}" for u in _USER_MENTION.findall(self.content) if "users" in parse or u in users]
        out += [f"role:{r}" for r in _ROLE_MENTION.findall(self.content) if "roles" in parse or r in roles]
        ref = self.reference
        if ref is not None and ref.author is not self.author and (am is None or am.get("replied_user")):
            out.append(f"reply:{ref.author.id}")
        return out

    @property
    def would_ping(self) -> bool:
        """True if the content pings someone under the allowed_mentions sent with it."""
        return bool(self.pings)

    @property
    def files(self) -> dict[str, bytes]:
        """Attachments by filename."""
        return {a.filename: a.data for a in self.attachments}


@dataclass
class ModalField:
    """One input of a modal the bot showed."""

    custom_id: str
    label: str | None
    type: int = 4
    style: int | None = None
    value: str | None = None
    placeholder: str | None = None
    required: bool = True
    min_length: int | None = None
    max_length: int | None = None
    options: list[dict[str, Any]] = field(default_factory=list)
    wrapper: str = "row"  # "row" (type 1 action row) or "label" (type 18 label)


@dataclass
class FakeModal:
    """A modal the bot answered an interaction with (callback type 9)."""

    custom_id: str
    title: str
    fields: list[ModalField]
    raw: dict[str, Any]

    def field(self, custom_id: str) -> ModalField:
        """The field with this custom_id."""
        for f in self.fields:
            if f.custom_id == custom_id:
                return f
        raise KeyError(
            f"modal {self.custom_id!r} has no field {custom_id!r}; has {[f.custom_id for f in self.fields]}"
        )


@dataclass
class Violation:
    """A platform rule the bot broke, with the error Discord answers."""

    kind: str
    status: int
    code: int
    message: str
    method: str
    path: str
    errors: dict[str, Any] | None = None

    def __str__(self) -> str:
        extra = f" {json.dumps(self.errors)}" if self.errors else ""
        return f"{self.kind}: {self.status}/{self.code} {self.message} ({self.method} {self.path}){extra}"


@dataclass
class RateLimitHit:
    """A 429 the bot earned by exceeding a bucket (not an injected one)."""

    scope: str  # "user" (a per-route bucket) or "global"
    bucket: str
    method: str
    path: str
    retry_after: float


@dataclass
class RequestRecord:
    """One HTTP request the bot made (Authorization header left out)."""

    method: str
    path: str
    headers: dict[str, str]
    body: str
    time: float


@dataclass
class _Injection:
    substring: str
    retry_after: float
    remaining: int
    is_global: bool


class _ApiError(Exception):
    """An error answer; ``kind`` set means it is a rule violation."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        kind: str | None = None,
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.kind = kind
        self.errors = errors

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            data["errors"] = self.errors
        return data


class _Errors:
    """Builds Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.kinds: list[str] = []

    def add(self, path: Sequence[str | int], code: str, message: str, kind: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
        self.kinds.append(kind)

    def raise_if_any(self) -> None:
        if self.kinds:
            raise _ApiError(400, 50035, "Invalid Form Body", kind=self.kinds[0], errors=self.tree)


def _walk_components(components: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for c in components:
        yield c
        yield from _walk_components(c.get("components") or [])
        for key in ("accessory", "component"):
            if isinstance(c.get(key), Mapping):
                yield from _walk_components([c[key]])


# --------------------------------------------------------------------------------------------------
# Interactions


@dataclass(eq=False)
class FakeInteraction:
    """An interaction the server dispatched, and what the bot did with it."""

    server: FakeDiscord
    id: int
    token: str
    type: int
    user: FakeUser
    channel: FakeChannel
    payload: dict[str, Any]
    dispatched_at: float
    attachment_size_limit: int
    message: FakeMessage | None = None
    source: FakeInteraction | None = None
    ack_type: int | None = None
    acked_at: float | None = None
    ephemeral: bool = False
    error: int | None = None
    rejections: list[int] = field(default_factory=list)
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    modal: FakeModal | None = None
    choices: list[dict[str, Any]] | None = None
    callbacks: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def ack_latency(self) -> float | None:
        """Seconds from dispatch to the first accepted callback."""
        return None if self.acked_at is None else self.acked_at - self.dispatched_at

    def __repr__(self) -> str:
        name = self.payload.get("data", {}).get("name") or self.payload.get("data", {}).get("custom_id")
        return (
            f"<FakeInteraction {self.id} type={self.type} {name!r} by {self.user.name} ack={self.ack_type} "
            f"error={self.error} rejections={self.rejections} followups={len(self.followups)}>"
        )

    @property
    def messages(self) -> list[FakeMessage]:
        """The original response (if any) followed by the followups."""
        return ([self.original] if self.original is not None else []) + self.followups

    async def acked(self) -> FakeInteraction:
        """Wait for the acknowledgement; AssertionError if the user would see "This interaction failed"."""
        server = self.server
        limit = max(self.dispatched_at + server.ack_deadline - server.loop_time(), 0.0) + 0.5
        try:
            await server.wait_for(lambda: self.ack_type is not None or self.error is not None, timeout=limit)
        except TimeoutError:
            raise AssertionError(
                f"interaction {self.id} was not acknowledged within {server.ack_deadline} s"
            ) from None
        if self.ack_type is None:
            raise AssertionError(f"interaction {self.id} acknowledgement was rejected with code {self.error}")
        return self

    async def response(self, timeout: float | None = None) -> FakeMessage:
        """The @original message once it has content, embeds, files or components."""
        await self.acked()

        def ready() -> FakeMessage | None:
            o = self.original
            return o if o is not None and not o.loading and o.has_body else None

        return await self.server.wait_for(ready, timeout=timeout)

    async def wait_final(
        self, predicate: Callable[[FakeInteraction], Any], timeout: float | None = None
    ) -> FakeInteraction:
        """Wait until ``predicate(self)`` is truthy (checked on every change)."""
        await self.server.wait_for(lambda: predicate(self), timeout=timeout)
        return self

    async def wait_modal(self, timeout: float | None = None) -> FakeModal:
        """The modal the bot answered with."""
        return await self.server.wait_for(lambda: self.modal, timeout=timeout)


# --------------------------------------------------------------------------------------------------
# Gateway sessions


class GatewaySession:
    """One gateway websocket connection (one shard)."""

    def __init__(self, server: FakeDiscord, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.ws = ws
        self.session_id = secrets.token_hex(16)
        self.seq = 0
        self.shard_id = 0
        self.shard_count = 1
        self.intents = 0
        self.identified = False
        self.closed = False
        self.close_code: int | None = None
        self.heartbeats = 0
        self.resumed = False
        self.events: list[tuple[str, dict[str, Any]]] = []

    @property
    def open(self) -> bool:
        """Identified and still connected."""
        return self.identified and not self.closed and not self.ws.closed

    def handles(self, guild_id: int | None) -> bool:
        """Whether this shard receives events for that guild (DMs go to shard 0)."""
        if guild_id is None:
            return self.shard_id == 0
        return (guild_id >> 22) % max(self.shard_count, 1) == self.shard_id

    async def send(self, payload: dict[str, Any]) -> None:
        """Send one TEXT json frame."""
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send an op 0 dispatch."""
        self.seq += 1
        self.events.append((event, data))
        await self.send({"op": 0, "t": event, "s": self.seq, "d": data})


# --------------------------------------------------------------------------------------------------
# The server

_Handler = Callable[["_Request", "re.Match[str]"], Any]


@dataclass
class _Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    json: Any
    files: list[tuple[int, str, str, bytes]]  # (index, filename, content_type, data)


class FakeDiscord:
    """A Discord-compatible REST + gateway + CDN server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        token: str = "fake-bot-token",
        *,
        shards: int = 1,
        ack_deadline: float = 3.0,
        token_lifetime: float = 15 * 60,
        heartbeat_interval: int = 41250,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        bot_name: str = "natty",
        timeout: float = 10.0,
        enforce_intents: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.clock: Callable[[], float] = clock or time.time
        self._clock_offset = 0.0
        self.token = token
        self.shards = shards
        self.ack_deadline = ack_deadline
        self.token_lifetime = token_lifetime
        self.heartbeat_interval = heartbeat_interval
        self.attachment_size_limit = attachment_size_limit
        self.timeout = timeout
        self.enforce_intents = enforce_intents
        self._ids = _Snowflakes(self.now)
        self.application_id = self._ids.next()
        self.bot_user = FakeUser(self._ids.next(), bot_name, bot=True)
        self.owner = FakeUser(self._ids.next(), "owner")
        self.guilds: list[FakeGuild] = []
        self.users: dict[int, FakeUser] = {self.bot_user.id: self.bot_user, self.owner.id: self.owner}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self._nonces: dict[tuple[int, str], tuple[float, FakeMessage]] = {}  # enforce_nonce: (channel, nonce)
        self.attachments: dict[int, FakeAttachment] = {}
        self.interactions: list[FakeInteraction] = []
        self._ix_by_id: dict[int, FakeInteraction] = {}
        self._ix_by_token: dict[str, FakeInteraction] = {}
        self._dms: dict[int, FakeChannel] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self._command_norms: dict[int, str] = {}
        self.command_syncs: list[tuple[int | None, list[str]]] = []
        self.command_creations = 0
        self.violations: list[Violation] = []
        self.requests: list[RequestRecord] = []
        self.unknown_requests: list[RequestRecord] = []
        self.rate_limited: list[RequestRecord] = []
        self.rate_limit_hits: list[RateLimitHit] = []
        self.rate_limits: dict[str, tuple[int, float]] = dict(RATE_LIMITS)
        self.global_rate_limit: tuple[int, float] | None = GLOBAL_RATE_LIMIT
        self._windows: dict[tuple[str, str], list[float]] = {}  # (bucket, major) -> [reset_at, used]
        self.old_message_age = OLD_MESSAGE_AGE
        self.expected_pings: set[str] = set()
        self.tolerated: set[str] = set()
        self._injections: list[_Injection] = []
        self.sessions: list[GatewaySession] = []
        self.identify_count = 0
        self._changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes: list[tuple[str, re.Pattern[str], _Handler, bool, str | None]] = []
        self._register_routes()
        SERVERS.append(self)

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Start listening on a free port of 127.0.0.1."""
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_get("/gateway", self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._http_handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close every gateway connection and stop the server."""
        for s in self.sessions:
            if not s.ws.closed:
                with contextlib.suppress(Exception):
                    await s.ws.close(code=1001)
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def http_base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """The value for ``discord.http.Route.BASE``."""
        return f"{self.http_base}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The value for ``DiscordWebSocket.DEFAULT_GATEWAY`` (a ``ws://`` URL)."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    @staticmethod
    def loop_time() -> float:
        """The monotonic clock used for deadlines and edit times."""
        return asyncio.get_running_loop().time()

    def now(self) -> float:
        """The server's wall clock (``clock()`` plus ``advance_clock`` offsets): message ages, ids, rate windows."""
        return self.clock() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the server's wall clock forward, e.g. past the hour after which old messages cannot be edited."""
        self._clock_offset += seconds

    # ---- what the test expects ----------------------------------------------------------------------

    def expect_ping(self, *targets: FakeUser | FakeRole | FakeGuild | str) -> None:
        """Let bot messages ping these: a user (mention or reply), a role, a guild (@everyone/@here) or "@here"."""
        for t in targets:
            if isinstance(t, FakeUser):
                self.expected_pings |= {f"user:{t.id}", f"reply:{t.id}"}
            elif isinstance(t, FakeRole):
                self.expected_pings.add(f"role:{t.id}")
            elif isinstance(t, FakeGuild):
                self.expected_pings |= {"@everyone", "@here"}
            else:
                self.expected_pings.add(t)

    def tolerate(self, *kinds: str) -> None:
        """Violation kinds this test provokes on purpose; ``unexpected_violations`` leaves them out."""
        self.tolerated.update(kinds)

    @property
    def unexpected_violations(self) -> list[Violation]:
        """Violations of kinds the test did not ``tolerate``: what the central teardown check asserts empty."""
        return [v for v in self.violations if v.kind not in self.tolerated]

    def _violation(self, kind: str, message: str, *, status: int = 200, code: int = 0) -> None:
        method, path = _CURRENT_REQUEST.get(("", ""))
        self.violations.append(Violation(kind, status, code, message, method, path))

    # ---- waiting ----------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], _T | None], timeout: float | None = None) -> _T:
        """Wait until ``predicate()`` is truthy and return its value; TimeoutError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout or self.timeout} s")
            event = self._changed
            with contextlib.suppress(TimeoutError):
                # also poll: the predicate may look at the bot's own state
                await asyncio.wait_for(event.wait(), min(remaining, 0.05))

    async def ready(self, shards: int | None = None, timeout: float | None = None) -> list[GatewaySession]:
        """Wait until ``shards`` (default: all) shard connections have identified."""
        want = self.shards if shards is None else shards

        def done() -> list[GatewaySession] | None:
            live = [s for s in self.sessions if s.open]
            return live if len({s.shard_id for s in live}) >= want else None

        return await self.wait_for(done, timeout=timeout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- world building ---------------------------------------------------------------------------

    def add_guild(
        self,
        name: str = "Test",
        *,
        locale: str = "en-US",
        features: Sequence[str] = (),
        shard: int | None = None,
        app_permissions: int = DEFAULT_BOT_PERMISSIONS,
    ) -> FakeGuild:
        """Add a guild the bot is in; ``shard`` picks an id that lands on that shard."""
        gid = self._ids.next(shard=None if shard is None else (shard, self.shards))
        guild = FakeGuild(gid, name, locale, owner_id=self.owner.id, features=list(features))
        guild.app_permissions = app_permissions
        guild.roles.append(FakeRole(gid, "@everyone", DEFAULT_MEMBER_PERMISSIONS))
        bot_role = FakeRole(self._ids.next(), self.bot_user.name, app_permissions, managed=True, position=1)
        bot_role.bot_id = self.bot_user.id
        guild.roles.append(bot_role)
        guild.members[self.bot_user.id] = self.bot_user
        self.guilds.append(guild)
        if any(s.open for s in self.sessions):
            self._spawn(self._dispatch("GUILD_CREATE", self._guild_create(guild), guild.id))
        return guild

    def add_channel(
        self,
        guild: FakeGuild,
        name: str = "general",
        *,
        nsfw: bool = False,
        topic: str | None = None,
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    ) -> FakeChannel:
        """Add a text channel to a guild."""
        chan = FakeChannel(
            self._ids.next(),
            name,
            0,
            guild,
            nsfw=nsfw,
            topic=topic,
            attachment_size_limit=attachment_size_limit,
            position=len(guild.channels),
            created_at=self.now(),
        )
        guild.channels.append(chan)
        self.channels[chan.id] = chan
        if any(s.open for s in self.sessions):
            self._spawn(self._dispatch("CHANNEL_CREATE", self._channel_payload(chan), guild.id))
        return chan

    def add_forum(self, guild: FakeGuild, name: str = "forum", *, nsfw: bool = False) -> FakeChannel:
        """Add a forum channel (type 15): messages go only into its threads, each opened with a starter message."""
        chan = FakeChannel(self._ids.next(), name, 15, guild, nsfw=nsfw, position=len(guild.channels),
                           created_at=self.now())
        guild.channels.append(chan)
        self.channels[chan.id] = chan
        if any(s.open for s in self.sessions):
            self._spawn(self._dispatch("CHANNEL_CREATE", self._channel_payload(chan), guild.id))
        return chan

    def add_thread(
        self,
        parent: FakeChannel,
        name: str = "thread",
        *,
        owner: FakeUser | None = None,
        archived: bool = False,
        locked: bool = False,
        private: bool = False,
    ) -> FakeChannel:
        """Add a thread someone (default: the guild owner) opened in ``parent``."""
        assert parent.guild is not None and not parent.is_thread
        thread = FakeChannel(
            self._ids.next(), name, 12 if private else 11, parent.guild, nsfw=parent.nsfw, parent_id=parent.id,
            owner_id=(owner or self.owner).id, attachment_size_limit=parent.attachment_size_limit,
            created_at=self.now(), archived=archived, locked=locked,
        )
        parent.threads.append(thread)
        self.channels[thread.id] = thread
        if any(s.open for s in self.sessions):
            self._spawn(self._dispatch("THREAD_CREATE", self._channel_payload(thread), parent.guild.id))
        return thread

    def set_thread_state(
        self, thread: FakeChannel, *, archived: bool | None = None, locked: bool | None = None
    ) -> None:
        """Archive, unarchive, lock or unlock a thread (as a moderator or Discord's auto-archive would)."""
        assert thread.is_thread and thread.guild is not None
        if archived is not None:
            thread.archived = archived
        if locked is not None:
            thread.locked = locked
        if any(s.open for s in self.sessions):
            self._spawn(self._dispatch("THREAD_UPDATE", self._channel_payload(thread), thread.guild.id))

    # ---- permissions ------------------------------------------------------------------------------

    @staticmethod
    def everyone_role(guild: FakeGuild) -> FakeRole:
        """The guild's @everyone role (its id is the guild's)."""
        return next(r for r in guild.roles if r.id == guild.id)

    def bot_role(self, guild: FakeGuild) -> FakeRole:
        """The bot's managed role."""
        return next(r for r in guild.roles if r.managed and r.bot_id == self.bot_user.id)

    def set_bot_permissions(self, guild: FakeGuild, permissions: int, *, everyone: int | None = None) -> None:
        """Set the bot role's permissions (and optionally @everyone's); the bot's guild permissions are their union."""
        guild.app_permissions = permissions
        changed = [self.bot_role(guild)]
        changed[0].permissions = permissions
        if everyone is not None:
            self.everyone_role(guild).permissions = everyone
            changed.append(self.everyone_role(guild))
        if any(s.open for s in self.sessions):
            for role in changed:
                self._spawn(self._dispatch("GUILD_ROLE_UPDATE", {"guild_id": str(guild.id), "role": role.payload()},
                                           guild.id))

    def set_overwrite(
        self, channel: FakeChannel, target: FakeUser | FakeRole | FakeGuild, *, allow: int = 0, deny: int = 0
    ) -> None:
        """A permission overwrite on a channel (threads follow their parent's) for a member, a role or @everyone."""
        assert channel.guild is not None and not channel.is_thread
        if isinstance(target, FakeUser):
            channel.overwrites[target.id] = (1, allow, deny)
        else:
            channel.overwrites[target.id] = (0, allow, deny)
        if any(s.open for s in self.sessions):
            self._spawn(self._dispatch("CHANNEL_UPDATE", self._channel_payload(channel), channel.guild.id))

    def permissions_for(self, channel: FakeChannel, user: FakeUser) -> int:
        """``user``'s permissions in ``channel`` the way Discord computes them (overwrites of a thread's parent).

        The bot's guild permissions are @everyone's plus its role's; a simulated user's are ``user.permissions``.
        """
        guild = channel.guild
        if guild is None:
            return DEFAULT_BOT_PERMISSIONS if user is self.bot_user else DEFAULT_MEMBER_PERMISSIONS
        if user is self.bot_user:
            role_ids = {self.bot_role(guild).id}
            base = self.everyone_role(guild).permissions | self.bot_role(guild).permissions
        else:
            role = self._role_for(guild, user)
            role_ids = {role.id} if role else set()
            base = user.permissions
        if base & ADMINISTRATOR or user.id == guild.owner_id:
            return ALL_PERMISSIONS
        source = self.channels.get(channel.parent_id or 0) if channel.is_thread else channel
        overwrites = source.overwrites if source is not None else {}
        if guild.id in overwrites:
            _, allow, deny = overwrites[guild.id]
            base = (base & ~deny) | allow
        allow = deny = 0
        for tid, (otype, a, d) in overwrites.items():
            if otype == 0 and tid in role_ids:
                allow, deny = allow | a, deny | d
        base = (base & ~deny) | allow
        if user.id in overwrites:
            _, a, d = overwrites[user.id]
            base = (base & ~d) | a
        return base if base & VIEW_CHANNEL else 0

    def bot_permissions(self, channel: FakeChannel) -> int:
        """The bot's permissions in ``channel`` (what interactions carry as ``app_permissions``)."""
        return self.permissions_for(channel, self.bot_user)

    def _require(self, channel: FakeChannel, *needed: int) -> None:
        """403 Missing Access (50001) without View Channel, Missing Permissions (50013) without the others."""
        have = self.bot_permissions(channel)
        if not have & VIEW_CHANNEL:
            raise _ApiError(403, 50001, "Missing Access", kind="missing_access")
        for bit in needed:
            if not have & bit:
                raise _ApiError(403, 50013, "Missing Permissions", kind="missing_permissions")

    def _require_send(self, channel: FakeChannel, data: Mapping[str, Any], files: Sequence[Any]) -> None:
        """What posting ``data`` into ``channel`` with the bot token needs: the thread's state, then permissions."""
        if channel.is_forum:
            raise _ApiError(400, 50008, "Cannot send messages in a non-text channel", kind="forum_message")
        if channel.is_thread:
            if channel.archived:
                raise _ApiError(400, 50083, "Thread is archived", kind="archived_thread")
            self._require(channel, SEND_MESSAGES_IN_THREADS, *([MANAGE_THREADS] if channel.locked else []))
        else:
            self._require(channel, SEND_MESSAGES)
        if files:
            self._require(channel, ATTACH_FILES)
        if data.get("embeds"):
            self._require(channel, EMBED_LINKS)

    def _require_unarchived(self, channel: FakeChannel) -> None:
        if channel.is_thread and channel.archived:
            raise _ApiError(400, 50083, "Thread is archived", kind="archived_thread")

    def add_user(
        self,
        name: str,
        *,
        locale: str = "en-US",
        permissions: int | None = None,
        admin: bool = False,
        manage_messages: bool = False,
        manage_guild: bool = False,
        guilds: Sequence[FakeGuild] | None = None,
        bot: bool = False,
    ) -> FakeUser:
        """Add a user, member of ``guilds`` (default: every guild so far)."""
        if permissions is None:
            permissions = perms(admin=admin, manage_messages=manage_messages, manage_guild=manage_guild)
        user = FakeUser(self._ids.next(), name, locale=locale, permissions=permissions, bot=bot)
        self.users[user.id] = user
        for g in self.guilds if guilds is None else guilds:
            g.members[user.id] = user
        return user

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and ``user``."""
        chan = self._dms.get(user.id)
        if chan is None:
            chan = FakeChannel(self._ids.next(), "", 1, None, recipient=user)
            chan.attachment_size_limit = DEFAULT_ATTACHMENT_SIZE_LIMIT
            self._dms[user.id] = chan
            self.channels[chan.id] = chan
        return chan

    def _role_for(self, guild: FakeGuild, user: FakeUser) -> FakeRole | None:
        if user.permissions == DEFAULT_MEMBER_PERMISSIONS:
            return None
        for r in guild.roles:
            if not r.managed and r.id != guild.id and r.permissions == user.permissions:
                return r
        role = FakeRole(self._ids.next(), f"perms-{user.permissions}", user.permissions, position=1)
        guild.roles.append(role)
        return role

    def add_attachment(
        self, channel: FakeChannel, filename: str, data: bytes, content_type: str | None = None
    ) -> FakeAttachment:
        """Store a file and serve it on the CDN."""
        aid = self._ids.next()
        ctype = content_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        url = f"{self.http_base}/attachments/{channel.id}/{aid}/{quote(filename)}"
        att = FakeAttachment(aid, filename, data, ctype, url)
        self.attachments[aid] = att
        return att

    # ---- payload builders -------------------------------------------------------------------------

    def _member_payload(self, guild: FakeGuild, user: FakeUser, *, with_user: bool = True) -> dict[str, Any]:
        if user.id == self.bot_user.id:
            roles = [str(r.id) for r in guild.roles if r.managed and r.bot_id == user.id]
        else:
            role = self._role_for(guild, user)
            roles = [str(role.id)] if role else []
        data: dict[str, Any] = {
            "roles": roles,
            "joined_at": _iso(guild.joined_at),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "nick": None,
            "avatar": None,
            "banner": None,
            "premium_since": None,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = user.payload()
        return data

    def _channel_payload(self, chan: FakeChannel, viewer: FakeUser | None = None) -> dict[str, Any]:
        last = chan.all_messages[-1].id if chan.all_messages else None
        data: dict[str, Any] = {
            "id": str(chan.id),
            "type": chan.type,
            "last_message_id": str(last) if last else None,
            "flags": 0,
        }
        if chan.type == 1:
            assert chan.recipient is not None
            data["recipients"] = [chan.recipient.payload()]
            return data
        assert chan.guild is not None
        data.update(
            guild_id=str(chan.guild.id),
            name=chan.name,
            nsfw=chan.nsfw,
            position=chan.position,
            parent_id=str(chan.parent_id) if chan.parent_id else None,
            rate_limit_per_user=0,
            permission_overwrites=[
                {"id": str(tid), "type": otype, "allow": str(allow), "deny": str(deny)}
                for tid, (otype, allow, deny) in chan.overwrites.items()
            ],
        )
        if chan.is_thread:
            data.update(
                owner_id=str(chan.owner_id),
                message_count=len(chan.messages),
                member_count=1,
                total_message_sent=len(chan.messages),
                thread_metadata={
                    "archived": chan.archived,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": _iso(chan.created_at),
                    "locked": chan.locked,
                    "create_timestamp": _iso(chan.created_at),
                },
            )
        else:
            data.update(topic=chan.topic, default_auto_archive_duration=1440)
        if chan.is_forum:
            data.update(available_tags=[], default_reaction_emoji=None, default_sort_order=None,
                        default_forum_layout=0, default_thread_rate_limit_per_user=0)
        if viewer is not None:
            data["permissions"] = str(self._viewer_permissions(chan, viewer))
        return data

    def _viewer_permissions(self, chan: FakeChannel, viewer: FakeUser) -> int:
        """A simulated member's permissions as interactions carry them: their own, with the channel's overwrites."""
        if chan.guild is None or viewer is self.bot_user:
            return _effective(viewer.permissions)
        source = self.channels.get(chan.parent_id or 0) if chan.is_thread else chan
        if source is None or not source.overwrites:
            return _effective(viewer.permissions)
        return _effective(self.permissions_for(chan, viewer))

    def _guild_create(self, guild: FakeGuild) -> dict[str, Any]:
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(guild.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in guild.roles]
            + [r.payload() for r in [self._role_for(guild, u) for u in guild.members.values()] if r],
            "emojis": [],
            "stickers": [],
            "features": guild.features,
            "mfa_level": 0,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "preferred_locale": guild.locale,
            "premium_tier": 0,
            "nsfw_level": 0,
            "joined_at": _iso(guild.joined_at),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": [self._member_payload(guild, u) for u in guild.members.values()],
            "channels": [self._channel_payload(c) for c in guild.channels],
            "threads": [self._channel_payload(t) for c in guild.channels for t in c.threads],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "premium_progress_bar_enabled": False,
        }

    def _message_payload(self, msg: FakeMessage, *, depth: int = 0) -> dict[str, Any]:
        chan = msg.channel
        mentioned = [self.users[int(u)] for u in _USER_MENTION.findall(msg.content) if int(u) in self.users]
        data: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(chan.id),
            "author": msg.author.payload(),
            "content": msg.content,
            "timestamp": _iso(msg.created_at),
            "edited_timestamp": _iso(msg.edited_at),
            "tts": msg.tts,
            "mention_everyone": "@everyone" in msg.pings or "@here" in msg.pings,
            "mentions": [u.payload() for u in mentioned],
            "mention_roles": _ROLE_MENTION.findall(msg.content),
            "attachments": [a.payload() for a in msg.attachments],
            "embeds": [{"type": "rich", **e} for e in msg.embeds],
            "components": msg.components,
            "reactions": [
                {
                    "emoji": {"id": None, "name": e},
                    "count": 1,
                    "me": True,
                    "burst_colors": [],
                    "count_details": {},
                }
                for e in msg.reactions
            ],
            "pinned": False,
            "flags": msg.flags,
            "type": msg.type,
        }
        if chan.guild is not None:
            data["guild_id"] = str(chan.guild.id)
            if msg.webhook_id is None:
                data["member"] = self._member_payload(chan.guild, msg.author, with_user=False)
        if msg.webhook_id is not None:
            data["webhook_id"] = str(msg.webhook_id)
            data["application_id"] = str(self.application_id)
        if msg.reference is not None:
            ref = msg.reference
            data["message_reference"] = {
                "type": 0,
                "message_id": str(ref.id),
                "channel_id": str(ref.channel.id),
                "guild_id": str(ref.channel.guild.id) if ref.channel.guild else None,
            }
            data["referenced_message"] = self._message_payload(ref, depth=depth + 1) if depth == 0 else None
        ix = msg.interaction
        if ix is not None:
            meta: dict[str, Any] = {
                "id": str(ix.id),
                "type": ix.type,
                "user": ix.user.payload(),
                "authorizing_integration_owners": ix.payload.get("authorizing_integration_owners", {}),
            }
            if ix.type == 2:
                meta["name"] = ix.payload["data"]["name"]
                meta["command_type"] = ix.payload["data"].get("type", 1)
            if msg is not ix.original and ix.original is not None:
                meta["original_response_message_id"] = str(ix.original.id)
            if ix.message is not None:
                meta["interacted_message_id"] = str(ix.message.id)
            data["interaction_metadata"] = meta
        if msg.thread is not None:
            data["thread"] = self._channel_payload(msg.thread)
        return data

    # ---- gateway ----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        session = GatewaySession(self, ws)
        self.sessions.append(session)
        await session.send({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval}})
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    data = json.loads(frame.data)
                elif frame.type == WSMsgType.BINARY:
                    data = json.loads(frame.data.decode())
                else:
                    continue
                await self._on_gateway_op(session, data)
        finally:
            session.closed = True
            session.close_code = ws.close_code
            self._notify()
        return ws

    async def _on_gateway_op(self, session: GatewaySession, msg: dict[str, Any]) -> None:
        op, d = msg.get("op"), msg.get("d")
        if op == 1:
            session.heartbeats += 1
            await session.send({"op": 11})
        elif op == 2:
            await self._identify(session, d or {})
        elif op == 6:
            await self._resume(session, d or {})
        elif op == 8:
            await self._request_members(session, d or {})
        self._notify()

    async def _identify(self, session: GatewaySession, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = d.get("shard")
        if shard is not None:
            session.shard_id, session.shard_count = int(shard[0]), int(shard[1])
            if session.shard_id >= session.shard_count:
                await session.ws.close(code=4010, message=b"Invalid shard.")
                return
        session.intents = int(d.get("intents", 0))
        self.identify_count += 1
        guilds = [g for g in self.guilds if session.handles(g.id)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "user_settings": {},
            "geo_ordered_rtc_regions": [],
        }
        if shard is not None:
            ready["shard"] = [session.shard_id, session.shard_count]
        await session.dispatch("READY", ready)
        session.identified = True
        for g in guilds:
            await session.dispatch("GUILD_CREATE", self._guild_create(g))

    async def _resume(self, session: GatewaySession, d: dict[str, Any]) -> None:
        if d.get("token") != self.token:
            await session.ws.close(code=4004, message=b"Authentication failed.")
            return
        old = next(
            (s for s in self.sessions if s.session_id == d.get("session_id") and s is not session), None
        )
        if old is None:
            await session.send({"op": 9, "d": False})
            return
        session.session_id = old.session_id
        session.shard_id, session.shard_count = old.shard_id, old.shard_count
        session.intents, session.seq = old.intents, int(d.get("seq") or old.seq)
        session.identified = session.resumed = True
        self.sessions.remove(old)
        await session.dispatch("RESUMED", {})

    async def _request_members(self, session: GatewaySession, d: dict[str, Any]) -> None:
        guild = self._guild(int(d["guild_id"]))
        if guild is None:
            return
        members = [self._member_payload(guild, u) for u in guild.members.values()]
        if d.get("user_ids"):
            ids = {str(u) for u in d["user_ids"]}
            members = [m for m in members if m["user"]["id"] in ids]
        elif d.get("query"):
            members = [m for m in members if m["user"]["username"].startswith(d["query"])]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    async def request_reconnect(self, shard: int | None = None) -> None:
        """Send op 7 RECONNECT (to one shard or all); discord.py reconnects and RESUMEs."""
        for s in list(self.sessions):
            if s.open and (shard is None or s.shard_id == shard):
                await s.send({"op": 7, "d": None})

    def _sessions_for(self, guild_id: int | None) -> list[GatewaySession]:
        return [s for s in self.sessions if s.open and s.handles(guild_id)]

    async def _dispatch(self, event: str, data: dict[str, Any], guild_id: int | None) -> int:
        """Send a dispatch to the shard that owns ``guild_id``; returns how many sessions got it."""
        sent = 0
        for s in self._sessions_for(guild_id):
            payload = data
            if event.startswith("MESSAGE_") and self.enforce_intents:
                payload = self._apply_intents(s, event, data, guild_id)
                if payload is None:
                    continue
            await s.dispatch(event, payload)
            sent += 1
        return sent

    def _apply_intents(
        self, s: GatewaySession, event: str, data: dict[str, Any], guild_id: int | None
    ) -> dict[str, Any] | None:
        needed = INTENT_DM_MESSAGES if guild_id is None else INTENT_GUILD_MESSAGES
        if not s.intents & needed:
            return None
        if event != "MESSAGE_CREATE" and event != "MESSAGE_UPDATE":
            return data
        author = data.get("author", {}).get("id")
        mentions_bot = any(m.get("id") == str(self.bot_user.id) for m in data.get("mentions", []))
        if (
            s.intents & INTENT_MESSAGE_CONTENT
            or guild_id is None
            or author == str(self.bot_user.id)
            or mentions_bot
        ):
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    # ---- HTTP -------------------------------------------------------------------------------------

    def _register_routes(self) -> None:
        r = self._route
        r("GET", r"/users/@me", self._h_me, auth=True)
        r("GET", r"/users/(?P<uid>\d+)", self._h_user, auth=True)
        r("POST", r"/users/@me/channels", self._h_create_dm, auth=True)
        r("GET", r"/oauth2/applications/@me", self._h_app, auth=True)
        r("GET", r"/applications/@me", self._h_app, auth=True)
        r("GET", r"/gateway", self._h_gateway, auth=False)
        r("GET", r"/gateway/bot", self._h_gateway_bot, auth=True)
        cmds = r"/applications/(?P<app>\d+)(?:/guilds/(?P<guild>\d+))?/commands"
        r("PUT", cmds, self._h_put_commands, auth=True)
        r("GET", cmds, self._h_get_commands, auth=True)
        r("POST", r"/interactions/(?P<id>\d+)/(?P<token>[^/]+)/callback", self._h_callback, auth=False, bucket=None)
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        r("POST", hook, self._h_followup, auth=False, bucket="webhook")
        msg = hook + r"/messages/(?P<mid>@original|\d+)"
        r("GET", msg, self._h_hook_get, auth=False, bucket="webhook")
        r("PATCH", msg, self._h_hook_edit, auth=False, bucket="webhook")
        r("DELETE", msg, self._h_hook_delete, auth=False, bucket="webhook")
        ch = r"/channels/(?P<cid>\d+)"
        r("GET", ch, self._h_get_channel, auth=True)
        r("PATCH", ch, self._h_edit_channel, auth=True)
        r("POST", ch + r"/messages", self._h_post_message, auth=True, bucket="message_create")
        r("GET", ch + r"/messages", self._h_history, auth=True)
        r("GET", ch + r"/messages/(?P<mid>\d+)", self._h_get_message, auth=True)
        r("PATCH", ch + r"/messages/(?P<mid>\d+)", self._h_edit_message, auth=True, bucket="message_edit")
        r("DELETE", ch + r"/messages/(?P<mid>\d+)", self._h_delete_message, auth=True, bucket="message_delete")
        r("POST", ch + r"/messages/(?P<mid>\d+)/threads", self._h_thread_from_message, auth=True)
        r("POST", ch + r"/threads", self._h_thread, auth=True)
        r("POST", ch + r"/typing", self._h_typing, auth=True)
        react = ch + r"/messages/(?P<mid>\d+)/reactions/(?P<emoji>[^/]+)/@me"
        r("PUT", react, self._h_react, auth=True, bucket="reaction")
        r("DELETE", react, self._h_unreact, auth=True, bucket="reaction")
        r("GET", r"/guilds/(?P<gid>\d+)/members/(?P<uid>\d+)", self._h_member, auth=True)

    def _route(
        self, method: str, pattern: str, handler: _Handler, *, auth: bool, bucket: str | None = "default"
    ) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler, auth, bucket))

    def _rate_limit(
        self, method: str, rx: re.Pattern[str], m: re.Match[str], auth: bool, bucket: str | None, record: RequestRecord
    ) -> tuple[web.Response | None, dict[str, str]]:
        """Count the request in its bucket and the global window; a 429 answer if either is spent, else the headers."""
        now = self.now()

        def window(key: tuple[str, str], per: float) -> list[float]:
            w = self._windows.get(key)
            if w is None or now >= w[0]:
                w = self._windows[key] = [now + per, 0]
            return w

        def after(reset_at: float) -> float:
            return max(int((reset_at - now) * 1000 + 0.999) / 1000, 0.001)  # rounded up to the millisecond

        def limited(scope: str, name: str, retry: float, headers: dict[str, str]) -> web.Response:
            self.rate_limited.append(record)
            self.rate_limit_hits.append(RateLimitHit(scope, name, method, record.path, retry))
            body = {"message": "You are being rate limited.", "retry_after": retry, "global": scope == "global"}
            return self._json(body, 429, {"Via": "1.1 google", "Retry-After": str(max(1, int(retry + 0.999))),
                                          "X-RateLimit-Scope": scope, **headers})

        gw = None
        if auth and self.global_rate_limit is not None:
            glimit, gper = self.global_rate_limit
            gw = window(("global", ""), gper)
            if gw[1] >= glimit:
                return limited("global", "global", after(gw[0]), {"X-RateLimit-Global": "true"}), {}
        headers: dict[str, str] = {}
        if bucket is not None:
            limit, per = self.rate_limits.get(bucket, self.rate_limits["default"])
            name = bucket if bucket != "default" else f"{method} {rx.pattern}"
            groups = m.groupdict()
            major = groups.get("cid") or groups.get("gid") or "+".join(
                str(groups[k]) for k in ("app", "token") if groups.get(k)
            )
            w = window((name, major), per)
            bucket_hash = hashlib.sha1(name.encode()).hexdigest()[:32]
            headers = {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(max(limit - int(w[1]) - 1, 0)),
                "X-RateLimit-Reset": f"{w[0]:.3f}",
                "X-RateLimit-Reset-After": f"{after(w[0]):.3f}",
                "X-RateLimit-Bucket": bucket_hash,
            }
            if w[1] >= limit:
                return limited("user", name, after(w[0]), {**headers, "X-RateLimit-Remaining": "0"}), {}
            w[1] += 1
        if gw is not None:
            gw[1] += 1
        return None, headers

    @staticmethod
    def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        return web.Response(status=status, body=json.dumps(data).encode(), headers=h)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[tuple[int, str, str, bytes]], str]:
        ctype = request.headers.get("Content-Type", "")
        files: list[tuple[int, str, str, bytes]] = []
        if ctype.startswith("multipart/"):
            body: Any = None
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, aiohttp.BodyPartReader):  # nested multipart: not used by Discord
                    continue
                raw = await part.read(decode=False)
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(raw.decode())
                else:
                    m = re.fullmatch(r"files\[(\d+)\]|file(\d*)", name)
                    index = int(next((g for g in m.groups() if g), "0")) if m else len(files)
                    files.append(
                        (index, part.filename or name, part.headers.get("Content-Type", ""), bytes(raw))
                    )
            summary = json.dumps(body) + "".join(f" [file {f[1]} {len(f[3])} B]" for f in files)
            return body, files, summary
        raw_bytes = await request.read()
        text = raw_bytes.decode(errors="replace")
        if not text:
            return None, files, ""
        try:
            return json.loads(text), files, text
        except ValueError:
            return None, files, text

    async def _http_handler(self, request: web.Request) -> web.StreamResponse:
        body, files, summary = await self._read_body(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        record = RequestRecord(request.method, request.path_qs, headers, summary, self.loop_time())
        self.requests.append(record)
        try:
            return await self._route_request(request, record, body, files)
        finally:
            self._notify()

    async def _route_request(
        self,
        request: web.Request,
        record: RequestRecord,
        body: Any,
        files: list[tuple[int, str, str, bytes]],
    ) -> web.StreamResponse:
        path = request.path
        for inj in self._injections:
            if inj.remaining > 0 and (inj.substring in path or inj.substring in f"{request.method} {path}"):
                inj.remaining -= 1
                self.rate_limited.append(record)
                return self._json(
                    {
                        "message": "You are being rate limited.",
                        "retry_after": inj.retry_after,
                        "global": inj.is_global,
                    },
                    429,
                    {
                        "Via": "1.1 google",
                        "Retry-After": str(inj.retry_after),
                        "X-RateLimit-Scope": "global" if inj.is_global else "user",
                        **({"X-RateLimit-Global": "true"} if inj.is_global else {}),
                    },
                )
        cdn = re.fullmatch(r"/attachments/(\d+)/(\d+)/[^/]+", path)
        if cdn and request.method in ("GET", "HEAD"):
            att = self.attachments.get(int(cdn.group(2)))
            if att is None:
                return web.Response(status=404, text="Not Found")
            return web.Response(body=att.data, headers={"Content-Type": att.content_type})
        api = re.fullmatch(r"/api/v\d+(/.*)", path)
        if api is not None:
            sub = api.group(1)
            req = _Request(request.method, sub, request.query, request.headers, body, files)
            for method, rx, handler, auth, bucket in self._routes:
                m = rx.match(sub)
                if m is None or method != request.method:
                    continue
                _CURRENT_REQUEST.set((request.method, path))
                headers: dict[str, str] = {}
                try:
                    if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                        raise _ApiError(401, 0, "401: Unauthorized", kind="unauthorized")
                    refusal, headers = self._rate_limit(method, rx, m, auth, bucket, record)
                    if refusal is not None:
                        return refusal
                    response = await handler(req, m)
                except _ApiError as e:
                    if e.kind is not None:
                        self.violations.append(
                            Violation(e.kind, e.status, e.code, e.message, request.method, path, e.errors)
                        )
                    response = self._json(e.body(), e.status)
                response.headers.update(headers)
                return response
        self.unknown_requests.append(record)
        return self._json({"message": "404: Not Found", "code": 0}, 404)

    def inject_429(
        self, route_substring: str, retry_after: float = 0.3, count: int = 1, *, is_global: bool = False
    ) -> None:
        """Answer the next ``count`` requests whose path (or "METHOD path") contains the substring with 429."""
        self._injections.append(_Injection(route_substring, retry_after, count, is_global))

    # ---- lookups ----------------------------------------------------------------------------------

    def _guild(self, gid: int) -> FakeGuild | None:
        return next((g for g in self.guilds if g.id == gid), None)

    def _channel(self, cid: int | str) -> FakeChannel:
        chan = self.channels.get(int(cid))
        if chan is None:
            raise _ApiError(404, 10003, "Unknown Channel", kind="unknown_channel")
        return chan

    def _message(self, chan: FakeChannel, mid: int | str, *, allow_ephemeral: bool = False) -> FakeMessage:
        msg = self.messages.get(int(mid))
        if msg is None or msg.channel is not chan or msg.deleted or (msg.ephemeral and not allow_ephemeral):
            raise _ApiError(404, 10008, "Unknown Message", kind="unknown_message")
        return msg

    # ---- REST: identity ---------------------------------------------------------------------------

    async def _h_me(self, req: _Request, m: re.Match[str]) -> web.Response:
        return self._json(
            {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "locale": "en-US"}
        )

    async def _h_user(self, req: _Request, m: re.Match[str]) -> web.Response:
        user = self.users.get(int(m["uid"]))
        if user is None:
            raise _ApiError(404, 10013, "Unknown User")
        return self._json(user.payload())

    async def _h_member(self, req: _Request, m: re.Match[str]) -> web.Response:
        guild = self._guild(int(m["gid"]))
        if guild is None:
            raise _ApiError(404, 10004, "Unknown Guild")
        user = guild.members.get(int(m["uid"]))
        if user is None:
            raise _ApiError(404, 10007, "Unknown Member")
        return self._json(self._member_payload(guild, user))

    async def _h_create_dm(self, req: _Request, m: re.Match[str]) -> web.Response:
        user = self.users.get(int((req.json or {}).get("recipient_id", 0)))
        if user is None:
            raise _ApiError(400, 50035, "Invalid Form Body", kind="unknown_user")
        return self._json(self._channel_payload(self.dm_channel(user)))

    async def _h_app(self, req: _Request, m: re.Match[str]) -> web.Response:
        return self._json(
            {
                "id": str(self.application_id),
                "name": self.bot_user.name,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": self.owner.payload(),
                "team": None,
                "flags": 0,
                "rpc_origins": [],
                "redirect_uris": [],
                "tags": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
                "bot": self.bot_user.payload(),
                "integration_types_config": {"0": {}},
            }
        )

    async def _h_gateway(self, req: _Request, m: re.Match[str]) -> web.Response:
        return self._json({"url": self.gateway_url})

    async def _h_gateway_bot(self, req: _Request, m: re.Match[str]) -> web.Response:
        return self._json(
            {
                "url": self.gateway_url,
                "shards": self.shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000 - self.identify_count,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    # ---- REST: application commands ---------------------------------------------------------------

    async def _h_get_commands(self, req: _Request, m: re.Match[str]) -> web.Response:
        self._check_app(m["app"])
        return self._json(self.commands.get(int(m["guild"]) if m["guild"] else None, []))

    def _check_app(self, app: str) -> None:
        if int(app) != self.application_id:
            raise _ApiError(404, 10002, "Unknown Application", kind="unknown_application")

    async def _h_put_commands(self, req: _Request, m: re.Match[str]) -> web.Response:
        self._check_app(m["app"])
        gid = int(m["guild"]) if m["guild"] else None
        if gid is not None and self._guild(gid) is None:
            raise _ApiError(404, 10004, "Unknown Guild", kind="unknown_guild")
        body = req.json
        errors = _Errors()
        if not isinstance(body, list):
            errors.add(
                [], "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType", "invalid_commands"
            )
            errors.raise_if_any()
            return self._json([])
        seen: set[tuple[str, int]] = set()
        for i, cmd in enumerate(body):
            _validate_command(cmd, [i], errors)
            key = (str(cmd.get("name")), int(cmd.get("type", 1)))
            if key in seen:
                errors.add(
                    [i, "name"],
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    "Application command names must be unique",
                    "duplicate_command",
                )
            seen.add(key)
        if sum(1 for c in body if int(c.get("type", 1)) == 1) > 100:
            errors.add([], "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.", "too_many_commands")
        errors.raise_if_any()
        old = {(c["name"], c["type"]): c for c in self.commands.get(gid, [])}
        stored: list[dict[str, Any]] = []
        for cmd in body:
            ctype = int(cmd.get("type", 1))
            norm = json.dumps(cmd, sort_keys=True)
            prev = old.get((cmd["name"], ctype))
            if prev is not None and self._command_norms.get(int(prev["id"])) == norm:
                stored.append(prev)
                continue
            self.command_creations += 1
            cid = int(prev["id"]) if prev else self._ids.next()
            entry: dict[str, Any] = {
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "dm_permission": True,
                "nsfw": False,
                "integration_types": [0],
                "contexts": None,
                **cmd,
                "type": ctype,
                "id": str(cid),
                "application_id": str(self.application_id),
                "version": str(self._ids.next()),
            }
            if gid is not None:
                entry["guild_id"] = str(gid)
            self._command_norms[cid] = norm
            stored.append(entry)
        self.commands[gid] = stored
        self.command_syncs.append((gid, [c["name"] for c in stored]))
        return self._json(stored)

    def _find_command(self, name: str, guild: FakeGuild | None, ctype: int) -> dict[str, Any] | None:
        scopes: list[int | None] = ([guild.id] if guild else []) + [None]
        for scope in scopes:
            for c in self.commands.get(scope, []):
                if c["name"] == name and c["type"] == ctype:
                    return c
        return None

    # ---- REST: interaction callbacks --------------------------------------------------------------

    async def _h_callback(self, req: _Request, m: re.Match[str]) -> web.Response:
        ix = self._ix_by_id.get(int(m["id"]))
        if ix is None or ix.token != m["token"]:
            raise _ApiError(404, 10062, "Unknown interaction", kind="unknown_interaction")
        now = self.loop_time()
        body = req.json if isinstance(req.json, dict) else {}
        ix.callbacks.append((now, body))
        if ix.ack_type is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.", kind="double_ack")
        if now - ix.dispatched_at > self.ack_deadline:
            ix.error = 10062
            raise _ApiError(404, 10062, "Unknown interaction", kind="late_ack")
        try:
            return await self._apply_callback(ix, req, body, now)
        except _ApiError as e:
            ix.rejections.append(e.code)
            raise

    async def _apply_callback(
        self, ix: FakeInteraction, req: _Request, body: dict[str, Any], now: float
    ) -> web.Response:
        rtype = body.get("type")
        data = body.get("data") or {}
        allowed = {
            2: {4, 5, 9},
            3: {4, 5, 6, 7, 9},
            4: {8},
            5: {4, 5} | ({6, 7} if ix.message is not None else set()),
        }[ix.type]
        if rtype not in allowed:
            errors = _Errors()
            errors.add(
                ["type"],
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Callback type {rtype} is not valid here",
                "bad_callback_type",
            )
            errors.raise_if_any()
        msg: FakeMessage | None = None
        if rtype == 4:
            _validate_message(data, req.files, ix.attachment_size_limit, creating=True, files_ok=True)
            msg = self._new_message(ix.channel, self.bot_user, data, req.files, via="interaction", ix=ix)
            msg.type = (
                20 if ix.type == 2 and ix.payload["data"].get("type", 1) == 1 else (23 if ix.type == 2 else 0)
            )
            ix.original = msg
        elif rtype == 5:
            flags = FLAG_LOADING | (int(data.get("flags", 0)) & FLAG_EPHEMERAL)
            msg = self._new_message(ix.channel, self.bot_user, {"flags": flags}, [], via="interaction", ix=ix)
            msg.type = 20 if ix.type == 2 else 0
            ix.original = msg
        elif rtype in (6, 7):
            assert ix.message is not None
            msg = ix.message
            if rtype == 7:
                _validate_message(data, req.files, ix.attachment_size_limit, creating=False, files_ok=True)
                await self._edit_message(msg, data, req.files)
            ix.original = msg
        elif rtype == 8:
            choices = data.get("choices") or []
            _validate_choices(choices)
            ix.choices = choices
        elif rtype == 9:
            _validate_modal(data)
            ix.modal = _parse_modal(data)
        ix.ack_type = int(rtype)
        ix.acked_at = now
        ix.ephemeral = bool(msg is not None and msg.ephemeral and rtype in (4, 5))
        if msg is not None and rtype in (4, 5):
            await self._announce(msg, "MESSAGE_CREATE")
        self._notify()
        if req.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        inter: dict[str, Any] = {
            "id": str(ix.id),
            "type": ix.type,
            "response_message_loading": rtype == 5,
            "response_message_ephemeral": ix.ephemeral,
        }
        resource: dict[str, Any] = {"type": rtype}
        if msg is not None:
            inter["response_message_id"] = str(msg.id)
            resource["message"] = self._message_payload(msg)
        return self._json({"interaction": inter, "resource": resource})

    # ---- REST: webhooks (followups, @original) ----------------------------------------------------

    def _ix_for_webhook(self, m: re.Match[str]) -> FakeInteraction:
        ix = self._ix_by_token.get(m["token"])
        if int(m["app"]) != self.application_id or ix is None:
            raise _ApiError(404, 10015, "Unknown Webhook", kind="unknown_webhook")
        if self.loop_time() - ix.dispatched_at > self.token_lifetime:
            raise _ApiError(401, 50027, "Invalid Webhook Token", kind="expired_token")
        if ix.ack_type is None:
            raise _ApiError(404, 10015, "Unknown Webhook", kind="webhook_before_ack")
        return ix

    def _ix_message(self, ix: FakeInteraction, mid: str) -> FakeMessage:
        if mid == "@original":
            msg = ix.original
        else:
            msg = next((x for x in ix.messages if x.id == int(mid)), None)
        if msg is None or msg.deleted:
            raise _ApiError(404, 10008, "Unknown Message", kind="unknown_message")
        return msg

    async def _h_followup(self, req: _Request, m: re.Match[str]) -> web.Response:
        ix = self._ix_for_webhook(m)
        data = req.json if isinstance(req.json, dict) else {}
        _validate_message(data, req.files, ix.attachment_size_limit, creating=True, files_ok=True)
        orig = ix.original
        if ix.ack_type == 5 and orig is not None and orig.loading and not orig.deleted:
            # Discord lets the first followup fill the "thinking" message; deprecated, so flagged.
            self.violations.append(
                Violation(
                    "followup_replaced_defer",
                    200,
                    0,
                    "first result after a type-5 defer should be PATCH @original, not a followup",
                    "POST",
                    f"/webhooks/{m['app']}/…",
                )
            )
            await self._edit_message(orig, {**data, "flags": orig.flags & FLAG_EPHEMERAL}, req.files)
            msg = orig
        else:
            msg = self._new_message(ix.channel, self.bot_user, data, req.files, via="interaction", ix=ix)
            ix.followups.append(msg)
            await self._announce(msg, "MESSAGE_CREATE")
        self._notify()
        if req.query.get("wait") in ("1", "true", "True"):
            return self._json(self._message_payload(msg))
        return web.Response(status=204)

    async def _h_hook_get(self, req: _Request, m: re.Match[str]) -> web.Response:
        ix = self._ix_for_webhook(m)
        return self._json(self._message_payload(self._ix_message(ix, m["mid"])))

    async def _h_hook_edit(self, req: _Request, m: re.Match[str]) -> web.Response:
        ix = self._ix_for_webhook(m)
        msg = self._ix_message(ix, m["mid"])
        data = req.json if isinstance(req.json, dict) else {}
        _validate_message(data, req.files, ix.attachment_size_limit, creating=False, files_ok=True)
        await self._edit_message(msg, data, req.files)
        return self._json(self._message_payload(msg))

    async def _h_hook_delete(self, req: _Request, m: re.Match[str]) -> web.Response:
        ix = self._ix_for_webhook(m)
        await self._delete_message(self._ix_message(ix, m["mid"]))
        return web.Response(status=204)

    # ---- REST: channels ---------------------------------------------------------------------------

    async def _h_get_channel(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan)
        return self._json(self._channel_payload(chan))

    async def _h_edit_channel(self, req: _Request, m: re.Match[str]) -> web.Response:
        """Only what bots do to threads: (un)archive, (un)lock, rename."""
        chan = self._channel(m["cid"])
        body = req.json if isinstance(req.json, dict) else {}
        if not chan.is_thread:
            self._require(chan, MANAGE_CHANNELS)
        else:
            unarchive = chan.archived and body.get("archived") is False
            if chan.locked and unarchive or "locked" in body or (
                chan.owner_id != self.bot_user.id and ("name" in body or body.get("archived"))
            ):
                self._require(chan, MANAGE_THREADS)
            elif unarchive:
                self._require(chan, SEND_MESSAGES_IN_THREADS)
            elif chan.archived:
                raise _ApiError(400, 50083, "Thread is archived", kind="archived_thread")
            if "archived" in body:
                chan.archived = bool(body["archived"])
            if "locked" in body:
                chan.locked = bool(body["locked"])
        if "name" in body:
            chan.name = str(body["name"])
        assert chan.guild is not None
        await self._dispatch("THREAD_UPDATE" if chan.is_thread else "CHANNEL_UPDATE", self._channel_payload(chan),
                             chan.guild.id)
        return self._json(self._channel_payload(chan))

    async def _h_post_message(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        data = req.json if isinstance(req.json, dict) else {}
        self._require_send(chan, data, req.files)
        _validate_message(data, req.files, chan.attachment_size_limit, creating=True, files_ok=True)
        ref: FakeMessage | None = None
        mref = data.get("message_reference")
        if mref:
            ref_chan = self.channels.get(int(mref.get("channel_id") or chan.id))
            ref = self.messages.get(int(mref["message_id"])) if mref.get("message_id") else None
            if ref is None or ref.deleted or ref.ephemeral or ref_chan is None or ref.channel is not ref_chan:
                ref = None
                if mref.get("fail_if_not_exists", True):
                    errors = _Errors()
                    errors.add(
                        ["message_reference"],
                        "REPLIES_UNKNOWN_MESSAGE",
                        "Unknown message",
                        "unknown_reply_target",
                    )
                    errors.raise_if_any()
        if data.get("flags", 0) & FLAG_EPHEMERAL:
            errors = _Errors()
            errors.add(
                ["flags"],
                "MESSAGE_FLAGS_INVALID",
                "Ephemeral needs an interaction",
                "ephemeral_channel_message",
            )
            errors.raise_if_any()
        nonce = str(data.get("nonce") or "")
        if nonce and data.get("enforce_nonce"):
            # Discord: with enforce_nonce, a nonce the same author used in the last few minutes returns that
            # message instead of creating another (how a retry after a crash avoids a second copy)
            seen = self._nonces.get((chan.id, nonce))
            if seen is not None and self.now() - seen[0] < NONCE_WINDOW and not seen[1].deleted:
                return self._json(self._message_payload(seen[1]))
        msg = self._new_message(chan, self.bot_user, data, req.files, via="bot")
        if nonce and data.get("enforce_nonce"):
            self._nonces[(chan.id, nonce)] = (self.now(), msg)
        if ref is not None:
            msg.reference = ref
            msg.type = 19
        await self._announce(msg, "MESSAGE_CREATE")
        return self._json(self._message_payload(msg))

    async def _h_history(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan)
        if not self.bot_permissions(chan) & READ_MESSAGE_HISTORY:
            return self._json([])  # Discord answers an empty history, not an error
        limit = max(1, min(int(req.query.get("limit", "50")), 100))
        msgs = list(reversed(chan.messages))  # newest first
        if "before" in req.query:
            msgs = [x for x in msgs if x.id < int(req.query["before"])]
        if "after" in req.query:
            msgs = [x for x in msgs if x.id > int(req.query["after"])]
            msgs = msgs[-limit:]
        return self._json([self._message_payload(x) for x in msgs[:limit]])

    async def _h_get_message(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan, READ_MESSAGE_HISTORY)
        return self._json(self._message_payload(self._message(chan, m["mid"])))

    async def _h_edit_message(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        msg = self._message(chan, m["mid"])
        if msg.author is not self.bot_user:
            raise _ApiError(
                403, 50005, "Cannot edit a message authored by another user", kind="edit_foreign_message"
            )
        self._require(chan)
        self._require_unarchived(chan)
        data = req.json if isinstance(req.json, dict) else {}
        if data.get("embeds"):
            self._require(chan, EMBED_LINKS)
        _validate_message(data, req.files, chan.attachment_size_limit, creating=False, files_ok=True)
        await self._edit_message(msg, data, req.files)
        return self._json(self._message_payload(msg))

    async def _h_delete_message(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan)
        msg = self._message(chan, m["mid"])
        self._require_unarchived(chan)
        if msg.author is not self.bot_user:
            self._require(chan, MANAGE_MESSAGES)
        await self._delete_message(msg)
        return web.Response(status=204)

    async def _h_thread_from_message(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan, CREATE_PUBLIC_THREADS, READ_MESSAGE_HISTORY)
        msg = self._message(chan, m["mid"])
        if msg.thread is not None:
            raise _ApiError(
                400, 160004, "A thread has already been created for this message", kind="thread_exists"
            )
        body = req.json if isinstance(req.json, dict) else {}
        thread = await self._create_thread(chan, str(body.get("name", "")), 11, msg.id)
        msg.thread = thread
        return self._json(self._channel_payload(thread))

    async def _h_thread(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        body = req.json if isinstance(req.json, dict) else {}
        if chan.is_forum:
            return await self._forum_post(chan, body, req.files)
        ttype = int(body.get("type", 12))
        self._require(chan, CREATE_PRIVATE_THREADS if ttype == 12 else CREATE_PUBLIC_THREADS)
        thread = await self._create_thread(chan, str(body.get("name", "")), ttype, None)
        return self._json(self._channel_payload(thread))

    async def _forum_post(
        self, forum: FakeChannel, body: Mapping[str, Any], files: list[tuple[int, str, str, bytes]]
    ) -> web.Response:
        """A forum post: a public thread whose starter message (same id) comes in the same request."""
        self._require(forum, SEND_MESSAGES, *([ATTACH_FILES] if files else []))
        starter = body.get("message")
        if not isinstance(starter, Mapping):
            errors = _Errors()
            errors.add(["message"], "BASE_TYPE_REQUIRED", "This field is required", "forum_thread_without_message")
            errors.raise_if_any()
        assert isinstance(starter, Mapping)
        _validate_message(starter, files, forum.attachment_size_limit, creating=True, files_ok=True)
        thread = await self._create_thread(forum, str(body.get("name", "")), 11, None)
        msg = self._new_message(thread, self.bot_user, starter, files, via="bot", mid=thread.id)
        await self._announce(msg, "MESSAGE_CREATE")
        return self._json({**self._channel_payload(thread), "message": self._message_payload(msg)})

    async def _create_thread(
        self, parent: FakeChannel, name: str, ttype: int, tid: int | None
    ) -> FakeChannel:
        if parent.guild is None or parent.is_thread:
            raise _ApiError(
                400, 50024, "Cannot execute action on this channel type", kind="bad_thread_parent"
            )
        if not 1 <= len(name) <= 100:
            errors = _Errors()
            errors.add(
                ["name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.", "bad_thread_name"
            )
            errors.raise_if_any()
        thread = FakeChannel(
            tid or self._ids.next(),
            name,
            ttype,
            parent.guild,
            nsfw=parent.nsfw,
            parent_id=parent.id,
            owner_id=self.bot_user.id,
            attachment_size_limit=parent.attachment_size_limit,
            created_at=self.now(),
        )
        parent.threads.append(thread)
        self.channels[thread.id] = thread
        await self._dispatch(
            "THREAD_CREATE", {**self._channel_payload(thread), "newly_created": True}, parent.guild.id
        )
        return thread

    async def _h_typing(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan, SEND_MESSAGES_IN_THREADS if chan.is_thread else SEND_MESSAGES)
        return web.Response(status=204)

    async def _h_react(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan, READ_MESSAGE_HISTORY)
        msg = self._message(chan, m["mid"])
        self._require_unarchived(chan)
        emoji = m["emoji"]
        if emoji not in msg.reactions:
            self._require(chan, ADD_REACTIONS)
        if emoji not in msg.reactions:
            msg.reactions.append(emoji)
        return web.Response(status=204)

    async def _h_unreact(self, req: _Request, m: re.Match[str]) -> web.Response:
        chan = self._channel(m["cid"])
        self._require(chan)
        msg = self._message(chan, m["mid"])
        if m["emoji"] in msg.reactions:
            msg.reactions.remove(m["emoji"])
        return web.Response(status=204)

    # ---- message storage --------------------------------------------------------------------------

    def _store_files(
        self,
        chan: FakeChannel,
        files: list[tuple[int, str, str, bytes]],
        meta: list[dict[str, Any]],
        ephemeral: bool,
    ) -> dict[int, FakeAttachment]:
        out: dict[int, FakeAttachment] = {}
        by_id = {str(a.get("id")): a for a in meta}
        for index, filename, ctype, data in files:
            info = by_id.get(str(index), {})
            name = str(info.get("filename") or filename)
            if not ctype or ctype == "application/octet-stream":
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            att = self.add_attachment(chan, name, data, ctype)
            att.description = info.get("description")
            att.ephemeral = ephemeral
            out[index] = att
        return out

    def _new_message(
        self,
        chan: FakeChannel,
        author: FakeUser,
        data: Mapping[str, Any],
        files: list[tuple[int, str, str, bytes]],
        *,
        via: str,
        ix: FakeInteraction | None = None,
        mid: int | None = None,
    ) -> FakeMessage:
        flags = int(data.get("flags") or 0)
        if via != "interaction":
            flags &= ~FLAG_EPHEMERAL
        new = self._store_files(
            chan, files, list(data.get("attachments") or []), bool(flags & FLAG_EPHEMERAL)
        )
        msg = FakeMessage(
            id=mid or self._ids.next(),
            channel=chan,
            author=author,
            created_at=self.now(),
            content=str(data.get("content") or ""),
            embeds=list(data.get("embeds") or []),
            attachments=[new[k] for k in sorted(new)],
            components=list(data.get("components") or []),
            allowed_mentions=data.get("allowed_mentions"),
            flags=flags,
            tts=bool(data.get("tts", False)),
            via=via,
            interaction=ix,
            webhook_id=self.application_id if via == "interaction" else None,
            sticker_ids=[str(s) for s in data.get("sticker_ids") or []],
        )
        chan.all_messages.append(msg)
        self.messages[msg.id] = msg
        self._check_pings(msg)
        return msg

    def _check_pings(self, msg: FakeMessage) -> None:
        """Each ping of a bot message that the test did not ``expect_ping`` is a violation (once per message)."""
        if msg.author is not self.bot_user or msg.ephemeral:
            return
        for ping in msg.pings:
            if ping in self.expected_pings or ping in msg.reported_pings:
                continue
            msg.reported_pings.add(ping)
            self._violation(
                "unexpected_ping",
                f"message {msg.id} in #{msg.channel.name} pings {ping} (allowed_mentions={msg.allowed_mentions}): "
                f"{msg.content[:100]!r}",
            )

    async def _edit_message(
        self, msg: FakeMessage, data: Mapping[str, Any], files: list[tuple[int, str, str, bytes]]
    ) -> None:
        if not msg.loading and self.now() - msg.created_at > self.old_message_age:
            raise _ApiError(
                400, 30046, "Maximum number of edits to messages older than 1 hour reached. Try again later.",
                kind="old_message_edit",
            )
        meta = list(data.get("attachments") or [])
        kept = len(meta) if "attachments" in data else len(msg.attachments) + len(files)
        if kept > 10:
            errors = _Errors()
            errors.add(
                ["attachments"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 10 or fewer in length.",
                "too_many_attachments",
            )
            errors.raise_if_any()
        msg.edits.append((self.loop_time(), json.loads(json.dumps(data))))
        msg.edited_at = self.now()
        if "content" in data:
            msg.content = str(data["content"] or "")
        if "embeds" in data:
            msg.embeds = list(data["embeds"] or [])
        if "components" in data:
            msg.components = list(data["components"] or [])
        if "allowed_mentions" in data:
            msg.allowed_mentions = data["allowed_mentions"]
        if "flags" in data and data["flags"] is not None:
            msg.flags = (msg.flags & ~FLAG_SUPPRESS_EMBEDS) | (int(data["flags"]) & FLAG_SUPPRESS_EMBEDS)
        new = self._store_files(msg.channel, files, meta, msg.ephemeral)
        if "attachments" in data:
            keep: list[FakeAttachment] = []
            existing = {a.id: a for a in msg.attachments}
            for entry in meta:
                try:
                    aid = int(entry.get("id"))
                except (TypeError, ValueError):
                    continue
                if aid in existing:
                    keep.append(existing[aid])
                elif aid in new:
                    keep.append(new.pop(aid))
            msg.attachments = keep + [new[k] for k in sorted(new)]
        else:
            msg.attachments = msg.attachments + [new[k] for k in sorted(new)]
        was_loading = msg.loading
        msg.flags &= ~FLAG_LOADING
        self._check_pings(msg)
        self._notify()
        await self._announce(msg, "MESSAGE_CREATE" if was_loading else "MESSAGE_UPDATE")

    async def _delete_message(self, msg: FakeMessage) -> None:
        msg.deleted = True
        self._notify()
        if not msg.ephemeral:
            guild = msg.channel.guild
            data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel.id)}
            if guild is not None:
                data["guild_id"] = str(guild.id)
            await self._dispatch("MESSAGE_DELETE", data, guild.id if guild else None)

    async def _announce(self, msg: FakeMessage, event: str) -> None:
        """Tell the gateway about a bot-side message change (not for ephemerals or loading placeholders)."""
        if msg.ephemeral or msg.loading:
            return
        guild = msg.channel.guild
        await self._dispatch(event, self._message_payload(msg), guild.id if guild else None)

    # ---- simulated users: building interactions ---------------------------------------------------

    def _base_interaction(
        self, user: FakeUser, chan: FakeChannel, itype: int, data: dict[str, Any]
    ) -> FakeInteraction:
        iid = self._ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        limit = self.attachment_size_limit
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": token,
            "version": 1,
            "data": data,
            "attachment_size_limit": limit,
            "locale": user.locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "channel_id": str(chan.id),
        }
        guild = chan.guild
        if guild is not None:
            if user.id not in guild.members:
                raise ValueError(f"{user.name} is not a member of guild {guild.name}")
            payload.update(
                guild_id=str(guild.id),
                guild={"id": str(guild.id), "locale": guild.locale, "features": guild.features},
                guild_locale=guild.locale,
                app_permissions=str(self.bot_permissions(chan)),
                authorizing_integration_owners={"0": str(guild.id)},
                context=0,
                channel=self._channel_payload(chan, viewer=user),
                member={
                    **self._member_payload(guild, user),
                    "permissions": str(_effective(user.permissions)),
                },
            )
        else:
            payload.update(
                app_permissions=str(DEFAULT_BOT_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
                channel=self._channel_payload(chan),
                user=user.payload(),
            )
        return FakeInteraction(self, iid, token, itype, user, chan, payload, 0.0, limit)

    async def _send_interaction(self, ix: FakeInteraction) -> FakeInteraction:
        guild = ix.channel.guild
        if not self._sessions_for(guild.id if guild else None):
            raise RuntimeError("no gateway session receives this channel's events: is the bot connected?")
        self.interactions.append(ix)
        self._ix_by_id[ix.id] = ix
        self._ix_by_token[ix.token] = ix
        ix.dispatched_at = self.loop_time()
        await self._dispatch("INTERACTION_CREATE", ix.payload, guild.id if guild else None)
        self._notify()
        return ix

    def _option_value(
        self, otype: int, value: Any, resolved: dict[str, dict[str, Any]], chan: FakeChannel
    ) -> Any:
        guild = chan.guild
        if otype in (6, 9) and isinstance(value, FakeUser):
            resolved.setdefault("users", {})[str(value.id)] = value.payload()
            if guild is not None and value.id in guild.members:
                member = self._member_payload(guild, value, with_user=False)
                member["permissions"] = str(_effective(value.permissions))
                resolved.setdefault("members", {})[str(value.id)] = member
            return str(value.id)
        if otype == 7 and isinstance(value, FakeChannel):
            resolved.setdefault("channels", {})[str(value.id)] = {
                **self._channel_payload(value),
                "permissions": str(ALL_PERMISSIONS),
            }
            return str(value.id)
        if otype == 11:
            att = value
            if isinstance(value, tuple):
                att = self.add_attachment(chan, value[0], value[1], value[2] if len(value) > 2 else None)
            if not isinstance(att, FakeAttachment):
                raise TypeError(
                    "attachment options take (filename, bytes[, content_type]) or a FakeAttachment"
                )
            resolved.setdefault("attachments", {})[str(att.id)] = att.payload()
            return str(att.id)
        if otype == 4:
            return int(value)
        if otype == 10:
            return float(value)
        if otype == 5:
            return bool(value)
        if otype in (6, 7, 8, 9):
            return str(getattr(value, "id", value))
        return str(value)

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return 4
        if isinstance(value, float):
            return 10
        if isinstance(value, FakeUser):
            return 6
        if isinstance(value, FakeChannel):
            return 7
        if isinstance(value, (tuple, FakeAttachment)):
            return 11
        return 3

    def _command_data(
        self,
        chan: FakeChannel,
        command: str,
        values: Mapping[str, Any],
        focused: str | None = None,
    ) -> dict[str, Any]:
        parts = command.split()
        root = self._find_command(parts[0], chan.guild, 1)
        data: dict[str, Any] = {"name": parts[0], "type": 1}
        if root is not None:
            data["id"] = root["id"]
            if root.get("guild_id"):
                data["guild_id"] = root["guild_id"]
        else:
            data["id"] = str(self._ids.next())
        defs: list[dict[str, Any]] | None = root.get("options", []) if root else None
        chain: list[tuple[str, int]] = []
        for part in parts[1:]:
            sub = next((o for o in defs or [] if o["name"] == part), None) if defs is not None else None
            if defs is not None and (sub is None or sub["type"] not in (1, 2)):
                raise ValueError(f"/{command}: {part!r} is not a subcommand or group of /{parts[0]}")
            chain.append((part, sub["type"] if sub else (1 if part == parts[-1] else 2)))
            defs = sub.get("options", []) if sub else None
        resolved: dict[str, dict[str, Any]] = {}
        leaf: list[dict[str, Any]] = []
        for name, value in values.items():
            d = next((o for o in defs or [] if o["name"] == name), None)
            if defs is not None and d is None:
                raise ValueError(f"/{command} has no option {name!r}; it has {[o['name'] for o in defs]}")
            otype = int(d["type"]) if d else self._infer_type(value)
            if name == focused:
                leaf.append({"name": name, "type": otype, "value": str(value), "focused": True})
            else:
                leaf.append(
                    {"name": name, "type": otype, "value": self._option_value(otype, value, resolved, chan)}
                )
        if defs is not None and focused is None:
            missing = [o["name"] for o in defs if o.get("required") and o["name"] not in values]
            if missing:
                raise ValueError(f"/{command} needs option(s) {missing}")
        options = leaf
        for name, otype in reversed(chain):
            options = [{"name": name, "type": otype, "options": options}]
        if options:
            data["options"] = options
        if resolved:
            data["resolved"] = resolved
        return data

    # ---- simulated users: actions -----------------------------------------------------------------

    async def slash(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        options: Mapping[str, Any] | None = None,
        **kw: Any,
    ) -> FakeInteraction:
        """Run ``/command`` (``"group sub"`` for subcommands); options as kwargs or ``options=``.

        Attachment options take ``(filename, bytes, content_type)``; user/channel options take
        ``FakeUser``/``FakeChannel``. Options are checked against what the bot synced, if it did.
        """
        data = self._command_data(channel, command, {**(options or {}), **kw})
        return await self._send_interaction(self._base_interaction(user, channel, 2, data))

    async def autocomplete(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        *,
        focused: str,
        value: str = "",
        options: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        **kw: Any,
    ) -> list[dict[str, Any]]:
        """Type ``value`` into option ``focused`` of ``/command``; returns the bot's choices."""
        values = {**(options or {}), **kw, focused: value}
        data = self._command_data(channel, command, values, focused=focused)
        ix = await self._send_interaction(self._base_interaction(user, channel, 4, data))
        await self.wait_for(lambda: ix.choices is not None or ix.error is not None, timeout=timeout)
        return ix.choices or []

    async def context_menu(
        self, user: FakeUser, channel: FakeChannel, name: str, *, target: FakeMessage | FakeUser
    ) -> FakeInteraction:
        """Run a message (target=FakeMessage) or user (target=FakeUser) context menu command."""
        ctype = 3 if isinstance(target, FakeMessage) else 2
        cmd = self._find_command(name, channel.guild, ctype)
        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self._ids.next()),
            "name": name,
            "type": ctype,
        }
        if cmd is not None and cmd.get("guild_id"):
            data["guild_id"] = cmd["guild_id"]
        data["target_id"] = str(target.id)
        if isinstance(target, FakeMessage):
            data["resolved"] = {"messages": {str(target.id): self._message_payload(target)}}
        else:
            resolved: dict[str, dict[str, Any]] = {}
            self._option_value(6, target, resolved, channel)
            data["resolved"] = resolved
        return await self._send_interaction(self._base_interaction(user, channel, 2, data))

    async def press(
        self,
        user: FakeUser,
        message: FakeMessage,
        *,
        custom_id: str | None = None,
        label: str | None = None,
        values: Sequence[str] | None = None,
    ) -> FakeInteraction:
        """Press a button (by ``custom_id`` or ``label``) or pick ``values`` in a select on ``message``."""
        if message.deleted:
            raise ValueError("the message was deleted")
        comp = None
        for c in _walk_components(message.components):
            if c.get("type") not in (2, 3, 5, 6, 7, 8):
                continue
            if (custom_id is not None and c.get("custom_id") == custom_id) or (
                label is not None and c.get("label") == label
            ):
                comp = c
                break
        if comp is None:
            have = [
                (c.get("label"), c.get("custom_id"))
                for c in _walk_components(message.components)
                if "custom_id" in c
            ]
            raise ValueError(f"no component custom_id={custom_id!r} label={label!r} on message; has {have}")
        if comp.get("disabled"):
            raise ValueError(f"component {comp.get('label') or comp.get('custom_id')!r} is disabled")
        if comp.get("type") == 2 and comp.get("style") == 5:
            raise ValueError("link buttons do not send interactions")
        data: dict[str, Any] = {"custom_id": comp["custom_id"], "component_type": comp["type"]}
        if comp["type"] != 2:
            data["values"] = list(values or [])
        ix = self._base_interaction(user, message.channel, 3, data)
        ix.message = message
        ix.payload["message"] = self._message_payload(message)
        return await self._send_interaction(ix)

    async def submit_modal(
        self, user: FakeUser, source: FakeInteraction, values: Mapping[str, str | Sequence[str]] | None = None
    ) -> FakeInteraction:
        """Fill in and submit the modal the bot showed in answer to ``source``."""
        modal = source.modal
        if modal is None:
            raise ValueError("the bot did not answer that interaction with a modal")
        values = dict(values or {})
        unknown = set(values) - {f.custom_id for f in modal.fields}
        if unknown:
            raise ValueError(
                f"modal has no fields {sorted(unknown)}; has {[f.custom_id for f in modal.fields]}"
            )
        comps: list[dict[str, Any]] = []
        for f in modal.fields:
            if f.type == 4:
                val = str(values.get(f.custom_id, f.value or ""))
                if f.required and not val:
                    raise ValueError(f"modal field {f.custom_id!r} is required")
                if f.max_length is not None and len(val) > f.max_length:
                    raise ValueError(f"modal field {f.custom_id!r} takes at most {f.max_length} characters")
                if val and f.min_length is not None and len(val) < f.min_length:
                    raise ValueError(f"modal field {f.custom_id!r} needs at least {f.min_length} characters")
                inner: dict[str, Any] = {"type": 4, "custom_id": f.custom_id, "value": val}
            else:
                picked = values.get(f.custom_id, [])
                inner = {
                    "type": f.type,
                    "custom_id": f.custom_id,
                    "values": [picked] if isinstance(picked, str) else list(picked),
                }
            comps.append(
                {"type": 1, "components": [inner]} if f.wrapper == "row" else {"type": 18, "component": inner}
            )
        data = {"custom_id": modal.custom_id, "components": comps}
        ix = self._base_interaction(user, source.channel, 5, data)
        ix.source = source
        if source.message is not None:
            ix.message = source.message
            ix.payload["message"] = self._message_payload(source.message)
        return await self._send_interaction(ix)

    async def send_message(
        self,
        user: FakeUser,
        channel: FakeChannel,
        content: str = "",
        *,
        reply_to: FakeMessage | None = None,
        attachments: Sequence[tuple[str, bytes] | tuple[str, bytes, str] | FakeAttachment] = (),
        embeds: Sequence[dict[str, Any]] = (),
    ) -> FakeMessage:
        """``user`` posts a message (MESSAGE_CREATE); attachments are (filename, bytes[, content_type])."""
        atts: list[FakeAttachment] = []
        for a in attachments:
            if isinstance(a, FakeAttachment):
                atts.append(a)
            else:
                atts.append(self.add_attachment(channel, a[0], a[1], a[2] if len(a) > 2 else None))  # type: ignore[misc]
        msg = FakeMessage(
            id=self._ids.next(),
            channel=channel,
            author=user,
            created_at=self.now(),
            content=content,
            embeds=list(embeds),
            attachments=atts,
            via="user",
        )
        if reply_to is not None:
            msg.reference = reply_to
            msg.type = 19
        channel.all_messages.append(msg)
        self.messages[msg.id] = msg
        guild = channel.guild
        await self._dispatch("MESSAGE_CREATE", self._message_payload(msg), guild.id if guild else None)
        self._notify()
        return msg


# --------------------------------------------------------------------------------------------------
# Validation


_NAME = re.compile(r"^[-_'\w]{1,32}$", re.UNICODE)


def _validate_name(name: Any, path: list[str | int], errors: _Errors, *, chat_input: bool) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        errors.add(path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.", "bad_command_name")
    elif chat_input and (not _NAME.match(name) or name != name.lower()):
        errors.add(
            path, "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}", "bad_command_name"
        )


def _validate_description(desc: Any, path: list[str | int], errors: _Errors) -> None:
    if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
        errors.add(
            path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.", "bad_command_description"
        )


def _validate_options(options: Any, path: list[str | int], errors: _Errors) -> None:
    if not isinstance(options, list):
        return
    if len(options) > 25:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.", "too_many_options")
    seen_optional = False
    for i, opt in enumerate(options):
        p = [*path, i]
        _validate_name(opt.get("name"), [*p, "name"], errors, chat_input=True)
        _validate_description(opt.get("description"), [*p, "description"], errors)
        for loc, text in (opt.get("description_localizations") or {}).items():
            _validate_description(text, [*p, "description_localizations", loc], errors)
        otype = opt.get("type")
        if otype in (1, 2):
            _validate_options(opt.get("options") or [], [*p, "options"], errors)
            continue
        if opt.get("required"):
            if seen_optional:
                errors.add(
                    [*p, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                    "required_after_optional",
                )
        else:
            seen_optional = True
        choices = opt.get("choices") or []
        if len(choices) > 25:
            errors.add(
                [*p, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.", "too_many_choices"
            )
        for j, ch in enumerate(choices):
            if not 1 <= len(str(ch.get("name", ""))) <= 100:
                errors.add(
                    [*p, "choices", j, "name"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                    "bad_choice",
                )
        for key in ("min_length", "max_length"):
            if key in opt and not 0 <= int(opt[key]) <= 6000:
                errors.add(
                    [*p, key],
                    "NUMBER_TYPE_MAX",
                    "int value should be less than or equal to 6000.",
                    "bad_max_length",
                )
        if opt.get("autocomplete") and choices:
            errors.add(
                [*p, "autocomplete"],
                "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                "Autocomplete cannot be set with choices",
                "autocomplete_with_choices",
            )


def _validate_command(cmd: Any, path: list[str | int], errors: _Errors) -> None:
    if not isinstance(cmd, dict):
        errors.add(
            path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType", "invalid_commands"
        )
        return
    ctype = int(cmd.get("type", 1))
    _validate_name(cmd.get("name"), [*path, "name"], errors, chat_input=ctype == 1)
    if ctype == 1:
        _validate_description(cmd.get("description"), [*path, "description"], errors)
        for loc, text in (cmd.get("description_localizations") or {}).items():
            _validate_description(text, [*path, "description_localizations", loc], errors)
        _validate_options(cmd.get("options") or [], [*path, "options"], errors)
    elif cmd.get("description"):
        errors.add(
            [*path, "description"],
            "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
            "Context menu commands cannot have description",
            "bad_command_description",
        )


def _embed_length(embed: Mapping[str, Any]) -> int:
    total = len(str(embed.get("title") or "")) + len(str(embed.get("description") or ""))
    total += len(str((embed.get("footer") or {}).get("text") or ""))
    total += len(str((embed.get("author") or {}).get("name") or ""))
    for f in embed.get("fields") or []:
        total += len(str(f.get("name") or "")) + len(str(f.get("value") or ""))
    return total


def _validate_message(
    data: Mapping[str, Any],
    files: list[tuple[int, str, str, bytes]],
    size_limit: int,
    *,
    creating: bool,
    files_ok: bool,
) -> None:
    """Raise the error Discord gives for a message body that breaks a limit."""
    for _, filename, _, blob in files:
        if len(blob) > size_limit:
            raise _ApiError(
                413,
                40005,
                "Request entity too large",
                kind="file_too_large",
                errors={
                    "files": {
                        "_errors": [
                            {"code": "FILE_TOO_LARGE", "message": f"{filename}: {len(blob)} > {size_limit}"}
                        ]
                    }
                },
            )
    errors = _Errors()
    content = data.get("content")
    if content is not None and len(str(content)) > 2000:
        errors.add(
            ["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.", "content_too_long"
        )
    embeds = data.get("embeds") or []
    if len(embeds) > 10:
        errors.add(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.", "too_many_embeds")
    limits = (("title", 256), ("description", 4096))
    for i, e in enumerate(embeds):
        for key, lim in limits:
            if len(str(e.get(key) or "")) > lim:
                errors.add(
                    ["embeds", i, key],
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {lim} or fewer in length.",
                    "embed_too_long",
                )
        fields = e.get("fields") or []
        if len(fields) > 25:
            errors.add(
                ["embeds", i, "fields"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
                "embed_too_long",
            )
        for j, f in enumerate(fields):
            for key, lim in (("name", 256), ("value", 1024)):
                val = str(f.get(key) or "")
                if len(val) > lim:
                    errors.add(
                        ["embeds", i, "fields", j, key],
                        "BASE_TYPE_MAX_LENGTH",
                        f"Must be {lim} or fewer in length.",
                        "embed_too_long",
                    )
                elif not val.strip():
                    errors.add(
                        ["embeds", i, "fields", j, key],
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                        "embed_field_empty",
                    )
        if len(str((e.get("footer") or {}).get("text") or "")) > 2048:
            errors.add(
                ["embeds", i, "footer", "text"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2048 or fewer in length.",
                "embed_too_long",
            )
        if len(str((e.get("author") or {}).get("name") or "")) > 256:
            errors.add(
                ["embeds", i, "author", "name"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 256 or fewer in length.",
                "embed_too_long",
            )
    if sum(_embed_length(e) for e in embeds) > 6000:
        errors.add(
            ["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000", "embed_too_long"
        )
    if len(files) > 10 or len(data.get("attachments") or []) > 10:
        errors.add(
            ["attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.", "too_many_attachments"
        )
    components = data.get("components") or []
    if int(data.get("flags") or 0) & FLAG_COMPONENTS_V2:
        if sum(1 for _ in _walk_components(components)) > 40:
            errors.add(
                ["components"],
                "BASE_TYPE_MAX_LENGTH",
                "Must be 40 or fewer in length.",
                "too_many_components",
            )
    else:
        if len(components) > 5:
            errors.add(
                ["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.", "too_many_components"
            )
        for i, row in enumerate(components):
            children = row.get("components") or []
            if row.get("type") != 1:
                errors.add(
                    ["components", i, "type"],
                    "COMPONENT_LAYOUT_INVALID",
                    "Top-level components must be action rows",
                    "bad_components",
                )
            if len(children) > 5:
                errors.add(
                    ["components", i, "components"],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 5 or fewer in length.",
                    "too_many_components",
                )
            if any(c.get("type") in (3, 5, 6, 7, 8) for c in children) and len(children) > 1:
                errors.add(
                    ["components", i, "components"],
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                    "bad_components",
                )
    _validate_custom_ids(components, errors)
    for c in _walk_components(components):
        if c.get("type") == 2:
            _validate_button(c, errors)
        if c.get("type") in (3, 5, 6, 7, 8):
            _validate_select(c, errors)
        if c.get("type") == 2 and len(str(c.get("label") or "")) > 80:
            errors.add(
                ["components"],
                "BASE_TYPE_MAX_LENGTH",
                "Button label must be 80 or fewer in length.",
                "bad_components",
            )
        if len(str(c.get("custom_id") or "")) > 100:
            errors.add(
                ["components"],
                "BASE_TYPE_MAX_LENGTH",
                "custom_id must be 100 or fewer in length.",
                "bad_components",
            )
        if c.get("type") == 3 and len(c.get("options") or []) > 25:
            errors.add(
                ["components"],
                "BASE_TYPE_MAX_LENGTH",
                "Select options must be 25 or fewer.",
                "bad_components",
            )
    errors.raise_if_any()
    if creating and not (
        content
        or embeds
        or files
        or data.get("attachments")
        or components
        or data.get("sticker_ids")
        or data.get("poll")
    ):
        raise _ApiError(400, 50006, "Cannot send an empty message", kind="empty_message")


def _validate_custom_ids(components: Sequence[Mapping[str, Any]], errors: _Errors) -> None:
    seen: set[str] = set()
    for c in _walk_components(components):
        cid = c.get("custom_id")
        if cid is None:
            continue
        if cid in seen:
            errors.add(
                ["components"],
                "COMPONENT_CUSTOM_ID_DUPLICATED",
                f"Component custom id cannot be duplicated: {cid!r}",
                "duplicate_custom_id",
            )
        seen.add(cid)


def _validate_button(c: Mapping[str, Any], errors: _Errors) -> None:
    """Link buttons (style 5) carry a url and no custom_id; premium ones (6) a sku_id; the rest a custom_id."""
    style = int(c.get("style") or 0)
    problem = None
    if style == 5:
        if not c.get("url"):
            problem = "A link button needs a url"
        elif c.get("custom_id") is not None:
            problem = "A link button cannot have a custom_id"
    elif style == 6:
        if not c.get("sku_id") or c.get("custom_id") is not None or c.get("url"):
            problem = "A premium button needs a sku_id and no custom_id or url"
    elif style in (1, 2, 3, 4):
        if not c.get("custom_id"):
            problem = "A non-link button needs a custom_id"
        elif c.get("url"):
            problem = "Only link buttons can have a url"
    else:
        problem = f"Invalid button style {style}"
    if problem:
        errors.add(["components"], "BUTTON_COMPONENT_INVALID", problem, "bad_button")


def _validate_select(c: Mapping[str, Any], errors: _Errors) -> None:
    """Select menus: options (string selects, 1-25) with label and value 1-100, description 100, placeholder 150."""
    if len(str(c.get("placeholder") or "")) > 150:
        errors.add(["components"], "BASE_TYPE_MAX_LENGTH", "placeholder must be 150 or fewer in length.", "bad_select")
    if c.get("type") == 3 and not c.get("options"):
        errors.add(["components"], "BASE_TYPE_MIN_LENGTH", "Select options must be 1 or more.", "bad_select")
    for key in ("min_values", "max_values"):
        if key in c and c[key] is not None and not 0 <= int(c[key]) <= 25:
            errors.add(["components"], "NUMBER_TYPE_MAX", f"{key} must be between 0 and 25.", "bad_select")
    for opt in c.get("options") or []:
        for key, lo in (("label", 1), ("value", 1), ("description", 0)):
            if key not in opt and key == "description":
                continue
            if not lo <= len(str(opt.get(key) or "")) <= 100:
                errors.add(
                    ["components"],
                    "BASE_TYPE_BAD_LENGTH",
                    f"Select option {key} must be between {lo} and 100 in length.",
                    "bad_select",
                )


def _validate_choices(choices: Any) -> None:
    """Autocomplete answers: at most 25 choices, each name 1-100 characters and a string value 1-100."""
    errors = _Errors()
    if not isinstance(choices, list):
        choices = []
    if len(choices) > 25:
        errors.add(["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.", "too_many_choices")
    for i, ch in enumerate(choices):
        if not 1 <= len(str(ch.get("name") or "")) <= 100:
            errors.add(["data", "choices", i, "name"], "BASE_TYPE_BAD_LENGTH",
                       "Must be between 1 and 100 in length.", "bad_choice")
        value = ch.get("value")
        if isinstance(value, str) and not 1 <= len(value) <= 100:
            errors.add(["data", "choices", i, "value"], "BASE_TYPE_BAD_LENGTH",
                       "Must be between 1 and 100 in length.", "bad_choice")
    errors.raise_if_any()


def _validate_modal(data: Mapping[str, Any]) -> None:
    """Modals: title 1-45, custom_id 1-100, 1-5 rows or labels; text inputs with label 45, placeholder 100,
    value 4000, min 0-4000, max 1-4000; no duplicated custom_ids."""
    errors = _Errors()

    def bad(path: list[str | int], message: str, code: str = "BASE_TYPE_BAD_LENGTH") -> None:
        errors.add(["data", *path], code, message, "bad_modal")

    if not 1 <= len(str(data.get("title") or "")) <= 45:
        bad(["title"], "Must be between 1 and 45 in length.")
    if not 1 <= len(str(data.get("custom_id") or "")) <= 100:
        bad(["custom_id"], "Must be between 1 and 100 in length.")
    comps = list(data.get("components") or [])
    if not 1 <= len(comps) <= 5:
        bad(["components"], "Must be between 1 and 5 in length.")
    _validate_custom_ids(comps, errors)
    for i, comp in enumerate(comps):
        if comp.get("type") == 1:
            children = list(comp.get("components") or [])
            if len(children) != 1:
                bad(["components", i, "components"], "A modal row holds exactly one text input.")
            label = None
        elif comp.get("type") == 18:
            children = [comp["component"]] if isinstance(comp.get("component"), Mapping) else []
            label = comp.get("label")
            if not 1 <= len(str(label or "")) <= 45:
                bad(["components", i, "label"], "Must be between 1 and 45 in length.")
            if len(str(comp.get("description") or "")) > 100:
                bad(["components", i, "description"], "Must be 100 or fewer in length.")
        elif comp.get("type") == 10:  # a text display
            continue
        else:
            bad(["components", i, "type"], "Modals take action rows, labels and text displays.",
                "COMPONENT_LAYOUT_INVALID")
            continue
        for child in children:
            path: list[str | int] = ["components", i, "component"]
            if not 1 <= len(str(child.get("custom_id") or "")) <= 100:
                bad([*path, "custom_id"], "Must be between 1 and 100 in length.")
            if child.get("type") != 4:
                if child.get("type") in (3, 5, 6, 7, 8):
                    _validate_select(child, errors)
                continue
            if label is None and not 1 <= len(str(child.get("label") or "")) <= 45:
                bad([*path, "label"], "Must be between 1 and 45 in length.")
            if len(str(child.get("placeholder") or "")) > 100:
                bad([*path, "placeholder"], "Must be 100 or fewer in length.")
            if len(str(child.get("value") or "")) > 4000:
                bad([*path, "value"], "Must be 4000 or fewer in length.")
            if child.get("min_length") is not None and not 0 <= int(child["min_length"]) <= 4000:
                bad([*path, "min_length"], "Must be between 0 and 4000.", "NUMBER_TYPE_MAX")
            if child.get("max_length") is not None and not 1 <= int(child["max_length"]) <= 4000:
                bad([*path, "max_length"], "Must be between 1 and 4000.", "NUMBER_TYPE_MAX")
            if child.get("style") not in (None, 1, 2):
                bad([*path, "style"], "Text input style is 1 or 2.", "BASE_TYPE_CHOICES")
    errors.raise_if_any()


def _parse_modal(data: Mapping[str, Any]) -> FakeModal:
    fields: list[ModalField] = []

    def add(comp: Mapping[str, Any], label: str | None, wrapper: str) -> None:
        if "custom_id" not in comp:
            return
        fields.append(
            ModalField(
                custom_id=str(comp["custom_id"]),
                label=label if label is not None else comp.get("label"),
                type=int(comp.get("type", 4)),
                style=comp.get("style"),
                value=comp.get("value"),
                placeholder=comp.get("placeholder"),
                required=bool(comp.get("required", True)),
                min_length=comp.get("min_length"),
                max_length=comp.get("max_length"),
                options=list(comp.get("options") or []),
                wrapper=wrapper,
            )
        )

    for comp in data.get("components") or []:
        if comp.get("type") == 1:
            for child in comp.get("components") or []:
                add(child, None, "row")
        elif comp.get("type") == 18 and isinstance(comp.get("component"), Mapping):
            add(comp["component"], comp.get("label"), "label")
    return FakeModal(str(data.get("custom_id", "")), str(data.get("title", "")), fields, dict(data))


# --------------------------------------------------------------------------------------------------
# discord.py helpers


@contextlib.contextmanager
def point_discord_py_at(server: FakeDiscord) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at ``server``; restore on exit."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = server.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(server.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def run_bot(
    bot: discord.Client, server: FakeDiscord, *, token: str | None = None, timeout: float = 10.0
) -> AsyncIterator[discord.Client]:
    """Log ``bot`` in to ``server``, connect, wait for on_ready; close the bot on exit.

    Give the bot a small ``guild_ready_timeout`` (e.g. 0.05): on_ready waits that long after the
    last GUILD_CREATE.
    """
    with point_discord_py_at(server):
        try:
            await bot.login(token if token is not None else server.token)
        except BaseException:
            await bot.close()
            raise
        connect = asyncio.create_task(bot.connect(reconnect=False))
        ready = asyncio.create_task(bot.wait_until_ready())
        try:
            done, _ = await asyncio.wait(
                {connect, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if ready not in done:
                if connect in done and connect.exception() is not None:
                    raise connect.exception()  # type: ignore[misc]
                raise TimeoutError(f"bot was not ready within {timeout} s")
            yield bot
        finally:
            ready.cancel()
            await bot.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(connect, 5)
