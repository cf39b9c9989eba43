"""The real `python -m bot` process, killed with SIGKILL mid-job: every job is delivered or reported after the
restart, and no secret ever reaches its logs."""

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.fakediscord import FakeDiscord
from tests.harness import TOKEN, catalog_for
from tests.hf_server import HFTestServer

HF_SECRET = "hf_" + "S3cr3tK3y" * 4


def bot_env(server: FakeDiscord, tmp_path: Path, models: Path, database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `python -m bot` process against the fake Discord: no secret of this machine, the
    given database and catalog, a short guild-ready wait, debug logs."""
    return {**{k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_KEY"))},
            "DISCORD_TOKEN": TOKEN, "DISCORD_API_BASE": server.api_base, "DISCORD_GATEWAY_URL": server.gateway_url,
            "DATABASE_URL": database_url, "NATTY_DATA_DIR": str(tmp_path / "data"), "NATTY_MODELS": str(models),
            "NATTY_GUILD_READY_TIMEOUT": "0.05", "NATTY_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1", **extra}


async def start_bot(env: dict[str, str], log: Path, *args: str) -> asyncio.subprocess.Process:
    """`python -m bot` (with `args`, e.g. `run --shards 0 --shard-count 2`) as a process of its own."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=Path(__file__).resolve().parents[1], env=env,
        stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT)


async def stop_bots(*procs: asyncio.subprocess.Process) -> None:
    """Terminate the bot processes still running and wait for each to end."""
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


def slow_chat_catalog(hf: HFTestServer, tmp_path: Path, *, name: str = "slow-chat", path: str = "",
                      concurrency: int = 1, extra: str = "") -> Path:
    """A catalog with one chat model on the test HF server (at `path` under it: a lane of its own) that serves
    `concurrency` requests at a time, and `extra` entries."""
    models = tmp_path / "models.toml"
    models.write_text(catalog_for(hf, f"""
[[model]]
name = "{name}"
task = "chat"
backend = "hf"
model = "{hf.url}{path}"
concurrency = {concurrency}
""" + extra))
    return models


async def test_sigkill_with_running_and_queued_jobs_loses_nothing(tmp_path):
    async with FakeDiscord(token=TOKEN) as server, HFTestServer(token_delay=0.15) as hf:
        models = slow_chat_catalog(hf, tmp_path)
        guild = server.add_guild()
        chan = server.add_channel(guild)
        alice = server.add_user("alice", guilds=[guild])
        bob = server.add_user("bob", guilds=[guild])
        env = bot_env(server, tmp_path, models, f"sqlite:///{tmp_path}/natty.db", HF_TOKEN=HF_SECRET)
        log = tmp_path / "bot.log"
        proc = await start_bot(env, log)
        try:
            await server.ready(timeout=60)
            words = " ".join(f"w{i}" for i in range(25))
            ixs = [await server.slash(alice, chan, "chat", prompt=f"alice {words}", model="slow-chat"),
                   await server.slash(alice, chan, "chat", prompt=f"alice again {words}", model="slow-chat"),
                   await server.slash(bob, chan, "chat", prompt=f"bob {words}", model="slow-chat")]
            # the first is streaming (its message shows text) and the others wait in the queue
            await server.wait_for(lambda: ixs[0].original and "You said" in ixs[0].original.content, timeout=30)
            # a queued job shows its place after the presenter's first-position delay
            await server.wait_for(lambda: ixs[2].original and "Queued" in ixs[2].original.content, timeout=30)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = await start_bot(env, log)
            for ix in ixs:
                await ix.wait_final(lambda ix: ix.original and ix.original.content.startswith("You said")
                                    and "AI-generated" in ix.original.content, timeout=60)
            assert [ix.original.content.split("\n")[0] for ix in ixs] == [
                f"You said: alice {words}", f"You said: alice again {words}", f"You said: bob {words}"]
            assert server.violations == []
        finally:
            await stop_bots(proc)
        text = log.read_text()
        assert "recovered into the queue" in text and "running it again" in text
        assert TOKEN not in text and HF_SECRET not in text
        assert "invite the bot with https://discord.com/oauth2/authorize?client_id=" in text
