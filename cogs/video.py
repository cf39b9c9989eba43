"""/video and /animate: clips take minutes, so the result may outlive the interaction and arrive in the channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import makes, model_autocomplete, new_seed

if TYPE_CHECKING:
    from bot.client import NattyBot


class Video(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot

    @app_commands.command(name="video", description="Make a short video clip from a prompt",
                          extras=makes({"text-to-video": ("reroll", "delete")}))
    @app_commands.describe(prompt="What happens in the clip", model="Which video model")
    @app_commands.autocomplete(model=model_autocomplete("text-to-video"))
    async def video(self, interaction: discord.Interaction[NattyBot], prompt: str, model: str | None = None) -> None:
        await self.bot.submit(interaction, "text-to-video", prompt, model=model, params={"seed": new_seed()})


    @app_commands.command(name="animate", description="Make a short clip that starts from your picture",
                          extras=makes({"image-to-video": ("reroll", "delete")}))
    @app_commands.describe(image="The picture the clip starts from", prompt="What happens in the clip",
                           model="Which video model")
    @app_commands.autocomplete(model=model_autocomplete("image-to-video"))
    async def animate(self, interaction: discord.Interaction[NattyBot], image: discord.Attachment, prompt: str,
                      model: str | None = None) -> None:
        bot = self.bot
        await bot.ack(interaction)  # a download can outlast Discord's 3 s; submit then finds it acknowledged
        data, problem = await bot.read_attachment(interaction, image, ("image",))
        if data is None:
            await bot.fail_after_ack(interaction, problem or "", "image-to-video")
            return
        await bot.submit(interaction, "image-to-video", prompt, model=model, params={"seed": new_seed()},
                         inputs={"image": (image.filename, data)})

async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Video(bot))
