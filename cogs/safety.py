"""Safety checks wired into the bot: prompts before jobs are queued, images before they are posted.

The rules live in `bot.safety`; this cog reads the server's settings, runs the output classifier through the
backends, and reports what it blocked in the log and in the server's audit channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import discord
from discord.ext import commands

from bot import safety
from bot.i18n import pick_locale
from bot.jobs import Job
from cogs.settings import TASK_COMMANDS, command_of
from models.base import LabelsResult, Request, RunContext
from models.catalog import ModelEntry

log = logging.getLogger("natty.safety")

CLASSIFIER_TIMEOUT = 60.0  # seconds per image at most, whatever the entry allows


def age_restricted(channel: Any) -> bool:
    """Whether a channel (or a thread's parent) is age-restricted; DMs and unknown channels are not."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


class Safety(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        self._notices: set[asyncio.Task[None]] = set()
        bot.job_checks.append(self.check_job)  # type: ignore[attr-defined]
        bot.presenter.output_checks.append(self.check_output)  # type: ignore[attr-defined]

    async def cog_unload(self) -> None:
        if self.check_job in self.bot.job_checks:  # type: ignore[attr-defined]
            self.bot.job_checks.remove(self.check_job)  # type: ignore[attr-defined]
        if self.check_output in self.bot.presenter.output_checks:  # type: ignore[attr-defined]
            self.bot.presenter.output_checks.remove(self.check_output)  # type: ignore[attr-defined]

    async def check_job(self, interaction: discord.Interaction, job: Job, entry: ModelEntry) -> str | None:
        """Refuse adult prompts and adult models where the server does not allow them."""
        adult_ok = age_restricted(interaction.channel)
        job.params["age_restricted"] = adult_ok  # the output check needs it, after restarts too
        gs = await self.bot.guild_settings(interaction.guild_id)  # type: ignore[attr-defined]
        policy = safety.policy_of(gs)
        block = safety.check_model(entry.nsfw, age_restricted=adult_ok, policy=policy)
        if block is None and job.task in safety.PROMPT_TASKS:
            block = safety.check_prompt(job.prompt, age_restricted=adult_ok, policy=policy,
                                        server_terms=gs.get("blocklist") or [])
        if block is None:
            return None
        self.report(gs, job, command_of(interaction, job), block)
        return block.message(entry.name, job.locale)

    async def check_output(self, job: Job) -> str | None:
        """Classify a finished job's images; withhold them when one scores as adult where that is not allowed."""
        if job.task not in safety.IMAGE_OUTPUT_TASKS:
            return None
        gs = await self.bot.guild_settings(job.guild_id)  # type: ignore[attr-defined]
        policy = safety.policy_of(gs)
        adult_ok = job.params.get("age_restricted")
        if adult_ok is None:  # a job queued before this check existed
            adult_ok = age_restricted(self.bot.get_channel(job.channel_id)) if job.channel_id else False
        if not safety.output_needs_check(job.task, age_restricted=bool(adult_ok), policy=policy):
            return None
        entry = self.classifier(gs)
        if entry is None:
            return None
        limit = safety.threshold(gs)
        for item in (job.result or {}).get("files", []):
            try:
                data = await asyncio.to_thread(Path(item["path"]).read_bytes)
                ctx = RunContext(deadline=time.monotonic() + min(entry.timeout, CLASSIFIER_TIMEOUT))
                result = await self.bot.backends.run(  # type: ignore[attr-defined]
                    entry, Request(task="image-classification", image=data), ctx)
                if not isinstance(result, LabelsResult):
                    raise TypeError(f"{entry.name} returned {type(result).__name__}, not labels")
            except Exception as exc:  # fail closed: an unchecked image is not posted where the check applies
                log.warning("job %s: safety classifier %s failed: %s", job.id, entry.name, exc)
                block = safety.Block("classifier-error", type(exc).__name__)
                self.report(gs, job, TASK_COMMANDS.get(job.task, job.task), block)
                return block.message(entry.name, job.locale)
            score = safety.nsfw_score(result.labels)
            if score > limit:
                block = safety.Block("classifier-never" if policy == "never" else "classifier", f"{score:.2f}")
                self.report(gs, job, TASK_COMMANDS.get(job.task, job.task), block)
                return block.message(entry.name, job.locale)
        return None

    def classifier(self, gs: dict[str, Any]) -> ModelEntry | None:
        """The server's output classifier when it is in the catalog and can run now."""
        name = safety.classifier_name(gs)
        entry = self.bot.catalog.get(name) if name else None  # type: ignore[attr-defined]
        if entry is None or entry.task != "image-classification":
            return None
        ok, _ = self.bot.availability.get(entry.name, (True, ""))  # type: ignore[attr-defined]
        return entry if ok else None

    def report(self, gs: dict[str, Any], job: Job, command: str, block: safety.Block) -> None:
        """A log line, and a short notice in the server's audit channel when it has one."""
        log.warning("blocked /%s (job %s) from user %s in guild %s channel %s: %s [%s]", command, job.id,
                    job.user_id, job.guild_id, job.channel_id, block.label, block.term)
        channel_id = gs.get("audit_channel")
        if not channel_id:
            return
        text = safety.audit_notice(user_id=job.user_id, command=command, rule=block.rule, channel_id=job.channel_id,
                                   prompt=job.prompt, job_id=job.id, locale=pick_locale(None, gs.get("language")))
        task = asyncio.create_task(self._send_notice(int(channel_id), job.guild_id, text))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    async def _send_notice(self, channel_id: int, guild_id: int | None, text: str) -> None:
        channel = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
        try:
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as exc:
            log.warning("could not post to audit channel %s: %s", channel_id, exc)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Safety(bot))
