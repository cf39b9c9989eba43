"""The fake Discord server against the real discord.py client."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
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


@pytest.mark.discord_violations
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


@pytest.mark.discord_violations
async def test_double_ack_is_rejected(world: World) -> None:
    server = world.server
    ix = await server.slash(world.alice, world.chan, "double")
    await ix.acked()
    await server.wait_for(lambda: server.violations)
    assert [(v.kind, v.code) for v in server.violations] == [("double_ack", 40060)]


@pytest.mark.discord_violations
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


@pytest.mark.discord_violations
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


@pytest.mark.discord_violations
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


# --------------------------------------------------------------------------------------------------
# The server as strict as Discord: each rule, broken by a raw request, answers Discord's error.


class Clock:
    """A wall clock the test moves by hand, so rate windows and message ages never depend on timing."""

    def __init__(self) -> None:
        self.t = 1_750_000_000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Raw:
    server: FakeDiscord
    http: Any  # aiohttp.ClientSession
    clock: Clock
    guild: FakeGuild
    chan: FakeChannel
    alice: FakeUser

    async def call(self, method: str, path: str, body: Any = None, *, bot: bool = True) -> tuple[int, Any, Any]:
        """(status, json body, headers) of one request; ``bot=False`` sends no Authorization (interaction routes)."""
        headers = {"Authorization": f"Bot {TOKEN}"} if bot else {}
        async with self.http.request(method, self.server.api_base + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None) if r.status != 204 else None
            return r.status, data, r.headers

    def interaction(self, itype: int = 2, data: dict[str, Any] | None = None) -> Any:
        """An interaction the server knows (as if dispatched now) without a gateway to send it on."""
        server = self.server
        ix = server._base_interaction(self.alice, self.chan, itype, data or {"name": "x", "type": 1})
        server.interactions.append(ix)
        server._ix_by_id[ix.id] = ix
        server._ix_by_token[ix.token] = ix
        ix.dispatched_at = server.loop_time()
        return ix

    def callback_path(self, ix: Any) -> str:
        return f"/interactions/{ix.id}/{ix.token}/callback"

    def hook_path(self, ix: Any) -> str:
        return f"/webhooks/{self.server.application_id}/{ix.token}"


@pytest.fixture
async def raw(request: pytest.FixtureRequest) -> AsyncIterator[Raw]:
    """A bare server (no bot) and an HTTP client: raw requests break the rules on purpose and look at the answer."""
    import aiohttp

    request.node.add_marker(pytest.mark.discord_violations)

    clock = Clock()
    async with FakeDiscord(token=TOKEN, clock=clock) as server, aiohttp.ClientSession() as http:
        guild = server.add_guild(name="Strict")
        chan = server.add_channel(guild, name="general")
        alice = server.add_user("alice", guilds=[guild])
        yield Raw(server, http, clock, guild, chan, alice)


def kinds(server: FakeDiscord) -> list[str]:
    return [v.kind for v in server.violations]


async def test_a_channel_allows_five_messages_per_five_seconds_then_429s_with_discords_headers(raw: Raw) -> None:
    path = f"/channels/{raw.chan.id}/messages"
    seen = []
    for i in range(5):
        status, _, h = await raw.call("POST", path, {"content": f"m{i}"})
        assert status == 200
        seen.append((h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"], h["X-RateLimit-Bucket"]))
    assert [s[:2] for s in seen] == [("5", str(4 - i)) for i in range(5)]
    assert len({s[2] for s in seen}) == 1 and float(h["X-RateLimit-Reset-After"]) == pytest.approx(5.0)
    assert float(h["X-RateLimit-Reset"]) == pytest.approx(raw.clock.t + 5.0)

    status, body, h = await raw.call("POST", path, {"content": "one too many"})
    assert status == 429 and body["global"] is False and body["retry_after"] == pytest.approx(5.0)
    assert h["X-RateLimit-Scope"] == "user" and h["Via"] and h["X-RateLimit-Remaining"] == "0"
    assert [(x.scope, x.bucket) for x in raw.server.rate_limit_hits] == [("user", "message_create")]
    assert [m.content for m in raw.chan.messages] == [f"m{i}" for i in range(5)]

    other = raw.server.add_channel(raw.guild, name="other")  # buckets are per channel
    assert (await raw.call("POST", f"/channels/{other.id}/messages", {"content": "elsewhere"}))[0] == 200
    raw.clock.t += 5.0  # the window is over
    assert (await raw.call("POST", path, {"content": "later"}))[0] == 200
    assert raw.server.violations == []  # a 429 is counted, not a violation


async def test_the_global_limit_counts_bot_token_requests_and_not_interaction_webhooks(raw: Raw) -> None:
    raw.server.global_rate_limit = (3, 1.0)
    ix = raw.interaction()
    assert (await raw.call("POST", raw.callback_path(ix), {"type": 5}, bot=False))[0] == 204
    for path in ("/users/@me", f"/channels/{raw.chan.id}", "/gateway/bot"):
        assert (await raw.call("GET", path))[0] == 200
    status, body, h = await raw.call("GET", "/users/@me")
    assert status == 429 and body["global"] is True
    assert h["X-RateLimit-Global"] == "true" and h["X-RateLimit-Scope"] == "global"
    # the interaction's own routes are not bound to the global limit
    status, _, _ = await raw.call("PATCH", raw.hook_path(ix) + "/messages/@original", {"content": "done"}, bot=False)
    assert status == 200 and ix.original.content == "done"
    raw.clock.t += 1.0
    assert (await raw.call("GET", "/users/@me"))[0] == 200
    assert [x.scope for x in raw.server.rate_limit_hits] == ["global"]


async def test_interaction_webhooks_share_five_requests_per_two_seconds_per_token(raw: Raw) -> None:
    ix = raw.interaction()
    await raw.call("POST", raw.callback_path(ix), {"type": 5}, bot=False)
    statuses = [(await raw.call("POST", raw.hook_path(ix), {"content": f"f{i}"}, bot=False))[0] for i in range(5)]
    status, _, h = await raw.call("PATCH", raw.hook_path(ix) + "/messages/@original", {"content": "x"}, bot=False)
    assert statuses == [204] * 5 and status == 429 and h["X-RateLimit-Limit"] == "5"
    other = raw.interaction()  # another token has its own bucket
    await raw.call("POST", raw.callback_path(other), {"type": 5}, bot=False)
    assert (await raw.call("POST", raw.hook_path(other), {"content": "mine"}, bot=False))[0] == 204


async def test_discord_py_honours_the_headers_and_never_earns_a_429(world: World) -> None:
    server = world.server
    server.rate_limits["message_create"] = (3, 0.3)  # short windows keep the test quick
    channel = world.bot.get_channel(world.chan.id)
    assert isinstance(channel, discord.TextChannel)
    await asyncio.gather(*(channel.send(f"burst {i}", allowed_mentions=discord.AllowedMentions.none())
                           for i in range(10)))
    assert sorted(m.content for m in world.chan.messages) == sorted(f"burst {i}" for i in range(10))
    posts = [r for r in server.requests if r.method == "POST" and r.path.endswith("/messages")]
    assert len(posts) == 10 and server.rate_limit_hits == [] and not server.violations


async def test_the_bot_lacking_permissions_gets_50013_and_50001(raw: Raw) -> None:
    from tests.fakediscord import ATTACH_FILES, EMBED_LINKS, SEND_MESSAGES, VIEW_CHANNEL

    server, chan, bot = raw.server, raw.chan, raw.server.bot_user
    path = f"/channels/{chan.id}/messages"
    ix = raw.interaction()
    assert int(ix.payload["app_permissions"]) & SEND_MESSAGES
    server.set_overwrite(chan, bot, deny=SEND_MESSAGES | ATTACH_FILES | EMBED_LINKS)
    status, body, _ = await raw.call("POST", path, {"content": "hi"})
    assert (status, body["code"]) == (403, 50013)
    # the interaction carries what the bot may do here, and its own responses still work
    ix = raw.interaction()
    assert not int(ix.payload["app_permissions"]) & SEND_MESSAGES
    status, _, _ = await raw.call("POST", raw.callback_path(ix), {"type": 4, "data": {"content": "answer"}}, bot=False)
    assert status == 204 and ix.original.content == "answer"

    server.set_overwrite(chan, bot, deny=ATTACH_FILES | EMBED_LINKS)  # may send, but no files or embeds
    assert (await raw.call("POST", path, {"content": "plain"}))[0] == 200
    status, body, _ = await raw.call("POST", path, {"embeds": [{"title": "t"}]})
    assert (status, body["code"]) == (403, 50013)
    form = aiohttp_form({"content": "file"}, [("a.png", b"\x89PNG")])
    async with raw.http.post(server.api_base + path, data=form, headers={"Authorization": f"Bot {TOKEN}"}) as r:
        assert (r.status, (await r.json())["code"]) == (403, 50013)

    server.set_overwrite(chan, server.everyone_role(raw.guild), deny=VIEW_CHANNEL)  # hidden from @everyone
    server.set_overwrite(chan, bot, allow=0)
    assert server.bot_permissions(chan) == 0
    status, body, _ = await raw.call("POST", path, {"content": "hi"})
    assert (status, body["code"]) == (403, 50001)
    assert (await raw.call("GET", f"/channels/{chan.id}"))[1]["code"] == 50001
    assert kinds(server).count("missing_permissions") == 3 and kinds(server)[-2:] == ["missing_access"] * 2


async def test_deleting_anothers_message_or_opening_a_thread_needs_the_permission(raw: Raw) -> None:
    from tests.fakediscord import CREATE_PUBLIC_THREADS, MANAGE_MESSAGES

    server, chan = raw.server, raw.chan
    theirs = await server.send_message(raw.alice, chan, "mine")
    status, body, _ = await raw.call("DELETE", f"/channels/{chan.id}/messages/{theirs.id}")
    assert (status, body["code"]) == (403, 50013) and not theirs.deleted
    _, own, _ = await raw.call("POST", f"/channels/{chan.id}/messages", {"content": "bot's"})
    assert (await raw.call("DELETE", f"/channels/{chan.id}/messages/{own['id']}"))[0] == 204
    server.set_bot_permissions(raw.guild, server.bot_role(raw.guild).permissions | MANAGE_MESSAGES)
    assert (await raw.call("DELETE", f"/channels/{chan.id}/messages/{theirs.id}"))[0] == 204

    server.set_overwrite(chan, server.bot_role(raw.guild), deny=CREATE_PUBLIC_THREADS)
    status, body, _ = await raw.call("POST", f"/channels/{chan.id}/messages/{own['id']}/threads", {"name": "t"})
    assert (status, body["code"]) == (403, 50013)
    status, body, _ = await raw.call("POST", f"/channels/{chan.id}/threads", {"name": "t", "type": 11})
    assert (status, body["code"]) == (403, 50013)
    assert (await raw.call("POST", f"/channels/{chan.id}/threads", {"name": "private", "type": 12}))[0] == 200


async def test_discord_py_sees_the_same_permissions_the_server_enforces(world: World) -> None:
    from tests.fakediscord import SEND_MESSAGES

    server = world.server
    server.set_overwrite(world.chan, server.bot_user, deny=SEND_MESSAGES)
    channel = world.bot.get_channel(world.chan.id)
    assert isinstance(channel, discord.TextChannel)
    await server.wait_for(lambda: channel.overwrites)
    assert not channel.permissions_for(channel.guild.me).send_messages
    with pytest.raises(discord.Forbidden) as err:
        await channel.send("no")
    assert err.value.code == 50013
    server.tolerate("missing_permissions")


async def test_a_ping_the_test_did_not_expect_is_a_violation_wherever_it_is_sent(raw: Raw) -> None:
    server, chan, alice = raw.server, raw.chan, raw.alice
    path = f"/channels/{chan.id}/messages"
    await raw.call("POST", path, {"content": "quiet @everyone", "allowed_mentions": {"parse": []}})
    assert server.violations == []
    await raw.call("POST", path, {"content": "loud @everyone"})  # bot token, no allowed_mentions: parses all
    assert kinds(server) == ["unexpected_ping"] and "@everyone" in server.violations[0].message

    ix = raw.interaction()
    await raw.call("POST", raw.callback_path(ix), {"type": 5}, bot=False)
    await raw.call("PATCH", raw.hook_path(ix) + "/messages/@original", {"content": f"for <@{alice.id}>"}, bot=False)
    assert kinds(server) == ["unexpected_ping"] * 2  # a webhook message parses users by default
    await raw.call("POST", raw.hook_path(ix), {"content": f"<@&{raw.guild.id + 1}>",
                                               "allowed_mentions": {"parse": ["roles"]}}, bot=False)
    assert kinds(server) == ["unexpected_ping"] * 3

    server.expect_ping(alice)
    _, sent, _ = await raw.call("POST", path, {"content": f"hi <@{alice.id}>"})
    assert len(server.violations) == 3  # expected
    await raw.call("PATCH", f"{path}/{sent['id']}", {"content": "now @here"})  # an edit that adds a ping
    assert kinds(server) == ["unexpected_ping"] * 4 and "@here" in server.violations[-1].message
    assert [v.method for v in server.violations] == ["POST", "PATCH", "POST", "PATCH"]


async def test_editing_a_message_older_than_an_hour_is_refused_with_30046(raw: Raw) -> None:
    path = f"/channels/{raw.chan.id}/messages"
    _, sent, _ = await raw.call("POST", path, {"content": "fresh"})
    raw.clock.t += 3599
    assert (await raw.call("PATCH", f"{path}/{sent['id']}", {"content": "still fresh"}))[0] == 200
    raw.clock.t += 2
    status, body, _ = await raw.call("PATCH", f"{path}/{sent['id']}", {"content": "too late"})
    assert (status, body["code"]) == (400, 30046) and raw.server.messages[int(sent["id"])].content == "still fresh"
    assert kinds(raw.server) == ["old_message_edit"]


def modal(**over: Any) -> dict[str, Any]:
    field = {"type": 4, "custom_id": "prompt", "label": "Prompt", "style": 1, **over.pop("field", {})}
    return {"type": 9, "data": {"custom_id": "m", "title": "Remix", "components": [
        {"type": 1, "components": [field]}], **over}}


@pytest.mark.parametrize(("name", "body"), [
    ("title", modal(title="t" * 46)),
    ("custom_id", modal(custom_id="c" * 101)),
    ("six rows", modal(components=[{"type": 1, "components": [{"type": 4, "custom_id": f"f{i}", "label": "L",
                                                                "style": 1}]} for i in range(6)])),
    ("label", modal(field={"label": "l" * 46})),
    ("placeholder", modal(field={"placeholder": "p" * 101})),
    ("value", modal(field={"value": "v" * 4001})),
    ("max_length", modal(field={"max_length": 4001})),
    ("field custom_id", modal(field={"custom_id": "c" * 101})),
    ("label component", modal(components=[{"type": 18, "label": "l" * 46,
                                           "component": {"type": 4, "custom_id": "a", "style": 1}}])),
    ("duplicate ids", modal(components=[{"type": 1, "components": [{"type": 4, "custom_id": "same", "label": "L",
                                                                     "style": 1}]}] * 2)),
])
async def test_a_modal_over_discords_limits_is_refused(raw: Raw, name: str, body: dict[str, Any]) -> None:
    ix = raw.interaction(3, {"custom_id": "remix", "component_type": 2})
    status, err, _ = await raw.call("POST", raw.callback_path(ix), body, bot=False)
    assert (status, err["code"]) == (400, 50035) and ix.modal is None and ix.rejections == [50035]
    assert kinds(raw.server)[-1] in ("bad_modal", "duplicate_custom_id")


async def test_a_modal_at_discords_limits_is_accepted(raw: Raw) -> None:
    ix = raw.interaction(3, {"custom_id": "remix", "component_type": 2})
    body = modal(title="t" * 45, components=[
        {"type": 1, "components": [{"type": 4, "custom_id": f"f{i}" + "c" * 97, "label": "l" * 45, "style": 2,
                                    "placeholder": "p" * 100, "value": "v" * 4000, "max_length": 4000}]}
        for i in range(5)])
    assert (await raw.call("POST", raw.callback_path(ix), body, bot=False))[0] == 204
    assert ix.modal is not None and len(ix.modal.fields) == 5 and raw.server.violations == []


@pytest.mark.parametrize(("choices", "kind"), [
    ([{"name": f"c{i}", "value": f"c{i}"} for i in range(26)], "too_many_choices"),
    ([{"name": "", "value": "x"}], "bad_choice"),
    ([{"name": "n" * 101, "value": "x"}], "bad_choice"),
    ([{"name": "ok", "value": "v" * 101}], "bad_choice"),
    ([{"name": "ok", "value": ""}], "bad_choice"),
])
async def test_autocomplete_choices_over_the_limits_are_refused(
    raw: Raw, choices: list[dict[str, Any]], kind: str
) -> None:
    ix = raw.interaction(4)
    status, err, _ = await raw.call("POST", raw.callback_path(ix), {"type": 8, "data": {"choices": choices}}, bot=False)
    assert (status, err["code"]) == (400, 50035) and kinds(raw.server) == [kind] and ix.choices is None


def row(*components: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(components)}


@pytest.mark.parametrize(("components", "kind"), [
    ([row({"type": 2, "style": 1, "label": "a", "custom_id": "x"}),
      row({"type": 2, "style": 1, "label": "b", "custom_id": "x"})], "duplicate_custom_id"),
    ([row({"type": 2, "style": 5, "label": "site"})], "bad_button"),
    ([row({"type": 2, "style": 5, "label": "site", "url": "https://example.org", "custom_id": "x"})], "bad_button"),
    ([row({"type": 2, "style": 1, "label": "no id"})], "bad_button"),
    ([row({"type": 2, "style": 2, "label": "both", "custom_id": "x", "url": "https://example.org"})], "bad_button"),
    ([row({"type": 3, "custom_id": "s", "options": [{"label": "l" * 101, "value": "v"}]})], "bad_select"),
    ([row({"type": 3, "custom_id": "s", "options": [{"label": "l", "value": "v" * 101}]})], "bad_select"),
    ([row({"type": 3, "custom_id": "s", "options": [{"label": "l", "value": "v", "description": "d" * 101}]})],
     "bad_select"),
    ([row({"type": 3, "custom_id": "s", "options": []})], "bad_select"),
])
async def test_components_breaking_discords_rules_are_refused(
    raw: Raw, components: list[dict[str, Any]], kind: str
) -> None:
    status, err, _ = await raw.call("POST", f"/channels/{raw.chan.id}/messages", {"content": "c",
                                                                                 "components": components})
    assert (status, err["code"]) == (400, 50035) and kinds(raw.server) == [kind] and not raw.chan.messages


async def test_a_link_button_and_a_select_within_the_rules_are_accepted(raw: Raw) -> None:
    components = [row({"type": 2, "style": 5, "label": "site", "url": "https://example.org"},
                      {"type": 2, "style": 1, "label": "go", "custom_id": "go"}),
                  row({"type": 3, "custom_id": "s", "options": [{"label": "l" * 100, "value": "v" * 100}]})]
    assert (await raw.call("POST", f"/channels/{raw.chan.id}/messages", {"content": "c",
                                                                        "components": components}))[0] == 200


async def test_archived_and_locked_threads_refuse_the_bot(raw: Raw) -> None:
    from tests.fakediscord import MANAGE_THREADS

    server = raw.server
    thread = server.add_thread(raw.chan, "old talk", archived=True)
    status, body, _ = await raw.call("POST", f"/channels/{thread.id}/messages", {"content": "hello?"})
    assert (status, body["code"]) == (400, 50083) and not thread.messages
    assert (await raw.call("PATCH", f"/channels/{thread.id}", {"archived": False}))[0] == 200  # unarchive, then send
    assert (await raw.call("POST", f"/channels/{thread.id}/messages", {"content": "back"}))[0] == 200

    server.set_thread_state(thread, locked=True)
    status, body, _ = await raw.call("POST", f"/channels/{thread.id}/messages", {"content": "locked"})
    assert (status, body["code"]) == (403, 50013)
    server.set_thread_state(thread, archived=True)
    status, body, _ = await raw.call("PATCH", f"/channels/{thread.id}", {"archived": False})
    assert (status, body["code"]) == (403, 50013) and thread.archived  # only Manage Threads reopens a locked one
    server.set_bot_permissions(raw.guild, server.bot_role(raw.guild).permissions | MANAGE_THREADS)
    assert (await raw.call("PATCH", f"/channels/{thread.id}", {"archived": False}))[0] == 200
    assert kinds(server) == ["archived_thread", "missing_permissions", "missing_permissions"]


async def test_a_forum_takes_threads_with_a_starter_message_and_no_plain_messages(raw: Raw) -> None:
    forum = raw.server.add_forum(raw.guild, "gallery")
    status, body, _ = await raw.call("POST", f"/channels/{forum.id}/messages", {"content": "direct"})
    assert (status, body["code"]) == (400, 50008)
    status, body, _ = await raw.call("POST", f"/channels/{forum.id}/threads", {"name": "empty post"})
    assert (status, body["code"]) == (400, 50035) and "message" in body["errors"]
    status, post, _ = await raw.call("POST", f"/channels/{forum.id}/threads",
                                     {"name": "a cat", "message": {"content": "look"}})
    assert status == 200 and post["message"]["id"] == post["id"] and post["parent_id"] == str(forum.id)
    (thread,) = forum.threads
    assert [m.content for m in thread.messages] == ["look"]
    assert kinds(raw.server) == ["forum_message", "forum_thread_without_message"]


async def test_discord_py_posts_in_a_forum_through_create_thread(world: World) -> None:
    forum = world.server.add_forum(world.guild, "gallery")
    channel = await world.server.wait_for(lambda: world.bot.get_channel(forum.id))
    assert isinstance(channel, discord.ForumChannel)
    made = await channel.create_thread(name="a cat", content="look", allowed_mentions=discord.AllowedMentions.none())
    assert made.thread.parent_id == forum.id and made.message.content == "look"
    assert [m.content for m in forum.threads[0].messages] == ["look"] and not world.server.violations


def aiohttp_form(payload: dict[str, Any], files: list[tuple[str, bytes]]) -> Any:
    import json

    import aiohttp

    form = aiohttp.FormData(quote_fields=False)
    form.add_field("payload_json", json.dumps(payload), content_type="application/json")
    for i, (name, data) in enumerate(files):
        form.add_field(f"files[{i}]", data, filename=name, content_type="application/octet-stream")
    return form


# --------------------------------------------------------------------------------------------------
# The two rules tests/conftest.py adds to every run

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.mark.discord_violations  # the inner run leaves its servers in the shared registry
def test_a_passing_test_whose_server_saw_a_violation_fails(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner="""
        import pytest
        from tests.fakediscord import FakeDiscord, Violation

        def broken(kind):
            server = FakeDiscord()
            server.violations.append(Violation(kind, 400, 50035, "x", "POST", "/x"))
            return server

        def test_forgets_to_look():
            broken("content_too_long")

        def test_tolerates_what_it_provokes():
            broken("late_ack").tolerate("late_ack")

        @pytest.mark.discord_violations
        def test_inspects_them_itself():
            assert broken("double_ack").violations
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the bot broke Discord's rules*", "*content_too_long: 400/50035*"])


@pytest.mark.parametrize(("ci", "code"), [("true", 1), ("", 0)])
def test_a_skip_fails_the_run_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                       ci: str, code: int) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner="""
        import pytest

        def test_runs():
            pass

        def test_skips():
            pytest.skip("no GPU here")

        @pytest.mark.xfail(strict=True, reason="a known defect")
        def test_known_defect():
            assert False
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)
    assert result.ret == code
    result.stdout.fnmatch_lines(["*SKIPPED*no GPU here*"])
