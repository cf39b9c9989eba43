"""/video: clips take minutes, so the result may outlive the interaction and arrive in the channel."""

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


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Video(bot))
