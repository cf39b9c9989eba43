"""What several cogs share: autocomplete choices within Discord's rules, the two languages of a reply, and the
seed a new image job starts from."""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, cast

import discord
from discord import app_commands

from bot.policy import MAKES

if TYPE_CHECKING:
    from bot.client import NattyBot

CHOICE_LIMIT, CHOICES_MAX = 100, 25  # Discord: a choice's name and value are 1-100 characters; 25 choices


def makes(tasks: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """A command's `extras` saying which tasks it makes and the buttons each task's result gets (actions of
    bot.ui.buttons; Delete alone when empty): `@app_commands.command(..., extras=makes({"text-to-video":
    ("reroll", "delete")}))`. The bot reads them at start-up (bot.policy `tasks_of`): turning this command off
    then stops those tasks' buttons and parts too."""
    return {MAKES: dict(tasks)}


def choices(options: Iterable[tuple[str, str]]) -> list[app_commands.Choice[str]]:
    """Autocomplete choices from (shown name, value) pairs, as Discord takes them: names cut to 100 characters,
    and a value that does not fit left out (it cannot be offered; typed in full it still works), at most 25.
    One bad choice makes Discord refuse the whole list, which leaves the member with an empty menu."""
    out: list[app_commands.Choice[str]] = []
    for name, value in options:
        if 1 <= len(value) <= CHOICE_LIMIT:
            out.append(app_commands.Choice(name=(name or value)[:CHOICE_LIMIT], value=value))
            if len(out) == CHOICES_MAX:
                break
    return out


async def lang(interaction: discord.Interaction[NattyBot]) -> str:
    """The language to answer this member in (bot.policy decides: theirs, the server's setting, its locale)."""
    return await interaction.client.locale_for(interaction)


async def server_lang(interaction: discord.Interaction[NattyBot]) -> str:
    """The language of messages the whole server sees: game rounds, collab panels (bot.policy decides)."""
    return await interaction.client.guild_locale(interaction.guild_id, interaction.guild_locale)


def natty(interaction: discord.Interaction) -> discord.Interaction[NattyBot]:
    """The interaction a UI hook (a button, a modal) gets, as the NattyBot interaction it is: discord.py types
    those hooks for any client, and every interaction this bot gets comes to NattyBot."""
    return cast("discord.Interaction[NattyBot]", interaction)


Autocomplete = Callable[["discord.Interaction[NattyBot]", str], Coroutine[Any, Any, list[app_commands.Choice[str]]]]


def model_autocomplete(task: str) -> Autocomplete:
    """An autocomplete callback listing this server's models for `task` that match what was typed."""

    async def complete(interaction: discord.Interaction[NattyBot], current: str) -> list[app_commands.Choice[str]]:
        bot = interaction.client
        gs = await bot.guild_settings(interaction.guild_id)
        found = []
        for entry in bot.policy.models_for(task, gs):
            if current.lower() in entry.name.lower():
                ok, _ = bot.policy.can_run(entry.name)
                found.append((entry.name if ok else f"{entry.name} (unavailable)", entry.name))
        return choices(found)

    return complete


def new_seed() -> int:
    return random.randint(0, 2**31 - 1)
