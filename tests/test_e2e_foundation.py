"""The bot starts, syncs, helps, and never leaves a user with "This interaction failed"."""

import asyncio

from tests.harness import Natty


async def test_startup_syncs_commands_once_and_help_lists_commands_and_models(tmp_path):
    async with Natty.running(tmp_path) as n:
        names = {c["name"] for c in n.server.commands[None]}
        assert {"help", "imagine", "chat", "speak", "music", "video", "describe", "transcribe", "jobs",
                "show", "Describe", "Transcribe"} <= names
        first_creations = n.server.command_creations
        ix = await n.server.slash(n.alice, n.general, "help")
        msg = await ix.response()
        assert msg.ephemeral
        text = msg.embeds[0]["description"] + msg.embeds[0]["fields"][0]["value"]
        assert "/imagine" in text and "test-text-to-image" in text
        await n.restart()  # same commands: no second sync
        assert n.server.command_creations == first_creations
        assert n.server.violations == []


async def test_an_exception_in_a_command_becomes_a_short_ephemeral_message(tmp_path):
    async with Natty.running(tmp_path) as n:
        async def broken(*args, **kwargs):
            raise RuntimeError("disk on fire")

        n.bot.storage.recent_jobs = broken
        ix = await n.server.slash(n.alice, n.general, "jobs")
        await ix.wait_final(lambda ix: any("went wrong" in m.content for m in ix.messages), timeout=10)
        message = next(m for m in ix.messages if "went wrong" in m.content)
        assert message.ephemeral
        assert "RuntimeError" in message.content and "disk on fire" not in message.content
        assert n.server.violations == []


async def test_a_slow_command_is_still_acknowledged_in_time(tmp_path):
    async with Natty.running(tmp_path) as n:
        real = n.bot.storage.recent_jobs

        async def slow(*args, **kwargs):
            await asyncio.sleep(n.server.ack_deadline + 1)
            return await real(*args, **kwargs)

        n.bot.storage.recent_jobs = slow
        ix = await n.server.slash(n.alice, n.general, "jobs")
        await ix.acked()
        assert ix.error is None
        await ix.wait_final(lambda ix: any("no jobs" in m.content for m in ix.messages), timeout=15)
        assert n.server.violations == []


async def test_sharded_bot_connects_every_shard_and_answers_in_each(tmp_path):
    async with Natty.running(tmp_path, shards=2) as n:
        other = n.server.add_guild(name="Second", shard=1 if n.guild.shard_id(2) == 0 else 0)
        await n.restart()
        assert {(s.shard_id, s.shard_count) for s in n.server.sessions if s.open} == {(0, 2), (1, 2)}
        assert {n.guild.shard_id(2), other.shard_id(2)} == {0, 1}
        chan = n.server.add_channel(other, name="lobby")
        carol = n.server.add_user("carol", guilds=[other])
        for user, channel in ((n.alice, n.general), (carol, chan)):
            ix = await n.server.slash(user, channel, "help")
            assert (await ix.response()).embeds
        assert n.server.violations == []


async def test_a_started_bot_keeps_the_garbage_collector_off_its_start_up_objects(tmp_path):
    """Once serving, collections skip what start-up made (gc.freeze) and the young generation is collected less
    often: in the ack bench a full collection had paused the loop for up to 230 ms while jobs ran."""
    import gc

    from bot.client import GC_THRESHOLDS

    async with Natty.running(tmp_path) as n:
        assert gc.isenabled() and gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 10_000  # discord.py, the catalog, the cogs...
        ix = await n.server.slash(n.alice, n.general, "help")
        msg = await n.final(ix)
        assert msg.embeds  # and it serves as before
