"""/chat, and conversations that continue when someone replies to the bot's answer.

A conversation is its Discord reply chain: each answer's job keeps the messages that led to it, so replying
to any answer branches from there, and two chains never share context.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.client import CHAT_IMAGE_LIMIT
from bot.i18n import t
from bot.jobs.job import Job
from bot.policy import Origin, Refused
from bot.ui import delivery
from cogs.common import makes, model_autocomplete

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.chat")

MAX_HISTORY = 40  # messages kept from a chain; older ones are dropped first


def history_of(job: Job) -> list[dict]:
    """The messages that led to this answer, plus the answer itself."""
    messages = list(job.params.get("messages") or [{"role": "user", "content": job.prompt}])
    answer = (job.result or {}).get("text")
    if answer:
        messages.append({"role": "assistant", "content": answer})
    return messages[-MAX_HISTORY:]


class Chat(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        bot.actions["regen"] = self.on_regen
        bot.actions["continue"] = self.on_continue

    @app_commands.command(name="chat", description="Talk with a language model; reply to its answer to go on",
                          extras=makes({"chat": ("regen", "continue", "delete")}))
    @app_commands.describe(prompt="What to say", model="Which language model",
                           private="Only you see the answer")
    @app_commands.autocomplete(model=model_autocomplete("chat"))
    async def chat(self, interaction: discord.Interaction[NattyBot], prompt: str, model: str | None = None,
                   private: bool = False) -> None:
        await self.bot.submit(interaction, "chat", prompt, model=model, ephemeral=private,
                              params={"messages": [{"role": "user", "content": prompt}]})

    async def on_regen(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        await self.bot.submit(interaction, "chat", job.prompt, model=job.model, ephemeral=job.ephemeral,
                              params={"messages": job.params.get("messages")}, parent_id=job.parent_id)

    async def on_continue(self, interaction: discord.Interaction[NattyBot], job: Job, arg: str | None) -> None:
        go_on = t("chat.continue", await self.bot.locale_for(interaction))
        messages = [*history_of(job), {"role": "user", "content": go_on}]
        await self.bot.submit(interaction, "chat", go_on, model=job.model, ephemeral=job.ephemeral,
                              params={"messages": messages}, parent_id=job.id)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A reply to one of the bot's chat answers continues that answer's chain, through the same submission
        path and rules as /chat (the model must still be allowed and able to run here, the channel open to
        the bot, the member under their limits)."""
        if message.author.bot or message.reference is None or message.reference.message_id is None:
            return
        bot = self.bot
        parent = await bot.storage.job_for_message(message.reference.message_id)
        if parent is None or parent.task != "chat" or parent.ephemeral:
            return
        guild = message.guild
        # a message carries no locale: the asker's own when it is their chain, else the server's language
        loc = bot.policy.locale(parent.locale if parent.user_id == message.author.id else None,
                                guild.id if guild else None, guild.preferred_locale if guild else None)
        origin = Origin.in_channel(message.channel, user_id=message.author.id, guild_id=guild.id if guild else None,
                                   channel_id=message.channel.id, command="chat", locale=loc)
        text = message.content.strip()
        images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        if not text and not images:
            return
        entry = bot.catalog.get(parent.model)
        content: str | list[dict] = text
        warnings: list[str] = []
        if images and entry is not None and entry.accepts_images:
            parts: list[dict] = [{"type": "text", "text": text or t("chat.what_is_this", loc)}]
            for att in images[:4]:
                path, problem = await self._keep_image(att, loc)
                if path is None:
                    warnings.append(problem)
                else:  # the chain refers to the file; the request inlines it when it runs
                    parts.append({"type": "image_url", "image_url": {"file": path}})
            content = parts if len(parts) > 1 else text
        elif images:
            warnings.append(t("chat.no_images", loc, model=parent.model))
        if not text and isinstance(content, str):
            await message.reply("\n".join(delivery.warning(w) for w in warnings),
                                mention_author=False)
            return
        messages = [*history_of(parent), {"role": "user", "content": content}]
        placeholder = await message.reply(t("chat.thinking", loc) + "".join(f"\n-# {w}" for w in warnings),
                                          mention_author=False)
        try:
            job = await bot.submit_job(origin, "chat", text or t("chat.what_is_this", loc), model=parent.model,
                                       params={"messages": messages, "channel_message": True, "warnings": warnings},
                                       parent_id=parent.id, message_id=placeholder.id)
        except Refused as exc:
            await placeholder.edit(content=delivery.warning(exc.message))
            return
        await bot.storage.link_message(placeholder.id, job.id, message.channel.id)

    async def _keep_image(self, attachment: discord.Attachment, loc: str) -> tuple[str | None, str]:
        """Store an image of a reply once, by its content, after checking its size; (path, problem)."""
        if attachment.size > CHAT_IMAGE_LIMIT:
            return None, t("attachment.too_big", loc, filename=attachment.filename,
                           size=delivery.human_size(attachment.size), limit=delivery.human_size(CHAT_IMAGE_LIMIT))
        try:
            data = await attachment.read()
        except discord.HTTPException as exc:
            return None, t("attachment.download_failed", loc, filename=attachment.filename, status=exc.status)
        if len(data) > CHAT_IMAGE_LIMIT:  # the attachment's stated size was wrong
            return None, t("attachment.too_big", loc, filename=attachment.filename,
                           size=delivery.human_size(len(data)), limit=delivery.human_size(CHAT_IMAGE_LIMIT))
        folder = self.bot.settings.data_dir / "inputs" / "chat"
        path = folder / hashlib.sha256(data).hexdigest()
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(path.write_bytes, data)
        return str(path.resolve()), ""


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Chat(bot))



