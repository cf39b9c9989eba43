"""/describe and the "Describe" message menu: a caption and three prompts to /imagine from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t
from bot.jobs.job import Job
from bot.ui import delivery
from bot.ui.presenter import Render
from cogs.common import makes, model_autocomplete, new_seed

if TYPE_CHECKING:
    from bot.client import NattyBot

STYLES = ("a detailed oil painting", "a cinematic photograph, golden hour", "a soft watercolour illustration")


def suggestions(caption: str) -> list[str]:
    """Three prompts built from the caption: the same subject in three distinct styles."""
    subject = caption.strip().rstrip(".") or "the scene"
    return [f"{subject}, {style}" for style in STYLES]


class Describe(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        bot.actions["imagine"] = self.on_imagine
        bot.presenter.result_renderers["image-to-text"] = self.render
        self.menu = app_commands.ContextMenu(name="Describe", callback=self.describe_message)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="describe", description="Caption an image and suggest prompts from it",
                          extras=makes({"image-to-text": ()}))
    @app_commands.describe(image="The image", model="Which captioning model")
    @app_commands.autocomplete(model=model_autocomplete("image-to-text"))
    async def describe(self, interaction: discord.Interaction[NattyBot], image: discord.Attachment,
                       model: str | None = None) -> None:
        await self._start(interaction, image, model)

    async def describe_message(self, interaction: discord.Interaction[NattyBot], message: discord.Message) -> None:
        image = next((a for a in message.attachments if (a.content_type or "").startswith("image/")), None)
        if image is None:
            loc = await self.bot.locale_for(interaction)
            await self.bot.refuse(interaction, t("describe.no_image", loc), "image-to-text")
            return
        await self._start(interaction, image, None)

    async def _start(self, interaction: discord.Interaction[NattyBot], image: discord.Attachment,
                     model: str | None) -> None:
        bot = self.bot
        loc = await bot.locale_for(interaction)
        if not (image.content_type or "").startswith("image/"):
            await bot.refuse(interaction, t("describe.not_image", loc, filename=image.filename,
                                            type=image.content_type or t("attachment.unknown_type", loc)),
                             "image-to-text")
            return
        await bot.ack(interaction)
        data, problem = await bot.read_attachment(interaction, image, ("image",))
        if data is None:
            await bot.fail_after_ack(interaction, problem or t("describe.unreadable", loc), "image-to-text")
            return
        await bot.submit(interaction, "image-to-text", "", model=model, check_prompt=False,
                         inputs={"image": (image.filename, data)})

    def render(self, job: Job) -> list[Render]:
        """The caption, the three suggestions, and an Imagine button for each."""
        caption = ((job.result or {}).get("text") or "").strip()
        lines = [f"{t('describe.caption', job.locale)} {caption or t('describe.no_caption', job.locale)}", ""]
        lines += [f"**{i + 1}.** {idea}" for i, idea in enumerate(suggestions(caption))]
        extra = [("imagine", str(i), t("describe.imagine", job.locale, n=i + 1)) for i in range(len(STYLES))]
        footer = self.bot.presenter.footer(job)
        content = "\n".join(lines)[: delivery.MESSAGE_LIMIT - 200] + "\n" + footer
        return [Render(content, view=self.bot.presenter.view(job, extra=extra), final=True)]

    async def on_imagine(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        ideas = suggestions(((job.result or {}).get("text") or "").strip())  # the stored result is the caption
        prompt = ideas[int(arg or 0) % len(ideas)]
        await self.bot.submit(interaction, "text-to-image", prompt, params={"seed": new_seed()},
                              parent_id=job.id)


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Describe(bot))
