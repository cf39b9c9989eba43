"""The fake Discord server against the real discord.py client."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakediscord import (
    FakeChannel,
    FakeDiscord,
    FakeGuild,
    FakeUser,
    point_discord_py_at,
    run_bot,
)

TOKEN = "test-token-123"


class RerollView(discord.ui.View):
    """A button that edits its message (type 7) and one that opens a modal (type 9)."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Re-roll", custom_id="reroll")
    async def reroll(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.edit_message(content="re-rolled", view=self)

    @discord.ui.select(custom_id="pick", options=[discord.SelectOption(label=x) for x in ("flux", "sdxl")])
    async def pick(self, interaction: discord.Interaction, select: discord.ui.Select[Any]) -> None:
        await interaction.response.edit_message(content=f"model {select.values[0]}")

    @discord.ui.button(label="Edit prompt", custom_id="edit")
    async def edit(self, interaction: discord.Interaction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_modal(PromptModal())


class PromptModal(discord.ui.Modal, title="Edit prompt"):
    """One text input in an action row, one inside a label component."""

    prompt: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Prompt", custom_id="prompt", max_length=100)
    style: discord.ui.Label[Any] = discord.ui.Label(
        text="Style", component=discord.ui.TextInput(custom_id="style", required=False)
    )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        style = self.style.component
        assert isinstance(style, discord.ui.TextInput)
        await interaction.response.send_message(f"new prompt: {self.prompt.value} / {style.value}", ephemeral=True)


class TinyBot(commands.Bot):
    """A minimal bot exercising the protocol paths natty uses."""

    def __init__(self, **kwargs: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.05, **kwargs)
        self.errors: list[BaseException] = []
        self.seen: list[discord.Message] = []

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No 5 s pause between shard IDENTIFYs in tests."""

    async def setup_hook(self) -> None:
        tree = self.tree

        @tree.error
        async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            self.errors.append(getattr(error, "original", error))

        @tree.command(description="Make images")
        async def imagine(interaction: discord.Interaction, prompt: str, count: int = 1) -> None:
            await interaction.response.defer()
            await interaction.edit_original_response(content=f"{count}x {prompt}", view=RerollView())

        @tree.command(description="Render a file of the given size")
        async def render(interaction: discord.Interaction, size: int) -> None:
            await interaction.response.defer(ephemeral=True)
            await interaction.edit_original_response(content="rendering done")
            data = bytes(range(256)) * (size // 256) + b"\0" * (size % 256)
            await interaction.followup.send("file", file=discord.File(io.BytesIO(data), "out.png"))

        @tree.command(description="Say something")
        async def say(interaction: discord.Interaction, text: str) -> None:
            await interaction.response.send_message(text)

        @tree.command(description="Acknowledge too late")
        async def slow(interaction: discord.Interaction) -> None:
            await asyncio.sleep(0.5)
            await interaction.response.defer()

        @tree.command(description="Acknowledge twice")
        async def double(interaction: discord.Interaction) -> None:
            await asyncio.gather(interaction.response.defer(), interaction.response.defer())

        @tree.command(description="Follow up after the token died")
        async def late(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            await asyncio.sleep(0.5)
            await interaction.followup.send("too late")

        @tree.command(description="Pick a model")
        async def model(interaction: discord.Interaction, name: str) -> None:
            await interaction.response.send_message(f"model {name}")

        @model.autocomplete("name")
        async def model_auto(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            names = ["flux-schnell", "flux-dev", "sdxl"]
            return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

        @tree.command(description="Measure an attachment")
        async def measure(interaction: discord.Interaction, file: discord.Attachment) -> None:
            data = await file.read()
            await interaction.response.send_message(f"{file.filename}: {len(data)} bytes")

        @tree.command(description="Edit the original twice, keeping the first file")
        async def keep(interaction: discord.Interaction) -> None:
            await interaction.response.defer()
            first = await interaction.edit_original_response(
                content="one", attachments=[discord.File(io.BytesIO(b"aaa"), "a.txt")]
            )
            await interaction.edit_original_response(
                content="two", attachments=[first.attachments[0], discord.File(io.BytesIO(b"bb"), "b.txt")]
            )

        natty = app_commands.Group(name="natty", description="natty things")
        music = app_commands.Group(name="music", description="music things", parent=natty)

        @music.command(description="Play a song")
        async def play(interaction: discord.Interaction, song: str, loud: bool = False) -> None:
            await interaction.response.send_message(f"playing {song} loud={loud}")

        tree.add_command(natty)

        @tree.context_menu(name="Profile")
        async def profile(interaction: discord.Interaction, user: discord.Member) -> None:
            await interaction.response.send_message(f"profile of {user.name}")

        @tree.context_menu(name="Transcribe")
        async def transcribe(interaction: discord.Interaction, message: discord.Message) -> None:
            await interaction.response.send_message(f"transcript: {message.content}", ephemeral=True)

        await tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.seen.append(message)
        if message.attachments:
            data = await message.attachments[0].read()
            await message.reply(f"got {len(data)} bytes", mention_author=False)
        elif message.content == "!ping":
            await message.reply("pong", allowed_mentions=discord.AllowedMentions.none())
        elif message.content == "!thread":
            thread = await message.create_thread(name="talk")
            await thread.send("inside")


@dataclass
class World:
    server: FakeDiscord
    guild: FakeGuild
    chan: FakeChannel
    alice: FakeUser
    bot: TinyBot


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord(token=TOKEN) as server:
        guild = server.add_guild(name="Test")
        chan = server.add_channel(guild, name="general")
        alice = server.add_user("alice", locale="de", manage_messages=True)
        bot = TinyBot()
        async with run_bot(bot, server):
            yield World(server, guild, chan, alice, bot)


async def test_login_sync_ready(world: World) -> None:
    server, bot = world.server, world.bot
    assert bot.user is not None and bot.user.id == server.bot_user.id
    assert server.identify_count == 1
    assert len(server.command_syncs) == 1
    names = set(server.command_syncs[0][1])
    assert {"imagine", "render", "say", "model", "Transcribe"} <= names
    created = server.command_creations
    assert created == len(names)
    guild = bot.get_guild(world.guild.id)
    assert guild is not None and guild.get_channel(world.chan.id) is not None
    assert guild.me is not None
    # A second start with the same commands re-syncs but creates nothing new.
    await bot.close()
    again = TinyBot()
    async with run_bot(again, server):
        pass
    assert len(server.command_syncs) == 2 and server.command_creations == created
    assert not server.unknown_requests, server.unknown_requests
    assert not server.violations
    assert all("authorization" not in {k.lower() for k in r.headers} for r in server.requests)


async def test_slash_defer_edit_button_modal(world: World) -> None:
    server, alice, chan = world.server, world.alice, world.chan
    ix = await server.slash(alice, chan, "imagine", prompt="a cat", count=2)
    await ix.acked()
    assert ix.ack_type == 5 and not ix.ephemeral
    msg = await ix.response()
    assert msg.content == "2x a cat"
    assert [b.label for b in msg.buttons] == ["Re-roll", "Edit prompt"]
    assert msg in chan.messages and msg.webhook_id == server.application_id
    assert not msg.would_ping

    pick = await server.press(alice, msg, custom_id="pick", values=["sdxl"])
    await pick.acked()
    await server.wait_for(lambda: msg.content == "model sdxl")
    press = await server.press(alice, msg, label="Re-roll")
    await press.acked()
    assert press.ack_type == 7
    await server.wait_for(lambda: msg.content == "re-rolled")
    assert len(msg.edits) == 3  # the PATCH @original, then two updates

    opener = await server.press(alice, msg, custom_id="edit")
    modal = await opener.wait_modal()
    assert modal.title == "Edit prompt"
    assert [(f.custom_id, f.wrapper) for f in modal.fields] == [("prompt", "row"), ("style", "label")]
    assert modal.field("style").label == "Style"
    submit = await server.submit_modal(alice, opener, {"prompt": "a dog", "style": "ink"})
    reply = await submit.response()
    assert reply.content == "new prompt: a dog / ink"
    assert reply.ephemeral and submit.ephemeral and reply in chan.ephemeral_messages
    assert not world.bot.errors and not server.violations


async def test_followup_file_and_attachment_option(world: World) -> None:
    server, alice, chan = world.server, world.alice, world.chan
    ix = await server.slash(alice, chan, "render", size=300)
    await ix.wait_final(lambda ix: ix.followups)
    assert ix.ephemeral and ix.original is not None and ix.original.content == "rendering done"
    (att,) = ix.followups[0].attachments
    assert att.filename == "out.png" and att.size == 300 and att.content_type == "image/png"
    assert att.data[:3] == b"\x00\x01\x02"

    ix2 = await server.slash(alice, chan, "measure", file=("in.wav", b"RIFF" * 10, "audio/wav"))
    assert (await ix2.response()).content == "in.wav: 40 bytes"
    assert not server.violations


async def test_autocomplete_and_context_menu(world: World) -> None:
    server, alice, chan = world.server, world.alice, world.chan
    choices = await server.autocomplete(alice, chan, "model", focused="name", value="flux")
    assert [c["value"] for c in choices] == ["flux-schnell", "flux-dev"]
    m = await server.send_message(alice, chan, "hello there")
    ix = await server.context_menu(alice, chan, "Transcribe", target=m)
    assert (await ix.response()).content == "transcript: hello there"
    ix2 = await server.context_menu(alice, chan, "Profile", target=alice)
    assert (await ix2.response()).content == "profile of alice"
    ix3 = await server.slash(alice, chan, "natty music play", song="blue", loud=True)
    assert (await ix3.response()).content == "playing blue loud=True"
    with pytest.raises(ValueError, match="no option"):
        await server.slash(alice, chan, "natty music play", song="x", volume=3)
    assert not server.violations


async def test_reconnect_resumes(world: World) -> None:
    server = world.server
    await server.request_reconnect()
    await server.wait_for(lambda: any(s.resumed and s.open for s in server.sessions))
    assert server.identify_count == 1
    ix = await server.slash(world.alice, world.chan, "say", text="still here")
    assert (await ix.response()).content == "still here"


async def test_late_ack_is_rejected(world: World) -> None:
    server = world.server
    server.ack_deadline = 0.2
    ix = await server.slash(world.alice, world.chan, "slow")
    with pytest.raises(AssertionError):
        await ix.acked()
    await server.wait_for(lambda: server.violations)
    (v,) = server.violations
    assert (v.kind, v.status, v.code) == ("late_ack", 404, 10062)
    await server.wait_for(lambda: world.bot.errors)
    assert isinstance(world.bot.errors[0], discord.NotFound)


async def test_double_ack_is_rejected(world: World) -> None:
    server = world.server
    ix = await server.slash(world.alice, world.chan, "double")
    await ix.acked()
    await server.wait_for(lambda: server.violations)
    assert [(v.kind, v.code) for v in server.violations] == [("double_ack", 40060)]


async def test_limits(world: World) -> None:
    server, alice, chan = world.server, world.alice, world.chan
    await server.slash(alice, chan, "say", text="x" * 2001)
    await server.wait_for(lambda: server.violations)
    v = server.violations[-1]
    assert (v.kind, v.code) == ("content_too_long", 50035) and v.errors is not None and "content" in v.errors
    assert server.interactions[-1].rejections == [50035]

    server.attachment_size_limit = 1000
    ix = await server.slash(alice, chan, "render", size=2000)
    await server.wait_for(lambda: len(server.violations) == 2)
    v = server.violations[-1]
    assert (v.kind, v.status, v.code) == ("file_too_large", 413, 40005)
    assert ix.payload["attachment_size_limit"] == 1000 and not ix.followups
    await server.wait_for(lambda: len(world.bot.errors) == 2)
    assert isinstance(world.bot.errors[1], discord.HTTPException) and world.bot.errors[1].status == 413


async def test_expired_token(world: World) -> None:
    server = world.server
    server.token_lifetime = 0.3
    await server.slash(world.alice, world.chan, "late")
    await server.wait_for(lambda: server.violations)
    assert [(v.kind, v.status, v.code) for v in server.violations] == [("expired_token", 401, 50027)]


async def test_injected_429_is_retried(world: World) -> None:
    server = world.server
    server.inject_429("/messages/@original", retry_after=0.1)
    ix = await server.slash(world.alice, world.chan, "imagine", prompt="rain")
    assert (await ix.response()).content == "1x rain"
    assert len(server.rate_limited) == 1 and "@original" in server.rate_limited[0].path
    assert not server.violations and not world.bot.errors


async def test_message_create_and_reply(world: World) -> None:
    server, alice, chan, bot = world.server, world.alice, world.chan, world.bot
    await server.send_message(alice, chan, "!ping")
    pong = await server.wait_for(lambda: next((m for m in chan.messages if m.content == "pong"), None))
    assert pong.reference is not None and pong.reference.content == "!ping"
    assert pong.allowed_mentions == {"parse": []} and not pong.would_ping
    assert bot.seen[0].content == "!ping" and bot.seen[0].author.id == alice.id

    up = await server.send_message(alice, chan, "", attachments=[("a.bin", b"12345")])
    reply = await server.wait_for(lambda: next((m for m in chan.messages if m.reference is up), None))
    assert reply.content == "got 5 bytes"
    assert not server.violations


async def test_sharded_bot_gets_its_guilds() -> None:
    async with FakeDiscord(token=TOKEN, shards=2) as server:
        g0 = server.add_guild(name="zero", shard=0)
        g1 = server.add_guild(name="one", shard=1)
        c1 = server.add_channel(g1)
        server.add_channel(g0)
        bob = server.add_user("bob")
        bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)
        bot.before_identify_hook = TinyBot.before_identify_hook.__get__(bot)  # type: ignore[method-assign]
        got: list[discord.Message] = []

        async def on_message(message: discord.Message) -> None:
            got.append(message)

        bot.add_listener(on_message)
        async with run_bot(bot, server):
            assert any(r.path.endswith("/gateway/bot") for r in server.requests)
            sessions = await server.ready()
            by_shard = {s.shard_id: s for s in sessions}
            for shard, guild in ((0, g0), (1, g1)):
                created = [d["id"] for t, d in by_shard[shard].events if t == "GUILD_CREATE"]
                assert created == [str(guild.id)]
            assert server.identify_count == 2
            await server.send_message(bob, c1, "hi")
            await server.wait_for(lambda: got)
            assert got[0].guild is not None and got[0].guild.shard_id == 1
            assert got[0].content == ""  # no message_content intent: Discord blanks it


async def test_bad_token_is_login_failure() -> None:
    async with FakeDiscord(token=TOKEN) as server:
        client = discord.Client(intents=discord.Intents.none())
        with point_discord_py_at(server), pytest.raises(discord.LoginFailure):
            await client.login("wrong-token")
        await client.close()
        assert [v.code for v in server.violations] == [0]


async def test_edit_keeps_listed_attachments(world: World) -> None:
    server = world.server
    ix = await server.slash(world.alice, world.chan, "keep")
    await ix.wait_final(lambda ix: ix.original is not None and ix.original.content == "two")
    assert ix.original is not None
    assert [(a.filename, a.data) for a in ix.original.attachments] == [("a.txt", b"aaa"), ("b.txt", b"bb")]
    assert len(ix.original.edits) == 2
    assert not server.violations


async def test_dm_slash_and_thread(world: World) -> None:
    server, alice, chan, bot = world.server, world.alice, world.chan, world.bot
    dm = server.dm_channel(alice)
    ix = await server.slash(alice, dm, "say", text="hi in DM")
    assert "member" not in ix.payload and ix.payload["user"]["id"] == str(alice.id)
    assert (await ix.response()).content == "hi in DM" and dm.messages

    start = await server.send_message(alice, chan, "!thread")
    thread = await server.wait_for(lambda: start.thread if start.thread and start.thread.messages else None)
    assert thread.parent_id == chan.id and thread.messages[0].content == "inside"
    assert bot.get_channel(thread.id) is not None
    assert not server.violations
