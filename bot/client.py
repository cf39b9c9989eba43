"""The bot: storage, the job engine and the cogs wired together, and one error path for every interaction."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import hashlib
import importlib.util
import json
import logging
import mimetypes
import pkgutil
import time
import traceback
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import policy as rules
from bot.config import Settings
from bot.i18n import NattyTranslator, pick_locale, t
from bot.jobs.availability import Availability
from bot.jobs.engine import JobEngine, LimitHit
from bot.jobs.job import INTERACTION_TOKEN_LIFETIME, Job
from bot.jobs.results import open_results
from bot.jobs.storage import Storage
from bot.ops import Ops
from bot.policy import Origin, Policy, Refused
from bot.safety import Block, audit_notice
from bot.ui import delivery
from bot.ui.buttons import ActionHandler, JobButton
from bot.ui.presenter import Presenter
from models.backends import Backends
from models.catalog import Catalog

log = logging.getLogger("natty.bot")


def _cogs() -> tuple[str, ...]:
    """Every module in cogs/ is a cog (common.py is what they share): a new cog file needs no list."""
    spec = importlib.util.find_spec("cogs")
    assert spec is not None and spec.submodule_search_locations is not None  # a package of this project
    names = sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations))
    return tuple(f"cogs.{name}" for name in names if name != "common")


EXTENSIONS = _cogs()

# What the bot needs in a server: send messages and files, embed links, threads, read history for reply chains.
PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, create_public_threads=True,
    embed_links=True, attach_files=True, read_message_history=True, add_reactions=True, use_external_emojis=True,
)
CHAT_IMAGE_LIMIT = 20 * 1024 * 1024  # bytes per image a chat reply may carry (OpenAI's own limit per image)


def command_of(interaction: discord.Interaction) -> str:
    """The command an interaction belongs to: its slash command or context menu; "" for a button or a modal,
    whose job is then governed by its task's command (`Policy.command_for`, applied in `submit_job`)."""
    command = interaction.command
    if isinstance(command, app_commands.Command | app_commands.Group):
        return command.qualified_name.split()[0]
    if isinstance(command, app_commands.ContextMenu):
        return command.name
    return ""


def safe_filename(name: str) -> str:
    """A file name that stays inside its folder."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    return cleaned.lstrip(".")[:100] or "file"


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS,
                                   scopes=("bot", "applications.commands"))


GC_THRESHOLDS = (20_000, 20, 20)  # Python's default is (700, 10, 10)
_GC_SETTLED = False


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector's pauses off the event loop's back, once the bot has started.

    Every object alive at start-up (modules, the catalog, discord.py's state) moves to the collector's permanent
    generation (`gc.freeze`), so no collection walks them again, and the youngest generation is collected after
    20,000 allocations instead of 700. The collector runs on whichever thread allocates, mostly the loop's, holding
    the interpreter lock: in bench/ack_latency.py a full collection took up to 230 ms and the young ones up to
    24 ms, the largest pauses of the bot's loop while jobs ran."""
    global _GC_SETTLED
    if not _GC_SETTLED:  # the first start in a process: what start-up left behind goes first (100-200 ms, once)
        gc.collect()
        _GC_SETTLED = True
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class NattyTree(app_commands.CommandTree["NattyBot"]):
    """The bot's command tree: every command passes the server's rules first, and one error path answers."""

    async def interaction_check(self, interaction: discord.Interaction[NattyBot], /) -> bool:
        return await self.client.command_allowed(interaction)

    async def on_error(self, interaction: discord.Interaction[NattyBot], error: app_commands.AppCommandError,
                       /) -> None:
        await self.client.on_app_command_error(interaction, error)


def _intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True  # reply chains continue conversations
    return intents


class NattyBot(commands.Bot):
    """The bot; `ShardedNattyBot` is the same bot on discord.py's auto-sharded client."""

    settings: Settings
    catalog: Catalog
    storage: Storage
    engine: JobEngine
    presenter: Presenter
    backends: Backends
    actions: dict[str, ActionHandler]
    availability: dict[str, tuple[bool, str]]
    policy: Policy
    models_watch: Availability
    ops: Ops
    started_at: float
    synced_count: int | None
    sync_only: tuple[bool, int | None] = (False, None)  # (sync the commands and stop, in this guild only)

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        # no mentions by default, for every message the bot sends (one place: only the channel fallback's ping
        # of the requester asks for more, explicitly)
        commands.Bot.__init__(self, command_prefix=commands.when_mentioned, intents=_intents(), help_command=None,
                              tree_cls=NattyTree, allowed_mentions=delivery.NO_MENTIONS,
                              guild_ready_timeout=settings.guild_ready_timeout)
        self._init_natty(settings, catalog)
        self.started_at = time.time()

    def _init_natty(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        # recovery, redelivery and session resumes take only the servers of this process's shards
        self.storage = Storage(settings.database_url, settings.data_dir, shards=settings.shards,
                               results=open_results(settings.results_url, settings.s3_endpoint, settings.data_dir))
        self.backends = Backends()
        self.actions = {}
        self.result_actions: dict[str, tuple[str, ...]] = {}  # task -> its result's buttons (rules.tasks_of)
        self.availability = {}
        self._guild_settings_cache: dict[int, dict[str, Any]] = {}
        self.policy = Policy(settings, catalog, self.availability, self._cached_settings)
        self.presenter = Presenter(self)
        self.engine = make_engine(settings, self.storage, catalog, self.backends, self.policy.limits)
        self.engine.listeners.append(self.presenter)
        self.models_watch = Availability(catalog, self.backends.check, self.availability,
                                         interval=settings.recheck_seconds, retry_min=settings.recheck_min_seconds)
        self.engine.failure_hooks.append(self.models_watch.failed)
        self.ops = Ops(self)  # after the presenter: a job's state is final once its output checks ran
        self.engine.listeners.append(self.ops)
        self.http.http_trace = self.ops.trace  # read when login opens the HTTP session: acks and 429s
        self.presenter.acks.watch(self._connection.parsers, self.ops.trace)  # edits wait while acks are due
        self._notices: set[asyncio.Task[None]] = set()

    # --- start-up ------------------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        await self.storage.open()
        self._guild_settings_cache = await self.storage.all_guild_settings()
        await self.refresh_availability()
        for name in EXTENSIONS:
            await self.load_extension(name)
        self.policy.task_commands, self.result_actions = rules.tasks_of(self.tree)
        self.add_dynamic_items(JobButton)  # the tree's check and error path are NattyTree's
        await self.tree.set_translator(NattyTranslator())  # before the hash and the sync: names travel with them
        force, guild = self.sync_only
        # a worker never talks to the gateway: the gateways' processes sync the commands
        self.synced_count = None if self.role == "worker" else await self.sync_commands(force=force, guild_id=guild)
        if force:
            return
        if self.settings.metrics_port is not None:
            await self.ops.start(self.settings.metrics_host, self.settings.metrics_port)
        await self.engine.start()
        self.models_watch.start()
        settle_garbage_collector()
        log.info("ready to serve: %d models, %d jobs recovered", len(self.catalog.entries), len(self.engine.active))

    async def close(self) -> None:
        await self.ops.stop()
        await self.models_watch.stop()
        if self.engine._loop_task is not None:
            await self.engine.stop()
        await self.presenter.close()  # pending progress edits, before the HTTP session closes under them
        await self.storage.close()
        await super().close()

    async def refresh_availability(self) -> None:
        await self.models_watch.refresh()

    async def command_hash(self) -> str:
        """A digest of the commands as Discord gets them, translations included."""
        tree = self.tree
        translator = tree.translator
        if translator is None:
            payload = [c.to_dict(tree) for c in tree.get_commands()]
        else:
            payload = [await c.get_translated_payload(tree, translator) for c in tree.get_commands()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_commands(self, force: bool = False, guild_id: int | None = None) -> int | None:
        """Sync slash commands when the command set changed (Discord allows 200 creations a day per guild)."""
        guild_id = guild_id or self.settings.sync_guild
        scope = f"commands:{guild_id or 'global'}"
        digest = await self.command_hash()
        if not force and await self.storage.get_meta(scope) == digest:
            log.info("slash commands unchanged; not syncing (%s)", scope)
            return None
        guild = discord.Object(guild_id) if guild_id else None
        if guild:
            self.tree.copy_global_to(guild=guild)
        synced = await self.tree.sync(guild=guild)
        await self.storage.set_meta(scope, digest)
        log.info("synced %d slash commands (%s)", len(synced), scope)
        return len(synced)

    @property
    def role(self) -> str:
        """all, gateway or worker (bot.jobs.roles). A worker resumes no sessions: gateways hold them."""
        return self.settings.role

    # --- settings, limits and models -----------------------------------------------------------------

    def _cached_settings(self, guild_id: int | None) -> dict[str, Any]:
        # every server's settings are loaded at start-up and every change goes through save_guild_settings,
        # so the cache is complete: no database read before an interaction is acknowledged
        return self._guild_settings_cache.setdefault(guild_id, {}) if guild_id is not None else {}

    async def guild_settings(self, guild_id: int | None) -> dict[str, Any]:
        return self._cached_settings(guild_id)

    async def locale_for(self, interaction: discord.Interaction) -> str:
        """The language to answer this person in (see bot.policy)."""
        return self.policy.locale(interaction.locale, interaction.guild_id, interaction.guild_locale)

    async def guild_locale(self, guild_id: int | None, discord_locale: Any = None) -> str:
        """The language of messages for a whole server (game rounds, panels): its setting, else its locale."""
        return self.policy.locale(None, guild_id, discord_locale)

    async def save_guild_settings(self, guild_id: int, settings: dict[str, Any]) -> None:
        await self.storage.save_guild_settings(guild_id, settings)
        self._guild_settings_cache[guild_id] = settings

    # --- jobs from interactions ----------------------------------------------------------------------

    async def refuse(self, interaction: discord.Interaction, message: str, task: str = "", model: str = "",
                     prompt: str = "") -> None:
        """Answer a bad request with a short ephemeral message and keep a failed job record of it."""
        await self.send_error(interaction, message)
        if task:
            await self.engine.record_failure(
                Job(user_id=interaction.user.id, task=task, model=model or "-", prompt=prompt[:4000],
                    guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                    locale=await self.locale_for(interaction)), message)

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
        await self.send_error(interaction, message)

    def origin_of(self, interaction: discord.Interaction, locale: str) -> Origin:
        """An interaction as the rules see it: who, where, through which command."""
        return Origin.in_channel(interaction.channel, user_id=interaction.user.id, guild_id=interaction.guild_id,
                                 channel_id=interaction.channel_id, command=command_of(interaction),
                                 locale=locale)

    async def submit_job(self, origin: Origin, task: str, prompt: str = "", *, model: str | None = None,
                         prefer: tuple[str, ...] = (), params: dict[str, Any] | None = None,
                         inputs: dict[str, tuple[str, bytes]] | None = None, parent_id: str | None = None,
                         message_id: int | None = None, interaction: discord.Interaction | None = None,
                         ephemeral: bool = False, cooldown: bool = True, check_prompt: bool = True) -> Job:
        """The one way a job is made, whatever asked for it: resolve the model, apply every rule, store the
        inputs as files, and queue it under the limits. Raises `Refused` (with a failed job record kept) when
        it may not run; the caller tells the user its own way.

        `cooldown=False` for the parts of something a member already started (a story's scenes, a game's
        items): they count towards caps and quotas but do not wait out the cooldown.
        """
        if not origin.command:  # a button or modal: the command that makes jobs of this task
            origin = dataclasses.replace(origin, command=self.policy.command_for(task))
        loc = origin.locale
        gs = self.policy.server(origin.guild_id)
        entry, problem = self.policy.resolve(task, model, gs, loc, prefer)
        job = Job(user_id=origin.user_id, task=task, model=entry.name if entry else (model or "-"),
                  prompt=prompt, params=dict(params or {}), guild_id=origin.guild_id,
                  channel_id=origin.channel_id, ephemeral=ephemeral, locale=loc, message_id=message_id,
                  parent_id=parent_id)
        job.params["age_restricted"] = origin.age_restricted  # the output check needs it, after restarts too
        if origin.parent_channel_id:
            job.params["parent_channel_id"] = origin.parent_channel_id
        if interaction is not None:
            job.application_id, job.interaction_token = interaction.application_id, interaction.token
            job.token_expires_at = interaction.created_at.timestamp() + INTERACTION_TOKEN_LIFETIME
            job.params["filesize_limit"] = interaction.filesize_limit
        refusal = Refused(problem) if problem else None
        if refusal is None and check_prompt and not origin.operator:
            message = self.policy.check_prompt(prompt, loc)
            refusal = Refused(message) if message else None
        if refusal is None and entry is not None:
            refusal = self.policy.gate(origin, job, entry, check_prompt=check_prompt)
        if refusal is not None:
            if refusal.block is not None:
                self.report_block(gs, job, origin.command, refusal.block)
            refusal.job = await self.engine.record_failure(job, refusal.message)
            raise refusal
        for key, (filename, data) in (inputs or {}).items():
            folder = self.settings.data_dir / "inputs" / job.id
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / safe_filename(filename)
            path.write_bytes(data)
            job.params[f"{key}_path"] = str(path.resolve())
        try:
            await self.engine.submit(job, cooldown=cooldown)
        except LimitHit as exc:  # the engine kept the record
            raise Refused(exc.message, job=job) from None
        return job

    async def submit(self, interaction: discord.Interaction, task: str, prompt: str = "", *, model: str | None = None,
                     params: dict[str, Any] | None = None, ephemeral: bool = False, parent_id: str | None = None,
                     inputs: dict[str, tuple[str, bytes]] | None = None, check_prompt: bool = True) -> Job | None:
        """A slash command, button, modal or menu's job: cheap checks answer before the acknowledgement, then
        `submit_job` after it; a refusal replaces the "thinking" message."""
        loc = await self.locale_for(interaction)
        if check_prompt:
            problem = self.policy.check_prompt(prompt, loc)
            if problem:
                await self.refuse(interaction, problem, task, model or "", prompt)
                return None
        message_id = await self.ack(interaction, ephemeral)
        try:
            job = await self.submit_job(self.origin_of(interaction, loc), task, prompt, model=model, params=params,
                                        inputs=inputs, parent_id=parent_id, message_id=message_id,
                                        interaction=interaction, ephemeral=ephemeral, check_prompt=check_prompt)
        except Refused as exc:
            await self.send_error(interaction, exc.message)
            return None
        await self.storage.link_message(message_id, job.id, interaction.channel_id)
        return job

    async def command_allowed(self, interaction: discord.Interaction, /) -> bool:
        """Every slash command and context menu passes the server's command and channel rules first, so a
        command that starts no job itself (/collab, /natty play) obeys them too."""
        if interaction.type is not discord.InteractionType.application_command:
            return True
        loc = await self.locale_for(interaction)
        origin = self.origin_of(interaction, loc)
        problem = self.policy.gate_command(origin)
        if problem is None:
            return True
        task = next((task for task, command in self.policy.task_commands.items() if command == origin.command),
                    origin.command)
        await self.engine.record_failure(Job(user_id=origin.user_id, task=task, model="-", guild_id=origin.guild_id,
                                             channel_id=origin.channel_id, locale=loc), problem)
        await self.send_error(interaction, problem)  # a check here is outside the tree's error handlers
        return False

    def report_block(self, gs: dict[str, Any], job: Job, command: str, block: Block) -> None:
        """A log line for a request or result a safety rule blocked, and a short notice in the server's audit
        channel when it has one."""
        log.warning("blocked /%s (job %s) from user %s in guild %s channel %s: %s [%s]", command, job.id,
                    job.user_id, job.guild_id, job.channel_id, block.label, block.term)
        channel_id = gs.get("audit_channel")
        if not channel_id:
            return
        text = audit_notice(user_id=job.user_id, command=command, rule=block.rule, channel_id=job.channel_id,
                            prompt=job.prompt, job_id=job.id, locale=self.policy.locale(None, job.guild_id))
        task = asyncio.create_task(self._send_notice(int(channel_id), job.guild_id, text))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _send_notice(self, channel_id: int, guild_id: int | None, text: str) -> None:
        channel = self.get_partial_messageable(channel_id, guild_id=guild_id)
        try:
            await channel.send(text)
        except discord.HTTPException as exc:
            log.warning("could not post to audit channel %s: %s", channel_id, exc)

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
        """The one way a problem is told to the member who asked: in the "thinking" message when there is one,
        else privately; never raises (the error path must answer even when Discord refuses)."""
        text = delivery.warning(message)
        try:
            if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
                # the "thinking" message is the place for the answer (a followup would leave it spinning)
                await interaction.edit_original_response(content=text)
            elif interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not tell user %s about an error: %s", interaction.user.id, exc)


class ShardedNattyBot(NattyBot, commands.AutoShardedBot):
    """NattyBot on the auto-sharded client. `commands.Bot` defines nothing of its own (it is `BotBase` and
    `discord.Client`), so the MRO puts AutoShardedBot's client methods before Client's, as a plain
    AutoShardedBot subclass has them."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        commands.AutoShardedBot.__init__(self, command_prefix=commands.when_mentioned, intents=_intents(),
                                         help_command=None, tree_cls=NattyTree, allowed_mentions=delivery.NO_MENTIONS,
                                         shard_count=settings.shard_count,
                                         guild_ready_timeout=settings.guild_ready_timeout)
        if settings.shard_ids:  # this process's shards, when the others run in other processes
            self.shard_ids = list(settings.shard_ids)
        self._init_natty(settings, catalog)
        self.started_at = time.time()


def make_engine(settings: Settings, storage: Storage, catalog: Catalog, backends: Backends,
                limits: Any) -> JobEngine:
    """The job engine of this process's role: one process for all, or a gateway or worker of the shared queue."""
    if settings.role == "all":
        return JobEngine(storage, catalog, backends, limits)
    from bot.jobs.roles import GatewayEngine, WorkerEngine, served_models

    if settings.role == "gateway":
        return GatewayEngine(storage, catalog, backends, limits, lease=settings.lease_seconds)
    return WorkerEngine(storage, catalog, backends, limits, lease=settings.lease_seconds,
                        serves=served_models(catalog, settings.worker_models))


def make_bot(settings: Settings, catalog: Catalog) -> NattyBot:
    """The bot for these settings, pointed at the configured REST base and gateway."""
    apply_endpoints(settings)
    cls = ShardedNattyBot if settings.sharded else NattyBot
    return cls(settings, catalog)


def apply_endpoints(settings: Settings) -> None:
    """Point discord.py at a REST proxy or test server, and at another gateway, when configured."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    if settings.api_base:
        Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
