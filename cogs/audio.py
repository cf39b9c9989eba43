"""/speak and /music: playable audio attachments with their duration."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import choices, makes, model_autocomplete, new_seed

if TYPE_CHECKING:
    from bot.client import NattyBot


async def voice_autocomplete(interaction: discord.Interaction[NattyBot],
                             current: str) -> list[app_commands.Choice[str]]:
    bot = interaction.client
    voices: list[str] = []
    for entry in bot.catalog.for_task("text-to-speech"):
        voices.extend(v for v in entry.voices if v not in voices)
    return choices((v, v) for v in voices if current.lower() in v.lower())


class Audio(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot

    @app_commands.command(name="speak", description="Read text aloud",
                          extras=makes({"text-to-speech": ("reroll", "delete")}))
    @app_commands.describe(text="What to say", voice="Which voice (depends on the model)", model="Which speech model")
    @app_commands.autocomplete(model=model_autocomplete("text-to-speech"), voice=voice_autocomplete)
    async def speak(self, interaction: discord.Interaction[NattyBot], text: str, voice: str | None = None,
                    model: str | None = None) -> None:
        params: dict = {"seed": new_seed()}
        if voice:
            params["model_params"] = {"voice": voice}
        await self.bot.submit(interaction, "text-to-speech", text, model=model, params=params)

    @app_commands.command(name="music", description="Make music or sound from a description",
                          extras=makes({"text-to-audio": ("reroll", "delete")}))
    @app_commands.describe(prompt="What it should sound like", seconds="Length in seconds (1-30)",
                           model="Which audio model")
    @app_commands.autocomplete(model=model_autocomplete("text-to-audio"))
    async def music(self, interaction: discord.Interaction[NattyBot], prompt: str,
                    seconds: app_commands.Range[float, 1.0, 30.0] = 5.0, model: str | None = None) -> None:
        params = {"seed": new_seed(), "model_params": {"seconds": seconds, "duration": seconds}}
        await self.bot.submit(interaction, "text-to-audio", prompt, model=model, params=params)


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Audio(bot))
