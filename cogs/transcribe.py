"""/transcribe and the "Transcribe" message menu, for attachments and voice messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.i18n import t
from cogs.common import makes, model_autocomplete

if TYPE_CHECKING:
    from bot.client import NattyBot

AUDIO_EXTENSIONS = (".ogg", ".mp3", ".wav", ".flac", ".m4a", ".webm", ".opus")


def _is_audio(att: discord.Attachment) -> bool:
    return (att.content_type or "").startswith("audio/") or att.filename.lower().endswith(AUDIO_EXTENSIONS)


class Transcribe(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Transcribe", callback=self.transcribe_message)
        bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(name="transcribe", description="Turn speech in an audio file into text",
                          extras=makes({"speech-to-text": ()}))
    @app_commands.describe(audio="The audio file or voice message", model="Which speech-to-text model")
    @app_commands.autocomplete(model=model_autocomplete("speech-to-text"))
    async def transcribe(self, interaction: discord.Interaction[NattyBot], audio: discord.Attachment,
                         model: str | None = None) -> None:
        await self._start(interaction, audio, model)

    async def transcribe_message(self, interaction: discord.Interaction[NattyBot], message: discord.Message) -> None:
        audio = next((a for a in message.attachments if _is_audio(a)), None)
        if audio is None:
            loc = await self.bot.locale_for(interaction)
            await self.bot.refuse(interaction, t("transcribe.no_audio", loc), "speech-to-text")
            return
        await self._start(interaction, audio, None)

    async def _start(self, interaction: discord.Interaction[NattyBot], audio: discord.Attachment,
                     model: str | None) -> None:
        loc = await self.bot.locale_for(interaction)
        if not _is_audio(audio):
            await self.bot.refuse(
                interaction, t("transcribe.not_audio", loc, filename=audio.filename,
                               type=audio.content_type or t("attachment.unknown_type", loc)), "speech-to-text")
            return
        await self.bot.ack(interaction)
        data, problem = await self.bot.read_attachment(interaction, audio, ("audio", "video", "application"))
        if data is None:
            await self.bot.fail_after_ack(interaction, problem or t("transcribe.unreadable", loc), "speech-to-text")
            return
        await self.bot.submit(interaction, "speech-to-text", "", model=model, check_prompt=False,
                              inputs={"audio": (audio.filename, data)})


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Transcribe(bot))
