"""The bot: storage, the job engine and the cogs wired together, and one error path for every interaction."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import mimetypes
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import delivery
from bot.buttons import ActionHandler, JobButton
from bot.config import Settings
from bot.engine import JobEngine, LimitHit, Limits
from bot.i18n import NattyTranslator, pick_locale, t
from bot.jobs import INTERACTION_TOKEN_LIFETIME, Job
from bot.presenter import Presenter
from bot.storage import Storage
from models.backends import Backends
from models.catalog import Catalog, ModelEntry

log = logging.getLogger("natty.bot")

EXTENSIONS = (
    "cogs.help", "cogs.jobs", "cogs.chat", "cogs.imagine", "cogs.audio", "cogs.video", "cogs.describe",
    "cogs.transcribe", "cogs.story", "cogs.settings", "cogs.safety", "cogs.natty", "cogs.collab",
)

# What the bot needs in a server: send messages and files, embed links, threads, read history for reply chains.
PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, create_public_threads=True,
    embed_links=True, attach_files=True, read_message_history=True, add_reactions=True, use_external_emojis=True,
)
TASK_NAMES = {
    "chat": "chat", "text-to-image": "image generation", "image-to-image": "image editing",
    "text-to-speech": "speech", "text-to-audio": "music and sound", "text-to-video": "video",
    "image-to-text": "image captions", "speech-to-text": "transcription", "image-classification": "image checks",
}


def task_name(task: str, locale: str | None) -> str:
    """A task in words ("image generation", "geração de imagens"): the catalog's `task.<task>` key."""
    return t(f"task.{task}", locale) if task in TASK_NAMES else task


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS,
                                   scopes=("bot", "applications.commands"))


class NattyMixin:
    """What NattyBot and its sharded twin share."""

    settings: Settings
    catalog: Catalog
    storage: Storage
    engine: JobEngine
    presenter: Presenter
    backends: Backends
    actions: dict[str, ActionHandler]
    availability: dict[str, tuple[bool, str]]
    job_checks: list[Callable[[discord.Interaction, Job, ModelEntry], Awaitable[str | None]]]

    def _init_natty(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.storage = Storage(settings.database_path, settings.data_dir)
        self.backends = Backends()
        self.actions = {}
        self.availability = {}
        # async (interaction, job, entry) -> a refusal message or None; run after the ack, before queueing
        self.job_checks: list[Callable[[discord.Interaction, Job, ModelEntry], Awaitable[str | None]]] = []
        self.presenter = Presenter(self)  # type: ignore[arg-type]
        self.engine = JobEngine(self.storage, catalog, self.backends, self._limits_for)
        self.engine.listeners.append(self.presenter)
        self._guild_settings_cache: dict[int, dict[str, Any]] = {}

    # --- start-up ------------------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        bot: commands.Bot = self  # type: ignore[assignment]
        await self.storage.open()
        self._guild_settings_cache = await self.storage.all_guild_settings()
        await self.refresh_availability()
        for name in EXTENSIONS:
            await bot.load_extension(name)
        bot.add_dynamic_items(JobButton)
        bot.tree.on_error = self.on_app_command_error
        await bot.tree.set_translator(NattyTranslator())  # before the hash and the sync: names travel with them
        force, guild = getattr(self, "sync_only", (False, None))
        self.synced_count = await self.sync_commands(force=force, guild_id=guild)
        if force:
            return
        await self.engine.start()
        log.info("ready to serve: %d models, %d jobs recovered", len(self.catalog.entries), len(self.engine.active))

    async def close(self) -> None:  # type: ignore[override]
        if self.engine._loop_task is not None:
            await self.engine.stop()
        await self.storage.close()
        await super().close()  # type: ignore[misc]

    async def refresh_availability(self) -> None:
        checks = await asyncio.gather(*(self.backends.check(e) for e in self.catalog.entries.values()),
                                      return_exceptions=True)
        for entry, result in zip(self.catalog.entries.values(), checks, strict=True):
            if isinstance(result, BaseException):
                result = (False, f"check failed: {result}")
            self.availability[entry.name] = result

    async def command_hash(self) -> str:
        """A digest of the commands as Discord gets them, translations included."""
        bot: commands.Bot = self  # type: ignore[assignment]
        translator = bot.tree.translator
        if translator is None:
            payload = [c.to_dict(bot.tree) for c in bot.tree.get_commands()]
        else:
            payload = [await c.get_translated_payload(bot.tree, translator) for c in bot.tree.get_commands()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_commands(self, force: bool = False, guild_id: int | None = None) -> int | None:
        """Sync slash commands when the command set changed (Discord allows 200 creations a day per guild)."""
        bot: commands.Bot = self  # type: ignore[assignment]
        guild_id = guild_id or self.settings.sync_guild
        scope = f"commands:{guild_id or 'global'}"
        digest = await self.command_hash()
        if not force and await self.storage.get_meta(scope) == digest:
            log.info("slash commands unchanged; not syncing (%s)", scope)
            return None
        guild = discord.Object(guild_id) if guild_id else None
        if guild:
            bot.tree.copy_global_to(guild=guild)
        synced = await bot.tree.sync(guild=guild)
        await self.storage.set_meta(scope, digest)
        log.info("synced %d slash commands (%s)", len(synced), scope)
        return len(synced)

    # --- settings, limits and models -----------------------------------------------------------------

    async def guild_settings(self, guild_id: int | None) -> dict[str, Any]:
        if guild_id is None:
            return {}
        # every server's settings are loaded at start-up and every change goes through save_guild_settings,
        # so the cache is complete: no database read before an interaction is acknowledged
        return self._guild_settings_cache.setdefault(guild_id, {})

    async def locale_for(self, interaction: discord.Interaction) -> str:
        """The language to answer this person in (see bot.i18n.pick_locale)."""
        gs = await self.guild_settings(interaction.guild_id)
        return pick_locale(interaction.locale, gs.get("language"), interaction.guild_locale)

    async def guild_locale(self, guild_id: int | None, discord_locale: Any = None) -> str:
        """The language of messages for a whole server (game rounds, panels): its setting, else its locale."""
        gs = await self.guild_settings(guild_id)
        return pick_locale(None, gs.get("language"), discord_locale)

    async def save_guild_settings(self, guild_id: int, settings: dict[str, Any]) -> None:
        await self.storage.save_guild_settings(guild_id, settings)
        self._guild_settings_cache[guild_id] = settings

    def _limits_for(self, job: Job) -> Limits:
        gs = self._guild_settings_cache.get(job.guild_id or 0, {})
        return Limits(
            per_user=int(gs.get("max_jobs_per_user", self.settings.max_jobs_per_user)),
            per_guild=int(gs.get("max_jobs_per_guild", self.settings.max_jobs_per_guild)),
            cooldown=float(gs.get("cooldown_seconds", self.settings.cooldown_seconds)),
            daily_quota=gs.get("daily_quota"),
        )

    def models_for(self, task: str, guild_settings: dict[str, Any]) -> list[ModelEntry]:
        """The catalog entries for a task that this server allows."""
        disabled = set(guild_settings.get("disabled_models", []))
        return [e for e in self.catalog.for_task(task) if e.name not in disabled]

    def resolve_model(self, task: str, requested: str | None, guild_settings: dict[str, Any],
                      locale: str | None = None) -> tuple[ModelEntry | None, str | None]:
        """The entry a job should use, or a message (in `locale`) saying why there is none."""
        entries = self.models_for(task, guild_settings)
        usable = [e for e in entries if self.availability.get(e.name, (True, ""))[0]]
        if requested:
            entry = next((e for e in entries if e.name == requested), None)
            if entry is None:
                names = ", ".join(e.name for e in entries) or t("common.none", locale)
                return None, t("model.no_such", locale, model=requested, task=task_name(task, locale), names=names)
            ok, reason = self.availability.get(entry.name, (True, ""))
            if not ok:
                return None, t("model.cannot_run", locale, model=entry.name, reason=reason)
            return entry, None
        preferred = guild_settings.get("defaults", {}).get(task)
        for entry in usable:
            if entry.name == preferred:
                return entry, None
        chosen = self.catalog.default_for(task, {e.name for e in usable})  # the operator's default wins
        if chosen is not None:
            return chosen, None
        if not entries:
            return None, t("model.none_configured", locale, task=task_name(task, locale))
        reasons = "; ".join(f"{e.name}: {self.availability.get(e.name, (False, '?'))[1]}" for e in entries[:3])
        return None, t("model.none_can_run", locale, task=task_name(task, locale), reasons=reasons)

    # --- jobs from interactions ----------------------------------------------------------------------

    async def refuse(self, interaction: discord.Interaction, message: str, task: str = "", model: str = "",
                     prompt: str = "") -> None:
        """Answer a bad request with a short ephemeral message and keep a failed job record of it."""
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(content=f"⚠️ {message}", allowed_mentions=delivery.NO_MENTIONS)
        elif interaction.response.is_done():
            await interaction.followup.send(message, ephemeral=True, allowed_mentions=delivery.NO_MENTIONS)
        else:
            await interaction.response.send_message(message, ephemeral=True, allowed_mentions=delivery.NO_MENTIONS)
        if task:
            await self.engine.record_failure(
                Job(user_id=interaction.user.id, task=task, model=model or "-", prompt=prompt[:4000],
                    guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                    locale=await self.locale_for(interaction)), message)

    def check_prompt(self, prompt: str, limit: int, locale: str | None = None) -> str | None:
        if not prompt.strip():
            return t("prompt.empty", locale)
        if len(prompt) > limit:
            return t("prompt.too_long", locale, length=f"{len(prompt):,}", limit=f"{limit:,}")
        return None

    async def read_attachment(self, interaction: discord.Interaction, attachment: discord.Attachment,
                              kinds: tuple[str, ...],
                              max_bytes: int = 25 * 1024 * 1024) -> tuple[bytes | None, str | None]:
        """Download an attachment of the interaction after checking its type and size; (data, problem)."""
        loc = await self.locale_for(interaction)
        ctype = (attachment.content_type or mimetypes.guess_type(attachment.filename)[0] or "").split(";")[0]
        if not ctype.startswith(tuple(f"{k}/" for k in kinds)):
            wanted = t("attachment.or", loc).join(t(f"attachment.kind.{k}", loc) for k in kinds)
            a_wanted = t("attachment.an" if wanted[0] in "aeiou" else "attachment.a", loc, wanted=wanted)
            return None, t("attachment.wrong_type", loc, filename=attachment.filename, wanted=wanted,
                           a_wanted=a_wanted, type=ctype or t("attachment.unknown_type", loc))
        if attachment.size > max_bytes:
            return None, t("attachment.too_big", loc, filename=attachment.filename,
                           size=delivery.human_size(attachment.size), limit=delivery.human_size(max_bytes))
        try:
            return await attachment.read(), None
        except discord.HTTPException as exc:
            return None, t("attachment.download_failed", loc, filename=attachment.filename, status=exc.status)

    async def ack(self, interaction: discord.Interaction, ephemeral: bool = False) -> int:
        """Acknowledge with a "thinking" message (once) and return that message's id."""
        if not interaction.response.is_done():
            response = await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            interaction.extras["message_id"] = getattr(response, "message_id", None)
        if interaction.extras.get("message_id") is None:
            interaction.extras["message_id"] = (await interaction.original_response()).id
        return interaction.extras["message_id"]

    async def fail_after_ack(self, interaction: discord.Interaction, message: str, task: str) -> None:
        """Turn the "thinking" message into the reason a request could not start, and keep a record."""
        await self.engine.record_failure(Job(user_id=interaction.user.id, task=task, model="-",
                                             guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                             locale=await self.locale_for(interaction)), message)
        await interaction.edit_original_response(content=f"⚠️ {message}", allowed_mentions=delivery.NO_MENTIONS)

    async def submit(self, interaction: discord.Interaction, task: str, prompt: str = "", *, model: str | None = None,
                     params: dict[str, Any] | None = None, ephemeral: bool = False, parent_id: str | None = None,
                     inputs: dict[str, tuple[str, bytes]] | None = None, check_prompt: bool = True) -> Job | None:
        """Turn an interaction into a queued job: validate, acknowledge, resolve the model, queue.

        Cheap checks answer before the acknowledgement; everything slow happens after it.
        """
        limit = self.settings.max_prompt_chars
        loc = await self.locale_for(interaction)
        if check_prompt:
            problem = self.check_prompt(prompt, limit, loc)
            if problem:
                await self.refuse(interaction, problem, task, model or "", prompt)
                return None
        message_id = await self.ack(interaction, ephemeral)
        gs = await self.guild_settings(interaction.guild_id)
        entry, problem = self.resolve_model(task, model, gs, loc)
        job = Job(user_id=interaction.user.id, task=task, model=entry.name if entry else (model or "-"),
                  prompt=prompt, params=dict(params or {}), guild_id=interaction.guild_id,
                  channel_id=interaction.channel_id, application_id=interaction.application_id,
                  interaction_token=interaction.token,
                  token_expires_at=interaction.created_at.timestamp() + INTERACTION_TOKEN_LIFETIME,
                  ephemeral=ephemeral, locale=loc, message_id=message_id, parent_id=parent_id)
        job.params["filesize_limit"] = interaction.filesize_limit
        if entry is not None and check_prompt and len(prompt) > entry.max_prompt_chars:
            problem = t("prompt.too_long_for_model", loc, model=entry.name, limit=f"{entry.max_prompt_chars:,}",
                        length=f"{len(prompt):,}")
        if problem is None and entry is not None:
            for check in self.job_checks:  # server policy: enabled commands, channels, safety
                problem = await check(interaction, job, entry)
                if problem:
                    break
        if problem:
            await self.engine.record_failure(job, problem)
            await interaction.edit_original_response(content=f"⚠️ {problem}", allowed_mentions=delivery.NO_MENTIONS)
            return None
        for key, (filename, data) in (inputs or {}).items():
            folder = self.settings.data_dir / "inputs" / job.id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / filename).write_bytes(data)
            job.params[f"{key}_path"] = str((folder / filename).resolve())
        try:
            await self.engine.submit(job)
        except LimitHit as exc:
            await interaction.edit_original_response(content=f"⚠️ {exc.message}", allowed_mentions=delivery.NO_MENTIONS)
            return None
        await self.storage.link_message(message_id, job.id, interaction.channel_id)
        return job

    # --- errors --------------------------------------------------------------------------------------

    async def on_app_command_error(self, interaction: discord.Interaction,
                                   error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, discord.NotFound) and original.code == 10062:
            # the interaction expired before we answered: a second answer would fail the same way
            log.warning("command %s answered too late (10062) for user %s",
                        getattr(interaction.command, "qualified_name", "?"), interaction.user.id)
            return
        try:
            loc = await self.locale_for(interaction)
        except Exception:  # the error path must answer even when settings cannot be read
            loc = pick_locale(interaction.locale)
        if isinstance(error, app_commands.MissingPermissions):
            message = t("command.missing_permissions", loc,
                        permissions=", ".join(error.missing_permissions).replace("_", " "))
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or t("command.not_here", loc)
        elif isinstance(error, app_commands.TransformerError):
            message = t("command.bad_value", loc, value=repr(error.value))
        else:
            message = t("command.crashed", loc, error=type(original).__name__)
            log.error("command %s failed for user %s:\n%s", getattr(interaction.command, "qualified_name", "?"),
                      interaction.user.id, "".join(traceback.format_exception(original)))
        await self.send_error(interaction, message)

    async def send_error(self, interaction: discord.Interaction, message: str) -> None:
        try:
            if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
                # the "thinking" message is the place for the answer (a followup would leave it spinning)
                await interaction.edit_original_response(content=f"⚠️ {message}", allowed_mentions=delivery.NO_MENTIONS)
            elif interaction.response.is_done():
                await interaction.followup.send(f"⚠️ {message}", ephemeral=True, allowed_mentions=delivery.NO_MENTIONS)
            else:
                await interaction.response.send_message(f"⚠️ {message}", ephemeral=True,
                                                        allowed_mentions=delivery.NO_MENTIONS)
        except discord.HTTPException as exc:
            log.warning("could not tell user %s about an error: %s", interaction.user.id, exc)


def _intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True  # reply chains continue conversations
    return intents


class NattyBot(NattyMixin, commands.Bot):
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        commands.Bot.__init__(self, command_prefix=commands.when_mentioned, intents=_intents(), help_command=None,
                              allowed_mentions=delivery.NO_MENTIONS,
                              guild_ready_timeout=settings.guild_ready_timeout)
        self._init_natty(settings, catalog)
        self.started_at = time.time()


class ShardedNattyBot(NattyMixin, commands.AutoShardedBot):
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        commands.AutoShardedBot.__init__(self, command_prefix=commands.when_mentioned, intents=_intents(),
                                         help_command=None, allowed_mentions=delivery.NO_MENTIONS,
                                         shard_count=settings.shard_count,
                                         guild_ready_timeout=settings.guild_ready_timeout)
        self._init_natty(settings, catalog)
        self.started_at = time.time()


def make_bot(settings: Settings, catalog: Catalog) -> NattyBot:
    """The bot for these settings, pointed at the configured REST base and gateway."""
    apply_endpoints(settings)
    cls = ShardedNattyBot if settings.sharded else NattyBot
    return cls(settings, catalog)  # type: ignore[return-value]


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py at a REST proxy or test server, and at another gateway, when configured."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    if settings.api_base:
        Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
