"""/story: a language model writes scenes, each is illustrated (and read aloud), one message per scene in a thread.

Every part is a job in the fair queue. The story's progress lives in its writer job's record, so a story
interrupted by a restart picks up at the scene where it stopped.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.community.story import Script, parse_script, writer_prompt
from bot.i18n import t
from bot.jobs.job import Job, JobState
from bot.policy import Origin, Refused
from bot.ui import delivery, uploads
from bot.ui.presenter import Render
from cogs.common import new_seed

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.story")


class Story(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        bot.presenter.custom_renderers["story"] = self.on_script
        self.tasks: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        """Resume stories that a restart interrupted after their script was written."""
        if self.bot.role == "worker":  # gateways hold the sessions
            return
        for job in await self.bot.storage.jobs_in_states(JobState.DONE):
            story = job.params.get("story")
            if job.renderer == "story" and story and not story.get("complete"):
                log.info("resuming story %s at scene %d", job.id, story.get("done", 0) + 1)
                self._spawn(job)

    async def cog_unload(self) -> None:
        for task in self.tasks:
            task.cancel()

    @app_commands.command(name="story", description="A short illustrated story, scene by scene, in a thread")
    @app_commands.describe(premise="What the story is about", scenes="How many scenes (2-6)",
                           narrate="Read each scene aloud too")
    async def story(self, interaction: discord.Interaction[NattyBot], premise: str,
                    scenes: app_commands.Range[int, 2, 6] = 3, narrate: bool = False) -> None:
        loc = await self.bot.locale_for(interaction)
        params = {"messages": [{"role": "user", "content": writer_prompt(premise, scenes, loc)}], "renderer": "story",
                  "story": {"premise": premise, "scenes": scenes, "narrate": narrate, "done": 0}}
        await self.bot.submit(interaction, "chat", premise, params=params)

    async def on_script(self, job: Job) -> None:
        if job.state is not JobState.DONE:
            await self.bot.presenter.deliver(job)
            return
        self._spawn(job)

    def _spawn(self, job: Job) -> None:
        task = asyncio.create_task(self._illustrate(job), name=f"story-{job.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _status(self, job: Job, text: str, files: list[discord.File] | None = None) -> None:
        try:
            await self.bot.presenter.edit_job_message(job, Render(text, files=files or []))
        except discord.HTTPException as exc:
            log.warning("story %s: status edit failed: %s", job.id, exc)

    async def _part(self, parent: Job, task: str, prompt: str) -> Job | None:
        """Run one part of the story as a silent job through the one submission path (the channel's rules, the
        safety checks and the member's caps and quota apply to each scene) and wait for it; None when no model
        can do it, the refused record when a rule stops it."""
        bot = self.bot
        entry = bot.policy.default_model(task, bot.policy.server(parent.guild_id))
        if entry is None:
            return None
        try:
            child = await bot.submit_job(Origin.of_job(parent, "story"), task, prompt[:entry.max_prompt_chars],
                                         model=entry.name, params={"silent": True, "seed": new_seed()},
                                         parent_id=parent.id, cooldown=False)
        except Refused as exc:
            return exc.job
        return await bot.engine.wait(child.id)

    async def _illustrate(self, job: Job) -> None:
        bot = self.bot
        story = job.params["story"]
        script = parse_script((job.result or {}).get("text", ""), story["premise"], story["scenes"])
        total = len(script.scenes)
        loc = job.locale
        try:
            thread = await self._thread(job, script)
            for i in range(story.get("done", 0), total):
                scene = script.scenes[i]
                await self._status(job, t("story.illustrating", loc, title=script.title, n=i + 1, total=total,
                                          id=job.id))
                parts = [await self._part(job, "text-to-image", scene.image_prompt)]
                if story["narrate"]:
                    await self._status(job, t("story.narrating", loc, title=script.title, n=i + 1, total=total,
                                              id=job.id))
                    parts.append(await self._part(job, "text-to-speech", scene.passage))
                await self._post_scene(job, thread, i + 1, scene.passage, parts)
                story["done"] = i + 1
                await bot.storage.update_job(job, "params")
            story["complete"] = True
            await bot.storage.update_job(job, "params")
            markdown = script.markdown(story["premise"], loc).encode()
            where = t("story.in_thread", loc, thread=thread.mention) if isinstance(thread, discord.Thread) else ""
            await self._status(
                job, t("story.done", loc, title=discord.utils.escape_markdown(script.title), total=total, where=where,
                       footer=bot.presenter.footer(job)),
                files=[discord.File(io.BytesIO(markdown), "story.md")])
            log.info("story %s finished with %d scenes", job.id, total)
        except Exception:
            log.exception("story %s failed at scene %d", job.id, story.get("done", 0) + 1)
            await self._status(job, t("story.failed", loc, n=story.get("done", 0) + 1, total=total, id=job.id))

    async def _thread(self, job: Job, script: Script) -> discord.abc.Messageable:
        """The thread that holds the scenes: started from the story's message, or reopened after a restart."""
        bot = self.bot
        story = job.params["story"]
        if story.get("thread_id"):
            return bot.get_partial_messageable(story["thread_id"])
        assert job.channel_id is not None  # a story is told where /story was asked
        channel = bot.get_channel(job.channel_id)
        if channel is None:
            channel = await bot.fetch_channel(job.channel_id)
        assert isinstance(channel, discord.abc.Messageable)  # /story was asked there: members can post in it
        if not isinstance(channel, discord.TextChannel) or job.ephemeral or job.message_id is None:
            return channel  # no threads here (a DM, a thread, a private answer): post the scenes in place
        me = channel.guild.me
        if me is not None and not channel.permissions_for(me).create_public_threads:
            log.info("story %s: no Create Public Threads permission in %s; posting the scenes in the channel",
                     job.id, channel.id)
            return channel
        name = script.title[:90] or t("story.thread", job.locale)
        try:
            thread = await channel.get_partial_message(job.message_id).create_thread(name=name)
        except discord.Forbidden as exc:  # the permission changed, or an overwrite the cache had not seen
            log.info("story %s: could not start a thread (%s); posting the scenes in the channel", job.id, exc)
            return channel
        story["thread_id"] = thread.id
        await bot.storage.update_job(job, "params")
        return thread

    async def _post_scene(self, job: Job, thread: discord.abc.Messageable, number: int, passage: str,
                          parts: list[Job | None]) -> None:
        bot = self.bot
        files: list[discord.File] = []
        notes: list[str] = []
        loc = job.locale
        for part in parts:
            if part is None:
                notes.append(t("story.no_model", loc))
            elif part.state is not JobState.DONE:
                notes.append(part.error or t("story.part_failed", loc))
            else:
                made, fit_notes = await asyncio.to_thread(bot.presenter.result_files, part,
                                                          uploads.upload_limit(job.filesize_limit))
                files += made
                notes += fit_notes
        body = t("story.scene", loc, n=number, passage=passage)
        footer = "\n".join([*(f"-# {n}" for n in notes), bot.presenter.footer(job)])
        *before, last = delivery.with_footer(body, footer)
        for text in before:  # a passage too long for one message goes on in the next, each labelled
            await thread.send(content=text)
        message = await thread.send(content=last, files=files)
        await bot.storage.link_message(message.id, job.id, message.channel.id)


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Story(bot))
