"""/imagine, and the Re-roll, Vary and Remix buttons on its images."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t
from bot.jobs.job import Job
from bot.jobs.results import ref_of
from cogs.common import makes, model_autocomplete, new_seed

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.imagine")

ASPECTS = {"square": (1024, 1024), "portrait": (832, 1216), "landscape": (1216, 832), "wide": (1344, 768)}


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit the prompt of an earlier image job and run it again."""

    def __init__(self, cog: Imagine, job: Job, locale: str) -> None:
        super().__init__(timeout=600, title=t("remix.title", locale))
        self.cog, self.job, self.locale = cog, job, locale
        self.prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
            label=t("remix.prompt", locale), style=discord.TextStyle.paragraph, default=job.prompt[:4000],
            max_length=4000)
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction, /) -> None:
        params = {k: v for k, v in self.job.params.items() if k in ("negative", "aspect", "count", "model_params")}
        params["seed"] = new_seed()
        await self.cog.bot.submit(interaction, self.job.task, str(self.prompt.value), model=self.job.model,
                                  params=params, parent_id=self.job.id)

    async def on_error(  # type: ignore[override]  # discord.py's Modal.on_error drops BaseView's item argument
            self, interaction: discord.Interaction, error: Exception, /) -> None:
        log.exception("remix of job %s failed", self.job.id, exc_info=error)
        await self.cog.bot.send_error(interaction, t("remix.failed", self.locale))


class Imagine(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        bot.actions["reroll"] = self.on_reroll
        bot.actions["vary"] = self.on_vary
        bot.actions["remix"] = self.on_remix

    @app_commands.command(name="imagine", description="Make images from a prompt", extras=makes({
        "text-to-image": ("reroll", "vary", "remix", "delete"), "image-to-image": ("reroll", "remix", "delete")}))
    @app_commands.describe(prompt="What to draw", negative="What to keep out of it", model="Which image model",
                           seed="Same seed + same prompt = same image", aspect="Shape of the image",
                           count="How many images (1-4)")
    @app_commands.autocomplete(model=model_autocomplete("text-to-image"))
    async def imagine(self, interaction: discord.Interaction[NattyBot], prompt: str, negative: str | None = None,
                      model: str | None = None, seed: app_commands.Range[int, 0, 2**31 - 1] | None = None,
                      aspect: Literal["square", "portrait", "landscape", "wide"] = "square",
                      count: app_commands.Range[int, 1, 4] = 1) -> None:
        width, height = ASPECTS[aspect]
        params: dict[str, Any] = {"seed": new_seed() if seed is None else seed, "aspect": aspect, "count": count,
                  "model_params": {"width": width, "height": height}}
        if negative:
            params["negative"] = negative
        await self.bot.submit(interaction, "text-to-image", prompt, model=model, params=params)

    async def on_reroll(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        """The same request with a new seed, as a new job and a new message."""
        params = {k: v for k, v in job.params.items() if k not in ("filesize_limit",) and not k.endswith("_path")}
        params["seed"] = new_seed()
        inputs = self._inputs_of(job)
        await self.bot.submit(interaction, job.task, job.prompt, model=job.model, params=params,
                              parent_id=job.id, inputs=inputs, check_prompt=bool(job.prompt))

    async def on_vary(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        """Image-to-image from the first image of this result, with the same prompt."""
        files = (job.result or {}).get("files", [])
        if not files:
            loc = await self.bot.locale_for(interaction)
            await interaction.response.send_message(t("imagine.nothing_to_vary", loc), ephemeral=True)
            return
        item = files[int(arg or 0) if arg and int(arg) < len(files) else 0]
        # read off the loop (a disk or an object store), within the 3 seconds submit has to acknowledge
        data = await asyncio.to_thread(self.bot.storage.results.get, ref_of(item))
        await self.bot.submit(interaction, "image-to-image", job.prompt, params={"seed": new_seed()},
                              parent_id=job.id, inputs={"image": (item["filename"], data)})

    async def on_remix(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        await interaction.response.send_modal(RemixModal(self, job, await self.bot.locale_for(interaction)))

    def _inputs_of(self, job: Job) -> dict[str, tuple[str, bytes]]:
        inputs = {}
        for key in ("image", "audio"):
            path = job.params.get(f"{key}_path")
            if path and Path(path).is_file():
                inputs[key] = (Path(path).name, Path(path).read_bytes())
        return inputs


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Imagine(bot))
