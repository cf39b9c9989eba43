"""/help: the commands, and the models this server can use for each task."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import delivery
from bot.client import TASK_NAMES
from models.base import TASKS


class Help(commands.Cog):
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="What natty can do here, and with which models")
    async def help(self, interaction: discord.Interaction) -> None:
        bot = self.bot
        gs = await bot.guild_settings(interaction.guild_id)  # type: ignore[attr-defined]
        lines = []
        for cmd in sorted(bot.tree.get_commands(), key=lambda c: c.name):
            if isinstance(cmd, app_commands.Command | app_commands.Group):
                lines.append(f"`/{cmd.name}` {cmd.description}")
        models = []
        for task in TASKS:
            entries = bot.models_for(task, gs)  # type: ignore[attr-defined]
            ready = [e.name for e in entries if bot.availability.get(e.name, (True, ""))[0]]  # type: ignore[attr-defined]
            if ready:
                models.append(f"**{TASK_NAMES[task]}**: {', '.join(ready)}")
            else:
                models.append(f"**{TASK_NAMES[task]}**: no model can run here yet")
        embed = discord.Embed(title="natty", description="\n".join(lines),
                              colour=discord.Colour.blurple())
        embed.add_field(name="Models on this server", value="\n".join(models)[:1024], inline=False)
        embed.set_footer(text="Everything natty makes is labelled AI-generated. Jobs: /jobs · a past result: /show")
        await interaction.response.send_message(embed=discord.Embed.from_dict(delivery.clamp_embed(embed.to_dict())),
                                                ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Help(bot))
