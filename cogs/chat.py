"""/chat, and conversations that continue when someone replies to the bot's answer.

A conversation is its Discord reply chain: each answer's job keeps the messages that led to it, so replying
to any answer branches from there, and two chains never share context.
"""

from __future__ import annotations

import base64
import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import delivery
from bot.i18n import pick_locale, t
from bot.jobs import Job
from cogs.common import model_autocomplete
from cogs.settings import channel_allowed

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
    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        bot.actions["regen"] = self.on_regen  # type: ignore[attr-defined]
        bot.actions["continue"] = self.on_continue  # type: ignore[attr-defined]

    @app_commands.command(name="chat", description="Talk with a language model; reply to its answer to go on")
    @app_commands.describe(prompt="What to say", model="Which language model",
                           private="Only you see the answer")
    @app_commands.autocomplete(model=model_autocomplete("chat"))
    async def chat(self, interaction: discord.Interaction, prompt: str, model: str | None = None,
                   private: bool = False) -> None:
        await self.bot.submit(interaction, "chat", prompt, model=model, ephemeral=private,  # type: ignore[attr-defined]
                              params={"messages": [{"role": "user", "content": prompt}]})

    async def on_regen(self, interaction: discord.Interaction, job: Job, arg: str | None) -> None:
        await self.bot.submit(interaction, "chat", job.prompt, model=job.model, ephemeral=job.ephemeral,  # type: ignore[attr-defined]
                              params={"messages": job.params.get("messages")}, parent_id=job.parent_id)

    async def on_continue(self, interaction: discord.Interaction, job: Job, arg: str | None) -> None:
        go_on = t("chat.continue", await self.bot.locale_for(interaction))  # type: ignore[attr-defined]
        messages = [*history_of(job), {"role": "user", "content": go_on}]
        await self.bot.submit(interaction, "chat", go_on, model=job.model, ephemeral=job.ephemeral,  # type: ignore[attr-defined]
                              params={"messages": messages}, parent_id=job.id)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A reply to one of the bot's chat answers continues that answer's chain."""
        if message.author.bot or message.reference is None or message.reference.message_id is None:
            return
        bot = self.bot
        parent = await bot.storage.job_for_message(message.reference.message_id)  # type: ignore[attr-defined]
        if parent is None or parent.task != "chat" or parent.ephemeral:
            return
        gs = await bot.guild_settings(message.guild.id if message.guild else None)  # type: ignore[attr-defined]
        # a message carries no locale: the asker's own when it is their chain, else the server's language
        loc = pick_locale(parent.locale if parent.user_id == message.author.id else None, gs.get("language"),
                          message.guild.preferred_locale if message.guild else None)
        if "chat" in (gs.get("disabled_commands") or []) or not channel_allowed(gs, message.channel,
                                                                                message.channel.id):
            await message.reply(t("chat.off_here", loc),
                                allowed_mentions=delivery.NO_MENTIONS, mention_author=False)
            return
        text = message.content.strip()
        entry = bot.catalog.get(parent.model)  # type: ignore[attr-defined]
        content: str | list[dict] = text
        warnings: list[str] = []
        images = [a for a in message.attachments if (a.content_type or "").startswith("image/")]
        if images:
            if entry is not None and entry.accepts_images:
                parts: list[dict] = [{"type": "text", "text": text or t("chat.what_is_this", loc)}]
                for att in images[:4]:
                    data = await att.read()
                    url = f"data:{att.content_type};base64,{base64.b64encode(data).decode()}"
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                content = parts
            else:
                warnings.append(t("chat.no_images", loc, model=parent.model))
        if not text and isinstance(content, str):
            return
        limit = bot.settings.max_prompt_chars  # type: ignore[attr-defined]
        if len(text) > limit:
            await message.reply(t("chat.too_long", loc, length=f"{len(text):,}", limit=f"{limit:,}"),
                                allowed_mentions=delivery.NO_MENTIONS, mention_author=False)
            return
        messages = [*history_of(parent), {"role": "user", "content": content}]
        placeholder = await message.reply(t("chat.thinking", loc) + "".join(f"\n-# {w}" for w in warnings),
                                          allowed_mentions=delivery.NO_MENTIONS, mention_author=False)
        job = Job(user_id=message.author.id, task="chat", model=parent.model, prompt=text,
                  params={"messages": messages, "channel_message": True, "warnings": warnings},
                  guild_id=message.guild.id if message.guild else None, channel_id=message.channel.id,
                  message_id=placeholder.id, parent_id=parent.id, token_expires_at=None, locale=loc)
        if bot.catalog.get(parent.model) is None:  # type: ignore[attr-defined]
            await placeholder.edit(content=t("chat.model_gone", loc, model=parent.model))
            return
        from bot.engine import LimitHit

        try:
            await bot.engine.submit(job)  # type: ignore[attr-defined]
        except LimitHit as exc:
            await placeholder.edit(content=f"⚠️ {exc.message}", allowed_mentions=delivery.NO_MENTIONS)
            return
        await bot.storage.link_message(placeholder.id, job.id, message.channel.id)  # type: ignore[attr-defined]


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Chat(bot))



