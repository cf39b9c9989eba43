"""/help: the commands, and the models this server can use for each task."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import command_word, t
from bot.policy import task_name
from bot.ui import delivery
from models.base import TASKS

if TYPE_CHECKING:
    from bot.client import NattyBot


class Help(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot

    @app_commands.command(name="help", description="What natty can do here, and with which models")
    async def help(self, interaction: discord.Interaction[NattyBot]) -> None:
        bot = self.bot
        gs = await bot.guild_settings(interaction.guild_id)
        loc = await bot.locale_for(interaction)
        commands_ = [(command_word(cmd.name, loc), command_word(cmd.description, loc, "descriptions"))
                     for cmd in bot.tree.get_commands() if isinstance(cmd, app_commands.Command | app_commands.Group)]
        lines = [f"`/{name}` {description}" for name, description in sorted(commands_)]
        models, offline = [], []
        for task in TASKS:
            entries = bot.policy.models_for(task, gs)
            ready = [e.name for e in entries if bot.policy.can_run(e.name)[0]]
            offline += [f"**{e.name}**: {e.description}" for e in entries
                        if e.name in ready and e.model.startswith("natty:") and e.description]
            default = bot.policy.default_model(task, gs)
            ready = [t("help.default", loc, model=f"__{name}__") if default and name == default.name else name
                     for name in ready]
            if ready:
                models.append(f"**{task_name(task, loc)}**: {', '.join(ready)}")
            else:
                models.append(t("help.no_model", loc, task=task_name(task, loc)))
        embed = discord.Embed(title="natty", description="\n".join(lines),
                              colour=discord.Colour.blurple())
        embed.add_field(name=t("help.models", loc), value="\n".join(models)[:1024], inline=False)
        if offline:  # what natty's own models can and cannot do, so nobody expects an assistant from them
            fields: list[list[str]] = [[]]
            for line in [*offline, t("help.offline_hint", loc)]:  # whole lines, in as many fields as they need
                if fields[-1] and len("\n".join([*fields[-1], line])) > 1024:
                    fields.append([])
                fields[-1].append(line[:1024])
            for i, lines in enumerate(fields):
                embed.add_field(name=t("help.offline", loc) if i == 0 else "\u200b", value="\n".join(lines),
                                inline=False)
        embed.set_footer(text=t("help.footer", loc))
        await interaction.response.send_message(embed=delivery.clamp_embed(embed),
                                                ephemeral=True)


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Help(bot))
