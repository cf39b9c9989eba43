"""The rules every job obeys, in one place, asked the same way by every entry point.

Slash commands, buttons, modals, context menus, chat replies, game rounds, story scenes, collab generations,
`natty generate`, `natty models` and `/help` all ask `Policy`:

- **which model** a job uses (`resolve`): the model asked for → the model a feature needs, when it can run
  (`prefer`: a Natty or Not digit round needs a digit model whatever the server's default) → this server's
  default for the task (`/settings model`) → the operator's `default = true` (a later catalog file wins over
  an earlier one and over the bundled catalog, then a later entry in a file) → the first entry that can run
  now; and, when none can, why, in the asker's language;
- **whether a request may run here** (`gate`): commands this server turned off, the channels the bot answers
  in, adult models and adult prompts by channel and server policy, the model's prompt length. Turning off a
  command stops everything it starts; turning off a generation command (`/imagine`, `/chat`, …) also stops the
  buttons and menus that make the same kind of result. `/story`, `/collab` and `/natty` are governed by their
  own switch, and their parts obey the channel, safety and prompt rules like any other job;
- **who may** manage a job (its owner, or a member with Manage Messages in the channel) and change settings
  (Manage Server);
- **the limits** a job counts against (`limits`: jobs per member and per server, cooldown, daily quota; the
  engine checks and counts them in one step);
- **the language** of a reply (`locale`): the person's own, else the server's setting, else its locale.

An `Origin` says who asks, where and through which command, whatever the entry point, so no rule needs the
Discord object the request came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from discord import app_commands

from bot import safety
from bot.config import Settings
from bot.i18n import command_word, has_key, pick_locale, t
from bot.jobs.engine import Limits
from bot.jobs.job import Job
from models.base import TASKS
from models.catalog import Catalog, ModelEntry

# A command's `extras` key that says which tasks it makes and the buttons their results get (cogs.common
# `makes`): the one place a task meets its command, so buttons and menus obey a command that was turned off.
MAKES = "natty.makes"
# Features made of several jobs: their own switch governs their parts (a story's pictures are not /imagine's).
COMPOSITE_COMMANDS = frozenset({"story", "collab", "natty"})
# Open /collab sessions one member may host at once in a server: each holds a thread and a timer for up to a day.
MAX_OPEN_SESSIONS = 2
# Commands that start no job and only show a member their own things, or are how admins undo a mistake.
ALWAYS_ON = frozenset({"settings", "help", "jobs", "show"})


def task_name(task: str, locale: str | None) -> str:
    """A task in words ("image generation", "geração de imagens"): the catalog's `task.<task>` key, else (a
    task nobody has named yet) the task itself."""
    return t(f"task.{task}", locale) if has_key(f"task.{task}") else task


def tasks_of(tree: app_commands.CommandTree) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """What the commands say they make (their `MAKES` extras): each task's command word (the top-level name,
    as `command_of` gives it) and the result buttons of each task."""
    commands: dict[str, str] = {}
    actions: dict[str, tuple[str, ...]] = {}
    for command in tree.walk_commands():
        for task, buttons in (command.extras.get(MAKES) or {}).items():
            if task not in TASKS:
                raise ValueError(f"/{command.qualified_name} makes {task!r}, which is not a task (models.base TASKS)")
            commands[task] = command.qualified_name.split()[0]
            actions[task] = tuple(buttons)
    return commands, actions


def age_restricted(channel: Any) -> bool:
    """Whether a channel (or a thread's parent) is age-restricted; DMs and unknown channels are not."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


@dataclass(frozen=True)
class Origin:
    """Who asks, where, and through which command: all that the rules need to know about a request."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    command: str  # the command word /settings knows ("imagine", "chat", "story", "collab", "natty", ...)
    locale: str
    parent_channel_id: int | None = None  # a thread's channel: threads of an allowed channel are allowed
    age_restricted: bool = False
    operator: bool = False  # `natty generate` on the operator's own machine: no server's rules apply

    @classmethod
    def in_channel(cls, channel: Any, *, user_id: int, guild_id: int | None, channel_id: int | None,
                   command: str, locale: str) -> Origin:
        """A request made in `channel` (a discord channel or thread object, or None when it is not cached)."""
        return cls(user_id=user_id, guild_id=guild_id, channel_id=channel_id, command=command, locale=locale,
                   parent_channel_id=getattr(channel, "parent_id", None), age_restricted=age_restricted(channel))

    @classmethod
    def of_job(cls, job: Job, command: str) -> Origin:
        """A part of a job already admitted (a story's scene): where and for whom that job ran."""
        return cls(user_id=job.user_id, guild_id=job.guild_id, channel_id=job.channel_id, command=command,
                   locale=job.locale or pick_locale(None), age_restricted=bool(job.age_restricted),
                   parent_channel_id=job.params.get("parent_channel_id"))


class Refused(Exception):
    """Why a request may not run: `message` for the user; `block` when a safety rule refused it (for the audit);
    `job` the failed record kept of it, once there is one."""

    def __init__(self, message: str, block: safety.Block | None = None, job: Job | None = None) -> None:
        super().__init__(message)
        self.message, self.block, self.job = message, block, job


def channel_allowed(gs: dict[str, Any], channel_id: int | None, parent_channel_id: int | None = None) -> bool:
    """Whether the bot answers in this channel (or in a thread of an allowed channel)."""
    allowed = {int(c) for c in gs.get("channels") or []}
    if not allowed:
        return True
    return bool({channel_id, parent_channel_id} & allowed)


def channel_mentions(ids: Iterable[int], limit: int = 10, locale: str | None = None) -> str:
    ids = list(ids)
    shown = ", ".join(f"<#{i}>" for i in ids[:limit])
    return shown + (t("settings.and_more", locale, count=len(ids) - limit) if len(ids) > limit else "")


def may_manage(user_id: int, owner_id: int, permissions: Any) -> bool:
    """Whether someone may cancel, delete or show a job: its owner, or a member with Manage Messages there."""
    return user_id == owner_id or bool(permissions is not None and permissions.manage_messages)


def may_configure(permissions: Any) -> bool:
    """Whether someone may change natty's settings on a server (and its Natty or Not pool): Manage Server."""
    return bool(permissions is not None and permissions.manage_guild)


def require_configure(interaction: Any) -> bool:
    """An app-command check for commands that change what a server has (`@app_commands.check`): the member
    needs what `may_configure` asks, and is told which permission that is."""
    if not may_configure(getattr(interaction, "permissions", None)):
        raise app_commands.MissingPermissions(["manage_guild"])
    return True


class Policy:
    """The bot's rules over its settings, catalog, the models' availability and each server's settings."""

    def __init__(self, settings: Settings, catalog: Catalog, availability: dict[str, tuple[bool, str]],
                 server_settings: Callable[[int | None], dict[str, Any]]) -> None:
        self.settings = settings
        self.catalog = catalog
        self.availability = availability  # the bot's live table: refreshed in place
        self._server = server_settings
        self.task_commands: dict[str, str] = {}  # task -> the command that makes it: the bot fills it (tasks_of)

    def command_for(self, task: str) -> str:
        """The command that governs jobs of `task` (its own name when no command makes it)."""
        return self.task_commands.get(task, task)

    def server(self, guild_id: int | None) -> dict[str, Any]:
        """A server's settings ({} outside servers)."""
        return self._server(guild_id) if guild_id is not None else {}

    # --- language ------------------------------------------------------------------------------------------

    def locale(self, user_locale: Any = None, guild_id: int | None = None, guild_locale: Any = None) -> str:
        """The language to answer in: the person's own, else the server's setting, else the server's locale."""
        return pick_locale(user_locale, self.server(guild_id).get("language"), guild_locale)

    # --- models --------------------------------------------------------------------------------------------

    def can_run(self, name: str) -> tuple[bool, str]:
        return self.availability.get(name, (True, ""))

    def models_for(self, task: str, gs: dict[str, Any]) -> list[ModelEntry]:
        """The catalog entries for a task that this server allows."""
        disabled = set(gs.get("disabled_models", []))
        return [e for e in self.catalog.for_task(task) if e.name not in disabled]

    def default_model(self, task: str, gs: dict[str, Any]) -> ModelEntry | None:
        """The entry a job of this task uses when nobody names one (None when none can run)."""
        entry, _ = self.resolve(task, None, gs)
        return entry

    def resolve(self, task: str, requested: str | None, gs: dict[str, Any], locale: str | None = None,
                prefer: tuple[str, ...] = ()) -> tuple[ModelEntry | None, str | None]:
        """The entry a job should use, or a message (in `locale`) saying why there is none.

        `prefer`: entries a feature works best with (the game's digit model), tried first when they can run.
        """
        entries = self.models_for(task, gs)
        if requested:
            entry = next((e for e in entries if e.name == requested), None)
            if entry is None:
                names = ", ".join(e.name for e in entries) or t("common.none", locale)
                return None, t("model.no_such", locale, model=requested, task=task_name(task, locale), names=names)
            ok, reason = self.can_run(entry.name)
            if not ok:
                return None, t("model.cannot_run", locale, model=entry.name, reason=reason)
            return entry, None
        usable = [e for e in entries if self.can_run(e.name)[0]]
        for name in (*prefer, gs.get("defaults", {}).get(task)):
            entry = next((e for e in usable if e.name == name), None)
            if entry is not None:
                return entry, None
        chosen = self.catalog.default_for(task, {e.name for e in usable})  # the operator's default wins
        if chosen is not None:
            return chosen, None
        if not entries:
            return None, t("model.none_configured", locale, task=task_name(task, locale))
        reasons = "; ".join(f"{e.name}: {self.availability.get(e.name, (False, '?'))[1]}" for e in entries[:3])
        return None, t("model.none_can_run", locale, task=task_name(task, locale), reasons=reasons)

    # --- limits --------------------------------------------------------------------------------------------

    def limits(self, job: Job) -> Limits:
        """What a job counts against: the server's limits, else the operator's."""
        gs = self.server(job.guild_id)
        return Limits(
            per_user=int(gs.get("max_jobs_per_user", self.settings.max_jobs_per_user)),
            per_guild=int(gs.get("max_jobs_per_guild", self.settings.max_jobs_per_guild)),
            cooldown=float(gs.get("cooldown_seconds", self.settings.cooldown_seconds)),
            daily_quota=gs.get("daily_quota"),
        )

    # --- gates ---------------------------------------------------------------------------------------------

    def check_prompt(self, prompt: str, locale: str | None = None, limit: int | None = None) -> str | None:
        """An empty or over-long prompt, in words; None when it is fine."""
        limit = self.settings.max_prompt_chars if limit is None else limit
        if not prompt.strip():
            return t("prompt.empty", locale)
        if len(prompt) > limit:
            return t("prompt.too_long", locale, length=f"{len(prompt):,}", limit=f"{limit:,}")
        return None

    def gate_command(self, origin: Origin, task: str | None = None) -> str | None:
        """Whether this command (and, for plain generation, its task's command) may run in this channel."""
        if origin.operator or origin.command in ALWAYS_ON:
            return None
        gs = self.server(origin.guild_id)
        if not gs:
            return None
        disabled = set(gs.get("disabled_commands") or [])
        names = [origin.command]
        if task and origin.command not in COMPOSITE_COMMANDS:
            names.append(self.command_for(task))
        for name in names:
            if name in disabled:
                return t("settings.command_off", origin.locale, command=command_word(name, origin.locale))
        if not channel_allowed(gs, origin.channel_id, origin.parent_channel_id):
            return t("settings.only_in", origin.locale,
                     channels=channel_mentions([int(c) for c in gs["channels"]], locale=origin.locale))
        return None

    def gate(self, origin: Origin, job: Job, entry: ModelEntry, *, check_prompt: bool = True) -> Refused | None:
        """Every rule a job must pass before it queues, whatever started it."""
        message = self.gate_command(origin, job.task)
        if message:
            return Refused(message)
        if origin.operator:
            return None
        loc = origin.locale
        if check_prompt and len(job.prompt) > entry.max_prompt_chars:
            return Refused(t("prompt.too_long_for_model", loc, model=entry.name, limit=f"{entry.max_prompt_chars:,}",
                             length=f"{len(job.prompt):,}"))
        gs = self.server(origin.guild_id)
        policy = safety.policy_of(gs)
        block = safety.check_model(entry.nsfw, age_restricted=origin.age_restricted, policy=policy)
        if block is None and job.task in safety.PROMPT_TASKS:
            block = safety.check_prompt(job.prompt, age_restricted=origin.age_restricted, policy=policy,
                                        server_terms=gs.get("blocklist") or [])
        if block is not None:
            return Refused(block.message(entry.name, loc), block)
        return None
