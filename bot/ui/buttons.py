"""Buttons on job messages: DynamicItems whose custom_id carries the action and the job id.

Because the state lives in the custom_id (`natty:ACTION:JOBID[:ARG]`) and the job in the database, a button
pressed after a restart works like one pressed a second after the result arrived.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.i18n import t
from bot.jobs.job import Job
from bot.policy import may_manage

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.buttons")

ActionHandler = Callable[[discord.Interaction["NattyBot"], Job, str | None], Awaitable[None]]

# action -> (English label, emoji, style); the order is the order on the message. Labels are the catalogs'
# "button.<action>" keys.
ACTIONS: dict[str, tuple[str, str, discord.ButtonStyle]] = {
    "cancel": ("Cancel", "✖️", discord.ButtonStyle.danger),
    "regen": ("Regenerate", "🔄", discord.ButtonStyle.secondary),
    "continue": ("Continue", "➡️", discord.ButtonStyle.secondary),
    "reroll": ("Re-roll", "🎲", discord.ButtonStyle.secondary),
    "vary": ("Vary", "🌀", discord.ButtonStyle.secondary),
    "remix": ("Remix", "✏️", discord.ButtonStyle.secondary),
    "imagine": ("Imagine", "🎨", discord.ButtonStyle.primary),
    "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
}

TEMPLATE = r"natty:(?P<action>[a-z]+):(?P<job>[a-z0-9]+)(?::(?P<arg>[0-9]+))?"


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    def __init__(self, action: str, job_id: str, arg: str | None = None, label: str | None = None,
                 locale: str | None = None) -> None:
        default_label, emoji, style = ACTIONS.get(action, (action.title(), None, discord.ButtonStyle.secondary))
        if action in ACTIONS:
            default_label = t(f"button.{action}", locale)
        custom_id = f"natty:{action}:{job_id}" + (f":{arg}" if arg is not None else "")
        super().__init__(discord.ui.Button(label=(label or default_label)[:80], emoji=emoji, style=style,
                                           custom_id=custom_id))
        self.action, self.job_id, self.arg = action, job_id, arg

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> JobButton:
        return cls(match["action"], match["job"], match["arg"])

    async def callback(self, interaction: discord.Interaction) -> None:
        # discord.py types a UI item's interaction for any client; every one this bot gets comes to NattyBot
        natty = cast("discord.Interaction[NattyBot]", interaction)
        bot = natty.client
        job = await bot.storage.get_job(self.job_id)
        if job is None:
            await interaction.response.send_message(t("button.job_gone", await bot.locale_for(interaction)),
                                                    ephemeral=True)
            return
        handler = bot.actions.get(self.action)
        if handler is None:
            await interaction.response.send_message(t("button.dead", await bot.locale_for(interaction)),
                                                    ephemeral=True)
            return
        log.info("button %s on job %s pressed by %s", self.action, job.id, interaction.user.id)
        await handler(natty, job, self.arg)


def job_view(job: Job, actions: Sequence[str], extra: Sequence[tuple[str, str | None, str]] | None = None
             ) -> discord.ui.View:
    """The buttons for a job's message: `actions` (Cancel while it runs, the task's own once it is done: what
    its command says, bot.policy `tasks_of`), then `extra` ones with an argument and a label."""
    view = discord.ui.View(timeout=None)
    for action in actions:
        view.add_item(JobButton(action, job.id, locale=job.locale))
    for action, arg, label in extra or []:
        view.add_item(JobButton(action, job.id, arg, label=label, locale=job.locale))
    return view


def can_manage(interaction: discord.Interaction, job: Job) -> bool:
    """The requester, or a member with Manage Messages in that channel (see bot.policy.may_manage)."""
    return may_manage(interaction.user.id, job.user_id, getattr(interaction, "permissions", None))
