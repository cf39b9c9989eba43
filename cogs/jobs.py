"""/jobs and /show, and the Cancel and Delete buttons every job message carries."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import safety
from bot.i18n import t
from bot.jobs.job import Job, JobState
from bot.policy import age_restricted
from bot.ui import delivery
from bot.ui.buttons import can_manage

if TYPE_CHECKING:
    from bot.client import NattyBot

STATE_ICONS = {JobState.QUEUED: "⏳", JobState.RUNNING: "⚙️", JobState.DONE: "✅", JobState.FAILED: "⚠️",
               JobState.CANCELLED: "🚫"}


def _ago(ts: float) -> str:
    return f"<t:{int(ts)}:R>"


class Jobs(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        bot.actions["cancel"] = self.on_cancel
        bot.actions["delete"] = self.on_delete

    @app_commands.command(name="jobs", description="Your queued, running and recent jobs")
    async def jobs(self, interaction: discord.Interaction[NattyBot]) -> None:
        await interaction.response.defer(ephemeral=True)
        loc = await self.bot.locale_for(interaction)
        engine = self.bot.engine
        recent = await self.bot.storage.recent_jobs(interaction.user.id, limit=10)
        if not recent:
            await interaction.edit_original_response(content=t("jobs.none", loc))
            return
        lines = []
        for job in recent:
            live = engine.active.get(job.id, job)
            where = ""
            if live.state is JobState.QUEUED:
                where = await engine.wait_text(live, loc)
            prompt = job.prompt if len(job.prompt) <= 60 else job.prompt[:59] + "…"
            lines.append(f"{STATE_ICONS[live.state]} `{job.id}` {job.task} · {job.model}{where} · "
                         f"{_ago(job.created_at)}\n   {discord.utils.escape_markdown(prompt)}")
        embed = discord.Embed(title=t("jobs.title", loc), description="\n".join(lines))
        embed.set_footer(text=t("jobs.footer", loc))
        await interaction.edit_original_response(embed=delivery.clamp_embed(embed))

    @app_commands.command(name="show", description="Bring back a past job with its buttons")
    @app_commands.describe(job="The job id, as shown under each result")
    async def show(self, interaction: discord.Interaction[NattyBot], job: str) -> None:
        record = await self.bot.storage.get_job(job.strip().lower())
        loc = await self.bot.locale_for(interaction)
        if record is None or not self._may_see(interaction, record):
            await interaction.response.send_message(t("show.not_found", loc, id=job[:20]), ephemeral=True)
            return
        if not record.state.finished:
            await interaction.response.send_message(
                t("show.unfinished", loc, id=record.id, state=t(f"state.{record.state.value}", loc)), ephemeral=True)
            return
        if refusal := await self._not_here(interaction, record, loc):
            await interaction.response.send_message(refusal, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=record.ephemeral)
        if record.state is JobState.DONE:
            # the output checks run again for this channel, as they would have had the job been made here
            seen_here = dataclasses.replace(record, params={**record.params, "age_restricted": age_restricted(
                interaction.channel)})
            for check in self.bot.presenter.output_checks:
                if withheld := await check(seen_here):
                    await self.bot.send_error(interaction, f"{withheld}\n-# `{record.id}`")
                    return
        renders, attachment = await asyncio.to_thread(
            self.bot.presenter.render_result, record, interaction.filesize_limit)
        for i, render in enumerate(renders):
            files = render.files + ([attachment] if attachment and i == len(renders) - 1 else [])
            kwargs: dict = dict(content=render.content)
            if render.view is not None:
                kwargs["view"] = render.view
            message: discord.Message
            if i == 0:  # the deferred message becomes the first part
                message = await interaction.edit_original_response(attachments=files, **kwargs)
            else:
                message = await interaction.followup.send(files=files, wait=True, ephemeral=record.ephemeral, **kwargs)
            await self.bot.storage.link_message(message.id, record.id, message.channel.id)

    async def _not_here(self, interaction: discord.Interaction[NattyBot], job: Job, loc: str) -> str | None:
        """Why this channel may not show the job's result, or None: what the job needed (an age-restricted
        channel, for one made in such a channel or by an adult model) and the prompt rules must hold here too."""
        if job.state is not JobState.DONE:
            return None  # a failure or cancellation shows no content
        gs = await self.bot.guild_settings(interaction.guild_id)
        policy = safety.policy_of(gs)
        here = age_restricted(interaction.channel)
        entry = self.bot.catalog.get(job.model)
        if job.age_restricted or (entry is not None and entry.nsfw):
            if policy == "never" or not here:
                return t("show.age_restricted", loc, id=job.id)
        if job.task in safety.PROMPT_TASKS and safety.check_prompt(
                job.prompt, age_restricted=here, policy=policy, server_terms=gs.get("blocklist") or []):
            return t("show.age_restricted", loc, id=job.id)
        return None

    def _may_see(self, interaction: discord.Interaction[NattyBot], job: Job) -> bool:
        if job.user_id == interaction.user.id:
            return True
        return not job.ephemeral and job.guild_id is not None and job.guild_id == interaction.guild_id

    async def on_cancel(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        loc = await self.bot.locale_for(interaction)
        if not can_manage(interaction, job):
            await interaction.response.send_message(t("cancel.not_allowed", loc), ephemeral=True)
            return
        if not await self.bot.engine.cancel(job.id, interaction.user.id):
            await interaction.response.send_message(t("cancel.finished", loc, id=job.id), ephemeral=True)
            return
        await interaction.response.defer()  # the job's message turns into "Cancelled." when it stops

    async def on_delete(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        if not can_manage(interaction, job):
            loc = await self.bot.locale_for(interaction)
            await interaction.response.send_message(t("delete.not_allowed", loc), ephemeral=True)
            return
        await interaction.response.defer()
        if interaction.message is not None:
            await interaction.delete_original_response() if interaction.message.flags.ephemeral else \
                await interaction.message.delete()


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Jobs(bot))



