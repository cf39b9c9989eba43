"""What several cogs share: model autocomplete, and the seed a new image job starts from."""

from __future__ import annotations

import random

import discord
from discord import app_commands


def model_autocomplete(task: str):
    """An autocomplete callback listing this server's models for `task` that match what was typed."""

    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        bot = interaction.client
        gs = await bot.guild_settings(interaction.guild_id)  # type: ignore[attr-defined]
        choices = []
        for entry in bot.policy.models_for(task, gs):  # type: ignore[attr-defined]
            if current.lower() in entry.name.lower():
                ok, _ = bot.policy.can_run(entry.name)  # type: ignore[attr-defined]
                label = entry.name if ok else f"{entry.name} (unavailable)"
                choices.append(app_commands.Choice(name=label[:100], value=entry.name))
        return choices[:25]

    return complete


def new_seed() -> int:
    return random.randint(0, 2**31 - 1)
