"""Two `python -m bot run --shards K --shard-count 2` processes on one database: each answers the servers of its
own shard, and after a crash each recovers only its own jobs (the other process leaves them alone)."""

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.shards import ShardSet, parse_shard_ids, shard_of
from tests.fakediscord import FakeDiscord
from tests.harness import TOKEN
from tests.hf_server import HFTestServer
from tests.test_e2e_restart import bot_env, slow_chat_catalog, start_bot, stop_bots

ROOT = Path(__file__).resolve().parents[1]
GOOD_TOKEN = "MTAx" + "a" * 60


async def start_shard(env: dict[str, str], log: Path, shard: int) -> asyncio.subprocess.Process:
    return await start_bot(env, log, "run", "--shards", str(shard), "--shard-count", "2")


def job_rows(db: Path) -> dict[str, tuple[str, int]]:
    """prompt -> (state, attempts) of every chat job in the shared database."""
    with sqlite3.connect(db) as conn:
        return {prompt: (state, attempts)
                for prompt, state, attempts in conn.execute("SELECT prompt, state, attempts FROM jobs")}


async def test_two_processes_split_the_shards_and_recover_only_their_own_jobs(tmp_path):
    async with FakeDiscord(token=TOKEN, shards=2) as server, HFTestServer(token_delay=0.15) as hf:
        models = slow_chat_catalog(hf, tmp_path)
        guilds = [server.add_guild(name=f"shard{k}", shard=k) for k in (0, 1)]
        chans = [server.add_channel(g) for g in guilds]
        alice = server.add_user("alice", guilds=guilds)
        db = tmp_path / "natty.db"
        env = bot_env(server, tmp_path, models, f"sqlite:///{db}", HF_TOKEN="hf_" + "x" * 30)
        logs = [tmp_path / "shard0.log", tmp_path / "shard1.log"]
        procs = [await start_shard(env, logs[0], 0)]
        await server.ready(shards=1, timeout=60)  # one after the other: the first migrates the database
        procs.append(await start_shard(env, logs[1], 1))
        try:
            await server.ready(shards=2, timeout=60)
            assert {(s.shard_id, s.shard_count) for s in server.sessions if s.open} == {(0, 2), (1, 2)}

            # a command in each server: answered once, by the process of that server's shard
            quick = [await server.slash(alice, chans[k], "chat", prompt=f"hello {k}", model="slow-chat")
                     for k in (0, 1)]
            for ix in quick:
                await ix.wait_final(lambda ix: ix.original and ix.original.content.startswith("You said")
                                    and "AI-generated" in ix.original.content, timeout=60)
            for ix in quick:
                assert len([c for _t, c in ix.callbacks if c.get("type") == 5]) == 1 and ix.followups == []
            with sqlite3.connect(db) as conn:
                ids = dict(conn.execute("SELECT prompt, id FROM jobs"))
            for k in (0, 1):
                assert ids[f"hello {k}"] in logs[k].read_text()
                assert ids[f"hello {k}"] not in logs[1 - k].read_text()

            # shard 0's process dies with its job streaming and another queued
            words = " ".join(f"w{i}" for i in range(25))
            mine = [await server.slash(alice, chans[0], "chat", prompt=f"zero {words}", model="slow-chat"),
                    await server.slash(alice, chans[0], "chat", prompt=f"zero again {words}", model="slow-chat")]
            await server.wait_for(lambda: mine[0].original and "You said" in mine[0].original.content, timeout=30)
            procs[0].send_signal(signal.SIGKILL)
            await procs[0].wait()
            # shard 1's process restarts meanwhile: its recovery must not take shard 0's jobs
            procs[1].terminate()
            await procs[1].wait()
            procs[1] = await start_shard(env, logs[1], 1)
            await server.wait_for(lambda: [s for s in server.sessions if s.open and s.shard_id == 1], timeout=60)
            await server.wait_for(lambda: "ready to serve" in logs[1].read_text().split("hello 1")[-1], timeout=60)
            other = await server.slash(alice, chans[1], "chat", prompt="still here", model="slow-chat")
            await other.wait_final(lambda ix: ix.original and "AI-generated" in ix.original.content, timeout=60)
            rows = job_rows(db)
            assert rows[f"zero {words}"][0] == "running" and rows[f"zero again {words}"][0] == "queued"
            with sqlite3.connect(db) as conn:
                stuck = [jid for (jid,) in conn.execute("SELECT id FROM jobs WHERE prompt LIKE 'zero%'")]
            text1 = logs[1].read_text()
            assert not any(jid in text1 for jid in stuck)
            assert "0 jobs recovered" in text1

            # the owner comes back and finishes its own jobs, each once
            procs[0] = await start_shard(env, logs[0], 0)
            for ix in mine:
                await ix.wait_final(lambda ix: ix.original and ix.original.content.startswith("You said")
                                    and "AI-generated" in ix.original.content, timeout=60)
            assert [ix.original.content.split("\n")[0] for ix in mine] == [
                f"You said: zero {words}", f"You said: zero again {words}"]
            assert all(ix.followups == [] for ix in mine)
            rows = job_rows(db)
            assert rows[f"zero {words}"] == ("done", 2) and rows[f"zero again {words}"][0] == "done"
            assert "recovered into the queue" in logs[0].read_text()
            assert server.violations == []
        finally:
            await stop_bots(*procs)


def test_a_servers_jobs_belong_to_the_shard_discord_sends_its_events_to():
    guild = (12345 << 22) | 99
    assert shard_of(guild, 8) == 12345 % 8 and shard_of(None, 8) == 0
    assert ShardSet(8, frozenset({12345 % 8})).owns(guild) and not ShardSet(8, frozenset({7 - 12345 % 8})).owns(guild)
    assert ShardSet(2, frozenset({0})).owns(None) and not ShardSet(2, frozenset({1})).owns(None)
    assert parse_shard_ids("0-3") == [0, 1, 2, 3] and parse_shard_ids("5,0,2") == [0, 2, 5]


@pytest.mark.parametrize(("env", "expected"), [
    ({"NATTY_SHARD_IDS": "0-3"}, "NATTY_SHARD_IDS='0-3' needs NATTY_SHARD_COUNT"),
    ({"NATTY_SHARD_IDS": "0,8", "NATTY_SHARD_COUNT": "8"}, "names shard 8, but with NATTY_SHARD_COUNT=8 the shards "
                                                            "are 0 to 7"),
    ({"NATTY_SHARD_IDS": "3-1", "NATTY_SHARD_COUNT": "8"}, "must be shard ids like 0-3 or 0,2,5"),
    ({"NATTY_SHARD_IDS": "a", "NATTY_SHARD_COUNT": "8"}, "must be shard ids like 0-3 or 0,2,5"),
])
def test_bad_shard_settings_stop_start_up_with_one_clear_line(env, expected):
    with pytest.raises(ConfigError) as err:
        load_settings({"DISCORD_TOKEN": GOOD_TOKEN, **env}, env_file=None)
    assert len(err.value.problems) == 1 and expected in err.value.problems[0]


def test_shard_ids_make_a_sharded_bot_over_those_shards():
    s = load_settings({"DISCORD_TOKEN": GOOD_TOKEN, "NATTY_SHARD_IDS": "0-1,5", "NATTY_SHARD_COUNT": "8"},
                      env_file=None)
    assert s.sharded and s.shard_ids == (0, 1, 5) and s.shards == ShardSet(8, frozenset({0, 1, 5}))
    assert load_settings({"DISCORD_TOKEN": GOOD_TOKEN}, env_file=None).shards.owns(123)


def test_natty_run_names_the_flag_that_is_wrong(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DISCORD_TOKEN": GOOD_TOKEN}
    proc = subprocess.run([sys.executable, "-m", "bot", "run", "--shards", "0-3", "--shard-count", "2"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--shards='0-3' names shard 2, but with --shard-count=2 the shards are 0 to 1" in proc.stderr
