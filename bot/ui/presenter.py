"""The Discord face of jobs: queue position, progress and results rendered into one message per job.

Edits to one message are coalesced and throttled (about one a second); the last state always arrives. Queue
positions are edited less often still (POSITION_INTERVAL, on a loop timer, the latest position winning), and a
new job shows its first position only after FIRST_POSITION_DELAY, so that the positions it passes through as the
burst it came with is sorted, or its start right away, cost one edit instead of several; a position still
pending when the job starts or ends is dropped, as the start or end render supersedes it.
Results go to the interaction while its token is valid, otherwise into the channel through the bot token,
mentioning only the requester. Every message that carries a prompt or generated content allows no mentions.

Delivery is durable: a job's record is marked delivered (bot.jobs.storage `delivered_at`) only once its final
message is really in Discord, or Discord said it never can be (no permission, channel gone). What a crash
leaves unmarked the engine hands back at the next start (`job_redeliver`), and each message a delivery posts
is recorded as it goes, so a second try edits those messages instead of posting them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import discord

from bot.i18n import t
from bot.jobs.job import Job, JobState
from bot.jobs.results import ref_of
from bot.ui import delivery, uploads
from bot.ui.acks import AckGate
from bot.ui.buttons import job_view
from bot.ui.provenance import Provenance, stamp
from models.base import Progress

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.presenter")

# What a failed send looks like: Discord refusing, or the connection to it failing or timing out.
SEND_ERRORS = (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError, OSError)

CURSOR = " ▌"
TOKEN_SWEEP_INTERVAL = 60.0  # seconds between two clearings of expired interaction tokens
# Queue-position edits compete with acknowledgements for the bot's REST traffic: a waiting job's message shows
# a new position at most once every POSITION_INTERVAL seconds, and a new job's first one after a short wait.
POSITION_INTERVAL = 3.0
FIRST_POSITION_DELAY = 0.5
SENDING = 0  # the message id recorded for a followup being posted, before Discord has answered with its id



class Undeliverable(Exception):
    """The bot may not post a job's result where it has to go; trying again will not help."""


def _permanent(exc: BaseException) -> bool:
    """A refusal that another try will meet again (permissions, a deleted channel or message, a closed DM), as
    opposed to a connection problem or a server error."""
    return isinstance(exc, discord.HTTPException) and 400 <= exc.status < 500 and exc.status != 429


def _eta_text(eta: float | None, locale: str | None = None) -> str:
    if eta is None:
        return ""
    if eta < 120:
        return t("progress.eta_seconds", locale, seconds=max(1, round(eta)))
    return t("progress.eta_minutes", locale, minutes=round(eta / 60))


def _bar(fraction: float, width: int = 12) -> str:
    full = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * full + "░" * (width - full)


@dataclass
class Render:
    """One state of a job's message."""

    content: str
    files: list[discord.File] = field(default_factory=list)
    view: discord.ui.View | None = None
    final: bool = False


def _rewind(renders: list[Render], attachment: discord.File | None) -> None:
    """Make every file of a send readable from its start again, for another try."""
    for f in [*(f for r in renders for f in r.files), *([attachment] if attachment else [])]:
        f.reset(seek=True)


class LiveMessage:
    """A job's message: coalesces updates and edits it at most once per `interval`."""

    def __init__(self, presenter: Presenter, job: Job, interval: float) -> None:
        self.presenter = presenter
        self.job = job
        self.interval = interval
        self.pending: Render | None = None
        self.last_edit = 0.0
        self.lock = asyncio.Lock()
        self.flusher: asyncio.Task[None] | None = None
        self.closed = False
        self.position: Callable[[], Render] | None = None  # makes the latest queue position, not yet shown
        self.position_timer: asyncio.TimerHandle | None = None
        self.position_shown = 0.0  # monotonic time the last queue position was handed to update()

    def update(self, render: Render) -> None:
        if self.closed:
            return
        self.pending = render
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush_later())

    def queued(self, render: Callable[[], Render], interval: float, first_delay: float) -> None:
        """A new queue position: shown when its timer fires, at most once per `interval`; the latest wins. It comes
        as a function that renders it, called only for the one shown: a busy queue changes positions far more often
        than messages are edited."""
        if self.closed:
            return
        self.position = render
        if self.position_timer is not None:
            return  # the timer that is set shows this one
        now = time.monotonic()
        delay = first_delay if not self.position_shown else self.position_shown + interval - now
        self.position_timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._show_position)

    def _show_position(self) -> None:
        self.position_timer = None
        render, self.position = self.position, None
        if render is None or self.closed or self.job.state is not JobState.QUEUED:
            return  # started or ended meanwhile: that render supersedes the position
        self.position_shown = time.monotonic()
        self.update(render())

    def drop_position(self) -> None:
        """The job started or ended: a position not yet shown never will be."""
        self.position = None
        if self.position_timer is not None:
            self.position_timer.cancel()
            self.position_timer = None

    async def _flush_later(self) -> None:
        while self.pending is not None and not self.closed:  # an update during an edit is sent after it
            delay = self.last_edit + self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._flush()

    async def _flush(self) -> None:
        async with self.presenter.acks.turn(), self.lock:  # unanswered interactions go first (bot.ui.acks)
            render, self.pending = self.pending, None
            if render is None:
                return
            self.last_edit = time.monotonic()
            try:
                await self.presenter.edit_job_message(self.job, render)
            except SEND_ERRORS as exc:
                log.warning("job %s: progress edit failed: %s", self.job.id, exc or type(exc).__name__)

    async def cancel(self) -> None:
        """Drop what is pending without waiting for the spacing: the bot is shutting down."""
        self.closed = True
        self.pending = None
        self.drop_position()
        if self.flusher and not self.flusher.done():
            self.flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.flusher

    async def close(self) -> None:
        """Stop progress edits; the caller then renders the final state itself."""
        self.closed = True
        self.pending = None
        self.drop_position()
        if self.flusher and not self.flusher.done():
            self.flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.flusher
        async with self.lock:  # wait for an edit in flight
            pass
        delay = self.last_edit + self.interval - time.monotonic()
        if delay > 0:  # keep the spacing even for the last edit
            await asyncio.sleep(delay)


class Presenter:
    """Listens to the job engine and renders each job's message."""

    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        self.live: dict[str, LiveMessage] = {}
        self.custom_renderers: dict[str, Any] = {}  # task -> async (job) -> None, for combined creations
        # task -> (job) -> the messages of a finished result, for tasks whose result is shown differently;
        # used wherever a result is shown (delivery and /show), so both look the same
        self.result_renderers: dict[str, Any] = {}
        # async (job) -> a refusal message or None, run on finished results before anything is posted
        self.output_checks: list[Any] = []
        self._tokens_swept = 0.0  # monotonic time of the last clear_expired_tokens
        self._running_views: dict[str, discord.ui.View] = {}  # job id -> its Cancel button, while it runs
        self.acks = AckGate()  # the bot feeds it (bot.client): edits wait while acknowledgements are due
        self.position_interval = POSITION_INTERVAL  # tests shorten these
        self.first_position_delay = FIRST_POSITION_DELAY

    async def close(self) -> None:
        """Cancel pending progress edits, before the bot's HTTP session closes under them. The progress of jobs
        still running is not needed: they run again at the next start."""
        live, self.live = list(self.live.values()), {}
        for message in live:
            await message.cancel()

    def _live(self, job: Job) -> LiveMessage:
        live = self.live.get(job.id)
        if live is None:
            live = self.live[job.id] = LiveMessage(self, job, self.bot.settings.edit_interval)
        live.job = job
        return live

    # --- the engine's listener interface --------------------------------------------------------------

    async def job_queued(self, job: Job, position: int, eta: float | None, exact: bool = True) -> None:
        if job.silent:
            return

        def render() -> Render:
            shown = f"{position:,}" if exact else f"{position - 1:,}+"  # past the forecast's horizon: a bound
            text = t("progress.queued", job.locale, position=shown, eta=_eta_text(eta, job.locale), id=job.id,
                     model=job.model)
            return Render(self._with_prompt(job, text), view=self.running_view(job))

        self._live(job).queued(render, self.position_interval, self.first_position_delay)

    async def job_waiting(self, job: Job, text: str) -> None:
        """Where a job stands in the shared queue (bot.jobs.roles), shown at once: a gateway publishes the job only
        after this edit, so it never lands after a worker's."""
        try:
            await self.edit_job_message(job, Render(self._with_prompt(job, text), view=self.running_view(job)))
        except SEND_ERRORS as exc:
            log.warning("job %s: queue position edit failed: %s", job.id, exc or type(exc).__name__)

    async def job_progress(self, job: Job, progress: Progress) -> None:
        if job.silent:
            return
        files: list[discord.File] = []
        if progress.text is not None:  # streamed text: show the text itself
            text = progress.text[-(delivery.MESSAGE_LIMIT - 200):] + CURSOR
            body = text
        else:
            parts = [t("progress.generating", job.locale)]
            if progress.fraction is not None:
                parts.append(f"{_bar(progress.fraction)} {round(progress.fraction * 100)}%")
            if progress.step is not None and progress.total:
                parts.append(t("progress.step", job.locale, step=progress.step, total=progress.total))
            if progress.message:
                parts.append(progress.message)
            body = self._with_prompt(job, " · ".join(parts) + f" · `{job.id}` · {job.model}")
            if progress.preview:
                files.append(discord.File(io.BytesIO(progress.preview), "preview.png"))
        live = self._live(job)
        live.drop_position()
        live.update(Render(body, files=files, view=self.running_view(job)))

    async def job_finished(self, job: Job) -> None:
        self._running_views.pop(job.id, None)
        live = self.live.pop(job.id, None)
        if live is not None:
            await live.close()
        await self._sweep_tokens()
        if job.state is JobState.DONE:
            for check in self.output_checks:
                refusal = await check(job)
                if refusal:
                    job.state, job.error, job.result = JobState.FAILED, refusal, None
                    await self.bot.storage.update_job(job, "state", "error", "result")
                    break
        if job.silent:  # a part of a larger creation: its owner posts it
            await self._settle(job, "silent")
            return
        renderer = self.custom_renderers.get(job.renderer or job.task)
        if renderer is not None:
            await renderer(job)
            if job.state is JobState.DONE:  # the renderer owns it now, a restart included (a story resumes)
                await self._settle(job, "renderer")
            return
        await self.deliver(job)

    async def job_redeliver(self, job: Job) -> None:
        """A job that finished before a restart and was never delivered: deliver it now, as if it just ended
        (the output checks run again). Silent parts and results that a custom renderer took over are not
        posted: their owners resume them their own way."""
        custom = self.custom_renderers.get(job.renderer or job.task)
        if job.silent or (custom is not None and job.state is JobState.DONE):
            await self._settle(job, "silent" if job.silent else "renderer")
            return
        log.info("job %s ended (%s) before the restart without reaching Discord; delivering it now",
                 job.id, job.state)
        await self.job_finished(job)

    async def _settle(self, job: Job, how: str) -> None:
        """Record that the job's delivery is over (`how`: the route, "silent", "renderer" or "failed: why")."""
        try:
            await self.bot.storage.mark_delivered(job.id, how)
        except Exception:  # the user has the message; at worst a restart edits it again
            log.exception("job %s: could not record its delivery (%s)", job.id, how)

    async def _sweep_tokens(self) -> None:
        """Clear expired interaction tokens from the jobs table, at most once a minute (the first finished job
        after a start sweeps what earlier runs left)."""
        now = time.monotonic()
        if self._tokens_swept and now - self._tokens_swept < TOKEN_SWEEP_INTERVAL:
            return
        self._tokens_swept = now
        try:
            if cleared := await self.bot.storage.clear_expired_tokens():
                log.info("cleared %d expired interaction token(s)", cleared)
        except Exception:  # housekeeping: never let it stop a result from being delivered
            log.exception("clearing expired interaction tokens failed")

    # --- rendering ------------------------------------------------------------------------------------

    @staticmethod
    def _bold_prompt(prompt: str, end: bool = False) -> str:
        """The prompt in bold, escaped, at most 300 characters: its start, or with `end` its end."""
        if len(prompt) > 300:
            prompt = "…" + prompt[-299:] if end else prompt[:299] + "…"
        return f"**{discord.utils.escape_markdown(prompt)}**"

    def _with_prompt(self, job: Job, line: str) -> str:
        if not job.prompt or job.task == "chat":
            return line
        return f"{self._bold_prompt(job.prompt)}\n{line}"

    def view(self, job: Job, running: bool = False, extra: Sequence[tuple[str, str | None, str]] | None = None
             ) -> discord.ui.View:
        """A job's buttons: Cancel while it runs; once done, those its command gives its task (Delete when it
        gives none), then `extra` ones."""
        actions = ("cancel",) if running else self.bot.result_actions.get(job.task) or ("delete",)
        return job_view(job, actions, extra)

    def running_view(self, job: Job) -> discord.ui.View:
        """A running job's buttons (Cancel), built once per job: every progress and position render shows the same
        ones, and building a View costs more than the rest of a render."""
        view = self._running_views.get(job.id)
        if view is None:
            view = self._running_views[job.id] = self.view(job, running=True)
        return view

    def footer(self, job: Job) -> str:
        """The line under everything natty makes: the job, the model, the seed and time when known, and the
        AI label. Results, collab results and story scenes all end with it."""
        result = job.result or {}
        meta = result.get("meta", {})
        bits = [f"`{job.id}`", job.model]
        if meta.get("seed") is not None:
            bits.append(t("result.seed", job.locale, seed=meta["seed"]))
        if result.get("duration"):
            bits.append(f"{result['duration']:.1f} s")
        bits.append(t("result.ai_label", job.locale))
        return "-# " + " · ".join(bits)

    def result_files(self, job: Job, limit: int) -> tuple[list[discord.File], list[str]]:
        """The job's stored files, stamped with provenance and fitted to the size limit, plus notes."""
        files: list[discord.File] = []
        notes: list[str] = []
        meta = (job.result or {}).get("meta", {})
        prov = Provenance.for_prompt(job.prompt, model=job.model, backend=meta.get("backend", "?"), task=job.task,
                                     seed=meta.get("seed"), job_id=job.id)
        for item in (job.result or {}).get("files", []):
            data = self.bot.storage.results.get(ref_of(item))
            if (job.result or {}).get("kind") == "audio" and not item.get("extra"):
                try:
                    data, ext, _ = uploads.to_discord_audio(data)
                    item = {**item, "filename": Path(item["filename"]).with_suffix(f".{ext}").name}
                except ValueError:
                    log.warning("job %s: audio result is not in a format Discord plays; sent as is", job.id)
            with contextlib.suppress(Exception):  # provenance is best effort on formats that cannot carry it
                data = stamp(data, item["filename"], prov)
            try:
                fitted = uploads.fit_file(data, item["filename"], limit)
            except uploads.TooLarge as exc:
                notes.append(t("result.too_large", job.locale, reason=exc.message(job.locale), id=job.id))
                continue
            if fitted.note:
                notes.append(fitted.localized_note(job.locale) or fitted.note)
            files.append(fitted.to_file())
        return files, notes

    def render_result(self, job: Job, limit: int) -> tuple[list[Render], discord.File | None]:
        """The final messages for a job: the first replaces the progress message, the rest follow it."""
        if job.state is not JobState.DONE:
            icon = "🚫" if job.state is JobState.CANCELLED else "⚠️"
            text = f"{icon} {job.error or t('result.unfinished', job.locale)}\n-# `{job.id}` · {job.model}"
            return [Render(self._with_prompt(job, text), final=True)], None
        if job.task in self.result_renderers:
            return self.result_renderers[job.task](job), None
        result = job.result or {}
        kind, meta = result.get("kind"), result.get("meta", {})
        if kind == "text":
            body = result.get("text") or t("result.no_text", job.locale)
            if meta.get("continues") and job.prompt:  # a continuation reads after its prompt
                body = self._bold_prompt(job.prompt, end=True) + body
            plan = delivery.plan_text_messages(body, locale=job.locale)
            chunks = list(plan.chunks) or [t("result.no_text", job.locale)]
            said = meta.get("note")  # what made it, e.g. "natty's own offline model continued..."
            footer = "\n" + (f"-# {discord.utils.escape_markdown(said)}\n" if said else "") + self.footer(job)
            if len(chunks[-1]) + len(footer) <= delivery.MESSAGE_LIMIT:
                chunks[-1] += footer
            else:
                chunks.append(footer.strip())
            attachment = None
            if plan.attachment:
                attachment = discord.File(io.BytesIO(plan.attachment[1]), plan.attachment[0])
            renders = [Render(c, final=True) for c in chunks]
            renders[-1].view = self.view(job)
            return renders, attachment
        if kind == "labels":
            lines = [f"`{score:6.1%}` {label}" for label, score in result.get("labels", [])[:10]]
            text = "\n".join(lines) or t("result.no_labels", job.locale)
            return [Render(self._with_prompt(job, f"{text}\n{self.footer(job)}"), final=True)], None
        files, notes = self.result_files(job, limit)
        said = meta.get("note")  # what the model understood, e.g. natty-scenes' "drew: ..."
        lines = [discord.utils.escape_markdown(said)] if said else []
        text = "\n".join([*lines, *(f"-# {n}" for n in notes), self.footer(job)])
        return [Render(self._with_prompt(job, text), files=files, view=self.view(job) if files else None,
                       final=True)], None

    # --- sending --------------------------------------------------------------------------------------

    def _webhook(self, job: Job) -> discord.Webhook:
        # callers check job.token_valid() first: a job with a live token has its application id too
        assert job.application_id is not None and job.interaction_token is not None
        return discord.Webhook.partial(job.application_id, job.interaction_token, client=self.bot)

    async def edit_job_message(self, job: Job, render: Render) -> None:
        """Edit the job's message in place: through the interaction while its token lives, else the channel."""
        kwargs: dict[str, Any] = dict(content=render.content, attachments=render.files,
                                      view=render.view)
        if job.token_valid(self.bot.settings.token_margin) and job.message_id:
            await self._webhook(job).edit_message(job.message_id, **kwargs)
            return
        if job.message_id and job.channel_id and not job.ephemeral:
            channel = self.bot.get_partial_messageable(job.channel_id)
            with contextlib.suppress(discord.NotFound, discord.Forbidden):
                await channel.get_partial_message(job.message_id).edit(**kwargs)

    async def deliver(self, job: Job) -> None:
        """Send a finished job's result (or its failure) where its requester will see it, then record that it
        was delivered. A delivery that failed for a reason that may pass (the connection, a server error) is
        left unrecorded, and the next start tries it again; one Discord refused for good is recorded as failed
        with a log line, and its result stays available with /show."""
        limit = uploads.upload_limit(job.filesize_limit)
        # re-encoding to fit can take seconds of CPU: keep it off the event loop
        renders, attachment = await asyncio.to_thread(self.render_result, job, limit)
        # the interaction while its token lives (and the channel if that fails), else the channel alone
        routes = ["interaction", "channel"] if job.token_valid(self.bot.settings.token_margin) and job.message_id \
            else ["channel"]
        sent: list[discord.Message] = []
        settled: str | None = None
        for i, route in enumerate(routes):
            if i:
                _rewind(renders, attachment)  # the failed upload read the files to their end
            try:
                if route == "interaction":
                    sent = await self._deliver_interaction(job, renders, attachment)
                else:
                    sent = await self._deliver_channel(job, renders, attachment)
                settled = route
                break
            except Undeliverable as exc:
                settled = self._undeliverable(job, exc)
                break
            except SEND_ERRORS as exc:
                last = i == len(routes) - 1
                log.warning("job %s: delivery through %s failed%s (%s); %s", job.id,
                            "the interaction" if route == "interaction" else "the channel", " too" * (i > 0),
                            exc or type(exc).__name__, "giving up" if last else "trying the channel")
                if last and _permanent(exc):
                    settled = f"failed: {exc}"
        if settled is None:
            log.warning("job %s: not delivered (%s); it is tried again at the next start", job.id, job.state)
            return
        await self._settle(job, settled)
        log.info("job %s delivered (%s) in %d message(s)", job.id, job.state, len(sent))

    def _undeliverable(self, job: Job, exc: Undeliverable) -> str:
        log.warning("job %s: its result cannot be posted in channel %s: %s; it stays available with /show",
                    job.id, job.channel_id, exc)
        return f"failed: {exc}"

    async def _sent(self, job: Job, route: str, part: int, message: discord.Message) -> None:
        """One message of a delivery is in Discord: link it to the job (/show, replies) and keep it as this
        delivery's part, so that a second try after a crash edits it instead of posting it again."""
        try:
            await self.bot.storage.link_message(message.id, job.id, message.channel.id)
            await self.bot.storage.record_part(job.id, route, part, message.id, message.channel.id)
        except Exception:  # the message is out; at worst a restart posts this part again
            log.exception("job %s: could not record message %s of its delivery", job.id, message.id)

    async def _earlier_parts(self, job: Job, route: str) -> dict[int, tuple[int, int | None]]:
        """What an earlier try of this delivery (before a crash) posted already."""
        try:
            return await self.bot.storage.delivered_parts(job.id, route)
        except Exception:
            log.exception("job %s: could not read its earlier delivery", job.id)
            return {}

    def _channel_permissions(self, channel_id: int) -> tuple[discord.Permissions, bool] | None:
        """The bot's permissions in a server channel it knows, and whether that channel is a thread; None for
        DMs and channels not in the cache (Discord then decides)."""
        channel = self.bot.get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        if channel is None or guild is None or guild.me is None or not hasattr(channel, "permissions_for"):
            return None
        return channel.permissions_for(guild.me), isinstance(channel, discord.Thread)

    def _without_files(self, job: Job, renders: list[Render], attachment: discord.File | None,
                       ) -> tuple[list[Render], None]:
        """The messages without their files, and a note where the files were (Attach Files is missing)."""
        had = [i for i, r in enumerate(renders) if r.files] or ([len(renders) - 1] if attachment else [])
        if not had:
            return renders, None
        note = "\n-# " + t("result.no_attach_permission", job.locale, id=job.id)
        out = [Render(r.content, view=r.view, final=r.final) for r in renders]
        at = out[had[0]]
        if len(at.content) + len(note) <= delivery.MESSAGE_LIMIT:
            at.content += note
        else:
            out.insert(had[0] + 1, Render(note.strip(), final=at.final))
        return out, None

    async def _deliver_interaction(self, job: Job, renders: list[Render],
                                   attachment: discord.File | None) -> list[discord.Message]:
        webhook = self._webhook(job)
        assert job.message_id is not None  # the caller checked (via_interaction)
        earlier = await self._earlier_parts(job, "interaction")
        first, rest = renders[0], renders[1:]
        files = first.files + ([attachment] if attachment and not rest else [])
        # @original: an edit, the same whether or not a try before a crash made it already
        message = await webhook.edit_message(job.message_id, content=first.content, attachments=files,
                                             view=first.view)
        await self._sent(job, "interaction", 0, message)
        sent: list[discord.Message] = [message]
        for i, render in enumerate(rest):
            part = i + 1
            extra = [attachment] if attachment and i == len(rest) - 1 else []
            out_id = earlier[part][0] if part in earlier else None
            if out_id == SENDING:  # a try before a crash was sending it: look whether Discord took it
                found = await self._find_followup(job, message, render.content)  # posted after the part before
                out_id = found.id if found else None
            if out_id:  # this followup is out already: make it this render again
                message = await webhook.edit_message(out_id, content=render.content,
                                                     attachments=render.files + extra, view=render.view)
            else:
                kwargs: dict[str, Any] = dict(content=render.content, files=render.files + extra, wait=True,
                                              ephemeral=job.ephemeral)
                if render.view is not None:
                    kwargs["view"] = render.view
                await self._sending(job, part)
                message = await webhook.send(**kwargs)
            await self._sent(job, "interaction", part, message)
            sent.append(message)
        return sent

    async def _sending(self, job: Job, part: int) -> None:
        """Write down that a followup is about to be posted. Followups take no nonce, so a crash between Discord
        taking one and `_sent` recording it would otherwise post it twice: the retry sees this mark and looks for
        the message first (`_find_followup`)."""
        try:
            await self.bot.storage.record_part(job.id, "interaction", part, SENDING, job.channel_id)
        except Exception:
            log.exception("job %s: could not mark followup %d as being sent", job.id, part)

    async def _find_followup(self, job: Job, after: discord.Message, content: str) -> discord.Message | None:
        """The followup with this content that a try before a crash posted after `after`, read from the
        channel's history (the bot's own messages only). An ephemeral one cannot be read back, nor one in a
        channel the bot may not read: that followup is posted again, with a log line that it may show twice."""
        seen = self._channel_permissions(job.channel_id) if job.channel_id else None
        if seen and not (seen[0].view_channel and seen[0].read_message_history):
            why = "the bot may not read its channel's history"  # Discord would answer an empty one
        elif not job.ephemeral and job.channel_id:
            me = self.bot.user.id if self.bot.user else None
            channel = self.bot.get_partial_messageable(job.channel_id)
            try:
                async for message in channel.history(after=after, limit=50):
                    if message.author.id == me and message.content.strip() == content.strip():
                        return message
                return None
            except SEND_ERRORS as exc:
                why = f"its channel's history cannot be read ({exc})"
        else:
            why = "ephemeral messages cannot be read back"
        log.warning("job %s: a try before a crash may have posted one of its followups already, and %s; "
                    "posting it again, so it may show twice", job.id, why)
        return None

    async def _deliver_channel(self, job: Job, renders: list[Render],
                               attachment: discord.File | None) -> list[discord.Message]:
        """Past the token's life: post into the channel (a DM for private jobs), mentioning only the requester.

        The bot's own permissions there are checked first (Discord would answer 403 50013): without Send
        Messages it raises Undeliverable; without Attach Files the messages go without their files, with a
        note. Each message is recorded as it is posted, and a second try after a crash edits those instead of
        posting them again. A crash after Discord took a message and before its record was written is covered
        by the message's nonce (job id and part, with enforce_nonce): Discord returns the message it took
        instead of posting it twice, for a few minutes, which is longer than a worker's lease. @original is
        edited in place and never doubles; the interaction's followups, which take no nonce, are marked before
        they are sent and looked for in the channel on a retry (`_find_followup`)."""
        in_dm = job.ephemeral or not job.channel_id
        channel_id = job.channel_id or 0  # 0 only in_dm
        if in_dm:
            user = self.bot.get_user(job.user_id) or await self.bot.fetch_user(job.user_id)
            target: discord.abc.Messageable = await user.create_dm()
        else:
            target = self.bot.get_partial_messageable(channel_id)
        edits_placeholder = bool(job.channel_message and job.message_id and job.channel_id)
        if not in_dm and (seen := self._channel_permissions(channel_id)):
            perms, thread = seen
            can_send = perms.send_messages_in_threads if thread else perms.send_messages
            if not perms.view_channel or (not can_send and not (edits_placeholder and len(renders) == 1
                                                                and not attachment)):
                raise Undeliverable("the bot lacks " + ("View Channel" if not perms.view_channel
                                                        else "Send Messages" + " in Threads" * thread))
            if not perms.attach_files and (attachment or any(r.files for r in renders)):
                log.warning("job %s: no Attach Files permission in channel %s; posting the result's text only",
                            job.id, job.channel_id)
                renders, attachment = self._without_files(job, renders, attachment)
        earlier = await self._earlier_parts(job, "channel")
        part = 0
        sent: list[discord.Message] = []

        async def post(**kwargs: Any) -> None:
            nonlocal part
            if part in earlier:  # posted by a try before a crash: edit it into this render instead
                message_id, part_channel = earlier[part]
                old = self.bot.get_partial_messageable(part_channel or channel_id).get_partial_message(message_id)
                files = kwargs.pop("files", None) or ([kwargs.pop("file")] if "file" in kwargs else [])
                message = await old.edit(attachments=files, **kwargs)
            else:  # the nonce makes a retry after a crash return the message Discord took already
                message = await target.send(nonce=f"{job.id}-{part}", **kwargs)
            await self._sent(job, "channel", part, message)
            sent.append(message)
            part += 1

        if edits_placeholder:
            # a reply in a conversation: its placeholder becomes the answer, no ping needed
            first = renders[0]
            assert job.message_id is not None  # edits_placeholder says so
            placeholder = self.bot.get_partial_messageable(channel_id).get_partial_message(job.message_id)
            warnings = "".join(f"\n-# {w}" for w in job.warnings)
            content = first.content if len(first.content) + len(warnings) > delivery.MESSAGE_LIMIT \
                else first.content + warnings
            message = await placeholder.edit(content=content, attachments=first.files, view=first.view)
            await self._sent(job, "channel", part, message)
            sent.append(message)
            part += 1
            renders = renders[1:]
            if not renders and attachment:
                await post(file=attachment)
        if renders and not job.ephemeral and not job.channel_message:
            # The mention goes in front of the first message; a chunk already near the limit is split again
            # (one splitter for all text) instead of losing its end.
            mention = f"<@{job.user_id}> "
            first, *others = renders
            parts = delivery.split_text(first.content, delivery.MESSAGE_LIMIT - len(mention)) or [""]
            if len(parts) > 1:
                renders = [Render(parts[0], final=first.final), *(Render(p, final=first.final) for p in parts[1:-1]),
                           Render(parts[-1], files=first.files, view=first.view, final=first.final), *others]
        for i, render in enumerate(renders):
            content = render.content
            mentions = delivery.NO_MENTIONS
            if i == 0 and not job.ephemeral and not job.channel_message:
                content = f"<@{job.user_id}> {content}"
                mentions = delivery.requester_only(job.user_id)
            extra = [attachment] if attachment and i == len(renders) - 1 else []
            kwargs: dict[str, Any] = dict(content=content, files=render.files + extra, allowed_mentions=mentions)
            if render.view is not None:
                kwargs["view"] = render.view
            await post(**kwargs)
        return sent
