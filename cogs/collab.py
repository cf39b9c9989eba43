"""/collab: a group writes one prompt together in a thread, then natty generates it and credits everyone.

The session logic and the fusion rule live in bot/community/collab.py. Buttons carry the session id in their custom_id
(`collab:ACTION:SESSION[:IDEA]`), and each open session has a timer task whose deadline is in the database,
so sessions, buttons and timers all survive a restart.

Languages: what a session posts for everyone (the start message, the thread's name, the panel, ideas, buttons,
the result and its credit line) is in the server's language, kept in the session (`Session.locale`); replies
to one person (the idea form, confirmations, refusals) are in that person's language.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.community import collab as c
from bot.community import game as g
from bot.community.sessions import Sessions
from bot.i18n import t
from bot.policy import MAX_OPEN_SESSIONS, Origin, age_restricted, may_manage
from bot.ui import delivery, uploads
from cogs.common import lang, natty, server_lang

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.collab")

OLD_MESSAGE_EDIT, UNKNOWN_MESSAGE, ARCHIVED_THREAD = 30046, 10008, 50083  # Discord's JSON error codes


class CollabButton(discord.ui.DynamicItem[discord.ui.Button],
                   template=r"collab:(?P<action>add|gen|vote|remix):(?P<sid>[a-z0-9]+)(?::(?P<arg>[0-9]+))?"):
    LOOKS = {"add": ("collab.button_add", "💡", discord.ButtonStyle.primary),
             "gen": ("collab.button_generate", "✨", discord.ButtonStyle.success),
             "vote": ("collab.button_vote", "👍", discord.ButtonStyle.secondary),
             "remix": ("collab.button_remix", "🧩", discord.ButtonStyle.secondary)}

    def __init__(self, action: str, sid: str, arg: int | None = None, votes: int = 0,
                 locale: str | None = None) -> None:
        key, emoji, style = self.LOOKS[action]
        label = t(key, locale, n=votes) if action == "vote" else t(key, locale)
        custom_id = f"collab:{action}:{sid}" + (f":{arg}" if arg is not None else "")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id))
        self.action, self.sid, self.arg = action, sid, arg

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> CollabButton:
        return cls(match["action"], match["sid"], int(match["arg"]) if match["arg"] else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        interaction = natty(interaction)
        cog = interaction.client.get_cog("Collab")
        if not isinstance(cog, Collab):  # not loaded
            await interaction.response.send_message(t("collab.not_running", await lang(interaction)), ephemeral=True)
            return
        handler = {"add": cog.on_add, "gen": cog.on_generate, "vote": cog.on_vote, "remix": cog.on_remix}
        await handler[self.action](interaction, self.sid, self.arg)


def panel_view(session: c.Session) -> discord.ui.View | None:
    if session.state != "open":
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CollabButton("add", session.id, locale=session.locale))
    view.add_item(CollabButton("gen", session.id, locale=session.locale))
    return view


def idea_view(session: c.Session, index: int) -> discord.ui.View | None:
    if session.state != "open":
        return None
    view = discord.ui.View(timeout=None)
    view.add_item(CollabButton("vote", session.id, index, votes=session.ideas[index].votes, locale=session.locale))
    return view


class IdeaModal(discord.ui.Modal):
    """The idea form: shown to one person, so in their language."""

    def __init__(self, cog: Collab, sid: str, locale: str | None = None) -> None:
        super().__init__(timeout=900, title=t("collab.modal_title", locale))
        self.cog, self.sid = cog, sid
        self.idea: discord.ui.TextInput[IdeaModal] = discord.ui.TextInput(
            label=t("collab.modal_label", locale), style=discord.TextStyle.paragraph, max_length=300,
            placeholder=t("collab.modal_placeholder", locale))
        self.add_item(self.idea)

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        await self.cog.add_idea(natty(interaction), self.sid, str(self.idea.value))

    async def on_error(  # type: ignore[override]  # discord.py's Modal.on_error drops BaseView's item argument
            self, interaction: discord.Interaction, error: Exception, /) -> None:
        log.exception("adding an idea to session %s failed", self.sid, exc_info=error)
        await self.cog.bot.send_error(interaction, t("collab.idea_failed", await lang(natty(interaction))))


@app_commands.guild_only()
class Collab(commands.GroupCog, group_name="collab", group_description="Write a prompt together, then generate it"):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        self.sessions = Sessions("collab")  # each open session's timer task, lock and wakeup
        self.panels: dict[str, int] = {}  # a session's panel once it was posted again (see _refresh_panel)
        self.saving: set[asyncio.Task[None]] = set()
        self.store = g.SessionStore(bot.storage, "collab")
        super().__init__()

    async def cog_load(self) -> None:
        if self.bot.role == "worker":  # gateways hold the sessions
            return
        for sid in await self.store.open_ids():
            self.sessions.spawn(sid, self._drive)

    async def cog_unload(self) -> None:
        self.sessions.cancel_all()

    def _lock(self, sid: str) -> asyncio.Lock:
        return self.sessions.lock(sid)

    async def _load(self, sid: str) -> c.Session | None:
        raw = await self.store.load(sid)
        return c.Session.from_json(raw) if raw else None

    async def _save(self, s: c.Session) -> None:
        deadline = s.deadline if s.state == "open" else None
        await self.store.save(s.id, s.guild_id, s.channel_id, s.state, deadline, s.to_json())

    def _thread(self, s: c.Session) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(s.thread_id or s.channel_id)

    async def _unarchive(self, s: c.Session, exc: discord.HTTPException) -> bool:
        """The session's thread was archived (by a moderator, or by Discord after a day without messages) while
        the session still runs: open it again. False when that is not the problem or cannot be fixed."""
        if exc.code != ARCHIVED_THREAD or not s.thread_id:
            return False
        try:
            await self.bot.http.edit_channel(s.thread_id, archived=False, reason=f"collab session {s.id} is running")
        except discord.HTTPException as again:
            log.warning("collab session %s: its thread is archived and could not be reopened: %s", s.id, again)
            return False
        log.info("collab session %s: reopened its archived thread %s", s.id, s.thread_id)
        return True

    async def _send(self, s: c.Session, content: str, **kwargs: Any) -> discord.Message:
        """Post in the session's thread, reopening it first when it was archived."""
        try:
            return await self._thread(s).send(content, **kwargs)
        except discord.HTTPException as exc:
            if not await self._unarchive(s, exc):
                raise
            for file in kwargs.get("files") or ():
                file.reset()  # the refused upload read them
            return await self._thread(s).send(content, **kwargs)

    # --- commands -----------------------------------------------------------------------------------------------

    @app_commands.command(name="start", description="Open a session where everyone adds and votes on ideas")
    @app_commands.describe(task="What to make", theme="What the session is about",
                           minutes="How long ideas and votes stay open (fractions allowed)")
    async def start(self, interaction: discord.Interaction[NattyBot], theme: app_commands.Range[str, 1, 200],
                    task: Literal["image", "text"] = "image",
                    minutes: app_commands.Range[float, 0.05, 1440.0] = 5.0) -> None:
        problem = await self._may_open(interaction)
        if problem:
            await self.bot.send_error(interaction, problem)
            return
        await interaction.response.defer(thinking=True)
        channel = interaction.channel
        s = c.Session(id=secrets.token_hex(5), guild_id=interaction.guild_id, channel_id=interaction.channel_id or 0,
                      host_id=interaction.user.id, task=task, theme=" ".join(theme.split()),
                      deadline=time.time() + minutes * 60, minutes=minutes, locale=await server_lang(interaction),
                      filesize_limit=interaction.filesize_limit)
        theme_md = discord.utils.escape_markdown(s.theme)
        await interaction.edit_original_response(
            content=t("collab.started", s.locale, user=interaction.user.mention, theme=theme_md,
                      when=f"<t:{int(s.deadline) + 1}:R>", id=s.id))
        if isinstance(channel, discord.Thread):
            s.thread_id = channel.id
        else:
            message = await interaction.original_response()
            s.start_message_id = message.id
            try:
                thread = await message.create_thread(name=t("collab.thread_name", s.locale, theme=s.theme)[:100],
                                                     auto_archive_duration=1440)
            except discord.HTTPException as exc:
                await interaction.edit_original_response(
                    content=t("collab.no_thread", await lang(interaction), status=exc.status))
                return
            s.thread_id = thread.id
        await self._open(s)

    @app_commands.command(name="remix", description="Start a new collab round from an earlier session's result")
    @app_commands.describe(session="The session id, as shown under its result",
                           minutes="How long ideas and votes stay open (fractions allowed)")
    async def remix(self, interaction: discord.Interaction[NattyBot], session: str,
                    minutes: app_commands.Range[float, 0.05, 1440.0] = 5.0) -> None:
        await self._remix(interaction, session.strip().lower(), minutes)

    # --- buttons and the modal ---------------------------------------------------------------------------------

    async def on_add(self, interaction: discord.Interaction[NattyBot], sid: str, arg: int | None) -> None:
        s = await self._load(sid)
        if s is None or s.state != "open":
            await interaction.response.send_message(t("collab.closed", await lang(interaction)), ephemeral=True)
            return
        await interaction.response.send_modal(IdeaModal(self, sid, await lang(interaction)))

    async def add_idea(self, interaction: discord.Interaction[NattyBot], sid: str, text: str) -> None:
        # Acknowledge first: the lock may be held by another idea's post, waiting out a rate limit.
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self._lock(sid):
            s = await self._load(sid)
            if s is None:
                await interaction.edit_original_response(content=t("collab.gone", await lang(interaction)))
                return
            try:
                idea = c.add_idea(s, interaction.user.id, text)
            except c.CollabError as exc:
                await interaction.edit_original_response(content=exc.text(await lang(interaction)))
                return
            index = len(s.ideas) - 1
            await interaction.edit_original_response(
                content=t("collab.idea_added", await lang(interaction), n=index + 1))
            message = await self._send(
                s, t("collab.idea_post", s.locale, text=discord.utils.escape_markdown(idea.text), n=index + 1,
                  user=interaction.user.mention),
                view=idea_view(s, index))
            idea.message_id = message.id
            await self._save(s)
        await self._refresh_panel(s)

    async def on_vote(self, interaction: discord.Interaction[NattyBot], sid: str, arg: int | None) -> None:
        async with self._lock(sid):
            s = await self._load(sid)
            if s is None:
                await interaction.response.send_message(t("collab.gone", await lang(interaction)), ephemeral=True)
                return
            try:
                voted = c.toggle_vote(s, arg or 0, interaction.user.id)
            except c.CollabError as exc:
                await interaction.response.send_message(exc.text(await lang(interaction)), ephemeral=True)
                return
            await self._save(s)
            # the press itself updates the count on the idea's button (acknowledges and edits in one call)
            await interaction.response.edit_message(view=idea_view(s, arg or 0))
        log.info("session %s: %s %s idea %d", sid, interaction.user.id, "voted for" if voted else "unvoted", arg or 0)
        await self._refresh_panel(s)

    async def on_generate(self, interaction: discord.Interaction[NattyBot], sid: str, arg: int | None) -> None:
        async with self._lock(sid):
            s = await self._load(sid)
            if s is None or s.state != "open":
                await interaction.response.send_message(t("collab.already_generating", await lang(interaction)),
                                                        ephemeral=True)
                return
            if not may_manage(interaction.user.id, s.host_id, getattr(interaction, "permissions", None)):
                await interaction.response.send_message(
                    t("collab.not_host", await lang(interaction), host=f"<@{s.host_id}>"),
                    ephemeral=True)
                return
            if not s.ideas:
                await interaction.response.send_message(t("collab.no_ideas", await lang(interaction)), ephemeral=True)
                return
            s.deadline = time.time()
            await self._save(s)
        await interaction.response.send_message(t("collab.generating", await lang(interaction)), ephemeral=True)
        self.sessions.spawn(sid, self._drive)
        self.sessions.wake(sid)

    async def on_remix(self, interaction: discord.Interaction[NattyBot], sid: str, arg: int | None) -> None:
        await self._remix(interaction, sid, None)

    async def _remix(self, interaction: discord.Interaction[NattyBot], sid: str, minutes: float | None) -> None:
        parent = await self._load(sid)
        if parent is None or parent.state != "done" or not parent.prompt or parent.guild_id != interaction.guild_id:
            await interaction.response.send_message(t("collab.no_session", await lang(interaction), id=sid[:20]),
                                                    ephemeral=True)
            return
        problem = await self._may_open(interaction)
        if problem:
            await self.bot.send_error(interaction, problem)
            return
        minutes = minutes or parent.minutes
        s = c.Session(id=secrets.token_hex(5), guild_id=parent.guild_id, channel_id=parent.channel_id,
                      host_id=interaction.user.id, task=parent.task, theme=parent.prompt[:300],
                      deadline=time.time() + minutes * 60, minutes=minutes, thread_id=parent.thread_id,
                      parent_id=parent.id, locale=await server_lang(interaction),
                      filesize_limit=interaction.filesize_limit)
        await interaction.response.send_message(t("collab.remix_started", await lang(interaction),
                                                  thread=f"<#{s.thread_id}>"), ephemeral=True)
        await self._open(s)

    # --- the session's life --------------------------------------------------------------------------------------

    async def _open(self, s: c.Session) -> None:
        panel = await self._send(s, c.panel_text(s), view=panel_view(s))
        s.panel_id = panel.id
        await self._save(s)
        log.info("collab session %s opened by %s in thread %s", s.id, s.host_id, s.thread_id)
        self.sessions.spawn(s.id, self._drive)

    async def _refresh_panel(self, s: c.Session) -> None:
        """Show the session's state in its panel. Discord refuses edits of messages older than an hour (30046),
        and a session may run for a day: then the panel is posted again at the bottom of the thread, and the old
        one deleted. An archived thread is reopened."""
        panel_id = self.panels.get(s.id, s.panel_id)
        if panel_id is None:
            return
        text, view = c.panel_text(s), panel_view(s)
        for _ in range(2):
            try:
                await self._thread(s).get_partial_message(panel_id).edit(content=text, view=view)
                return
            except discord.HTTPException as exc:
                if await self._unarchive(s, exc):
                    continue
                if exc.code in (OLD_MESSAGE_EDIT, UNKNOWN_MESSAGE):
                    break
                # the session goes on; the panel catches up at the next change
                log.warning("collab session %s: panel edit failed: %s", s.id, exc)
                return
        try:
            panel = await self._send(s, text, view=view)
        except discord.HTTPException as exc:
            log.warning("collab session %s: the panel could not be posted again: %s", s.id, exc)
            return
        log.info("collab session %s: panel %s can no longer be edited; posted it again as %s", s.id, panel_id,
                 panel.id)
        self.panels[s.id] = s.panel_id = panel.id  # the map holds it while a stale copy of the session is saved
        task = asyncio.create_task(self._save_panel(s.id, panel.id), name=f"collab-panel-{s.id}")
        self.saving.add(task)
        task.add_done_callback(self.saving.discard)
        with contextlib.suppress(discord.HTTPException):
            await self._thread(s).get_partial_message(panel_id).delete()

    async def _drive(self, sid: str) -> None:
        """Wait for the session's deadline (or Generate), then fuse, generate and post the result."""
        await self.bot.wait_until_ready()  # the job engine starts after the cogs load
        try:
            while True:
                s = await self._load(sid)
                if s is None or s.state in ("done", "failed"):
                    return
                if s.state == "open":
                    await self.sessions.wait_until(sid, s.deadline)
                    async with self._lock(sid):
                        s = await self._load(sid)
                        if s is None or s.state != "open" or time.time() < s.deadline:
                            continue
                        if not s.ideas:
                            s.state, s.error = "failed", t("collab.error_no_ideas", s.locale)
                        else:
                            s.state = "generating"
                        await self._save(s)
                    await self._close_ideas(s)
                    if s.state == "failed":
                        await self._refresh_panel(s)
                        return
                await self._generate(s)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("collab session %s failed", sid)
            with contextlib.suppress(Exception):
                s = await self._load(sid)
                if s is not None:
                    s.state, s.error = "failed", t("collab.error_internal", s.locale, error=type(exc).__name__)
                    await self._save(s)
                    await self._refresh_panel(s)
        finally:  # ended, failed, or the bot stopping: either way this task holds nothing more
            self.panels.pop(sid, None)
            self.sessions.forget(sid)

    async def _save_panel(self, sid: str, panel_id: int) -> None:
        """Record a re-posted panel in the session, under its lock (the caller may hold it: hence a task)."""
        try:
            async with self._lock(sid):
                s = await self._load(sid)
                if s is not None:
                    s.panel_id = panel_id
                    await self._save(s)
        except Exception as exc:  # e.g. the bot is stopping: the next edit finds the old panel gone and reposts
            log.warning("collab session %s: could not record its new panel %s: %s", sid, panel_id, exc)

    async def _close_ideas(self, s: c.Session) -> None:
        """Take the vote buttons off the ideas: voting is over."""
        for idea in s.ideas:
            if idea.message_id:
                with contextlib.suppress(discord.HTTPException):
                    await self._thread(s).get_partial_message(idea.message_id).edit(view=None)
        await self._refresh_panel(s)

    async def _may_open(self, interaction: discord.Interaction[NattyBot]) -> str | None:
        """Whether this member may open a session here: /collab's switch and the channels (a Remix button
        passes no slash-command check), and at most MAX_OPEN_SESSIONS open sessions of their own, since each
        holds a thread and a timer for up to a day."""
        bot = self.bot
        loc = await lang(interaction)
        problem = bot.policy.gate_command(dataclasses.replace(bot.origin_of(interaction, loc), command="collab"))
        if problem:
            return problem
        mine = 0
        for sid in await self.store.open_ids(guild_id=interaction.guild_id):  # this server's, not every server's
            s = await self._load(sid)
            mine += s is not None and s.host_id == interaction.user.id
        if mine >= MAX_OPEN_SESSIONS:
            return t("collab.too_many_sessions", loc, count=mine)
        return None

    def _origin(self, s: c.Session) -> Origin:
        """A session's generations are its host's jobs, made in its thread under /collab's switch."""
        thread = s.thread_id or s.channel_id
        return Origin(user_id=s.host_id, guild_id=s.guild_id, channel_id=thread, command="collab", locale=s.locale,
                      parent_channel_id=s.channel_id if thread != s.channel_id else None,
                      age_restricted=age_restricted(self.bot.get_channel(s.channel_id)))

    async def _fuse(self, s: c.Session) -> tuple[str, str]:
        """The prompt from the top ideas: by the language model when one is configured, else by the rule."""
        ideas = [i.text for i in c.top_ideas(s)]
        gs = await self.bot.guild_settings(s.guild_id)
        try:
            entry = g.pick_model(self.bot, "chat", gs)
        except g.GenerationFailed:
            entry = None
        if entry is not None and entry.backend != "local":  # natty's char-RNN continues text; it cannot merge
            try:
                job = await g.run_silent_job(
                    self.bot, self._origin(s), task="chat", prompt=f"Fuse the ideas of collab session {s.id}",
                    model=entry.name,
                    params={"messages": c.fusion_messages(s.task, s.theme, ideas), "model_params": {"max_tokens": 200}})
                fused = c.clean_fused((job.result or {}).get("text") or "")
                if fused:
                    return fused, entry.name
            except g.GenerationFailed as exc:
                log.warning("session %s: fusing with %s failed (%s); using the rule", s.id, entry.name, exc)
        return c.fuse_by_rule(s.theme, ideas), "rule"

    async def _generate(self, s: c.Session) -> None:
        if s.prompt is None:
            s.prompt, s.fused_by = await self._fuse(s)
            async with self._lock(s.id):
                await self._save(s)
        task = c.TASKS[s.task]
        try:
            job = await g.run_silent_job(self.bot, self._origin(s), task=task, prompt=s.prompt,
                                         params={"seed": secrets.randbelow(2**31)})
        except g.GenerationFailed as exc:
            s.state, s.error = "failed", t("collab.error_generation", s.locale, error=exc)
            async with self._lock(s.id):
                await self._save(s)
            await self._refresh_panel(s)
            await self._send(s, t("collab.result_failed", s.locale, error=exc))
            return
        s.job_id, s.state = job.id, "done"
        async with self._lock(s.id):  # done before it shows, so its Remix button works at once
            await self._save(s)
        await self._post_result(s, job)
        await self._refresh_panel(s)
        log.info("collab session %s done: job %s", s.id, job.id)

    async def _post_result(self, s: c.Session, job) -> None:  # noqa: ANN001
        presenter = self.bot.presenter
        loc = s.locale
        how = t("collab.fused_by_rule", loc) if s.fused_by == "rule" else t("collab.fused_by", loc, model=s.fused_by)
        head = [t("collab.result_title", loc) + (t("collab.result_remix", loc, id=s.parent_id) if s.parent_id else ""),
                t("collab.result_prompt", loc, prompt=discord.utils.escape_markdown(s.prompt or "")), f"-# {how}",
                c.credit_line(s)]
        files: list[discord.File] = []
        notes: list[str] = []
        result = job.result or {}
        if result.get("kind") == "text":
            text = result.get("text") or t("result.no_text", loc)
            room = delivery.MESSAGE_LIMIT - sum(len(x) + 1 for x in head) - 200
            if len(text) > room:
                files.append(discord.File(io.BytesIO(text.encode()), "collab.txt"))
                text = text[: max(0, room - 40)] + t("collab.text_attached", loc)
            head.append(text)
        else:
            files, notes = await asyncio.to_thread(presenter.result_files, job, uploads.upload_limit(s.filesize_limit))
        footer = t("collab.result_footer", loc, footer=presenter.footer(job), id=s.id)
        *before, last = delivery.with_footer("\n".join([*head, *(f"-# {n}" for n in notes)]), footer)
        for text in before:
            await self._send(s, text)
        view = discord.ui.View(timeout=None)
        view.add_item(CollabButton("remix", s.id, locale=loc))
        message = await self._send(s, last, files=files, view=view)
        await self.bot.storage.link_message(message.id, job.id, message.channel.id)


async def setup(bot: NattyBot) -> None:
    bot.add_dynamic_items(CollabButton)
    await bot.add_cog(Collab(bot))


async def teardown(bot: NattyBot) -> None:
    bot.remove_dynamic_items(CollabButton)
