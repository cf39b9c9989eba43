"""Gateways and workers as separate processes on one Postgres (issue 13), through the Discord-compatible server.

Two `natty run --role gateway` processes hold shards 0 and 1 of 2 and never generate; two `natty run --role
worker` processes connect to no gateway, claim jobs from the shared queue, and post results through the REST API.
The chat endpoint holds each request until the test lets it go, so the test sees which jobs run at once and in
which order: the lane limit and the fair rule hold over both workers together.
"""

import asyncio
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from bot.config import ConfigError, load_settings
from tests.fakediscord import FakeDiscord
from tests.harness import TOKEN
from tests.hf_server import HFTestServer
from tests.s3_server import Bucket
from tests.test_e2e_restart import bot_env, slow_chat_catalog, start_bot, stop_bots
from tests.test_e2e_results import same_pixels

GOOD_TOKEN = "MTAx" + "a" * 60


def shared_catalog(hf: HFTestServer, tmp_path: Path) -> Path:
    """A chat lane of concurrency 2, and the output classifier on the test server (the bundled one is on the
    Hugging Face router, which these processes cannot reach)."""
    return slow_chat_catalog(hf, tmp_path, name="shared-chat", path="/shared", concurrency=2, extra=f"""
[[model]]
name = "nsfw-detector"
task = "image-classification"
backend = "hf"
model = "{hf.endpoint("image-classification")}"
""")


def in_flight(hf: HFTestServer) -> list[str]:
    """The prompts of the chat requests the endpoint holds now (started, not let go)."""
    return [rec.json["messages"][-1]["content"] for rec, event in hf.held
            if not event.is_set() and "/shared/" in rec.path]


def held_prompts(hf: HFTestServer) -> list[str]:
    """The prompts of every chat request the endpoint has held, let go or not (a dead worker's included)."""
    return [rec.json["messages"][-1]["content"] for rec, _ in hf.held if "/shared/" in rec.path]


async def job_ids(pg_url: str) -> dict[str, str]:
    conn = await asyncpg.connect(pg_url)
    try:
        return {row["prompt"]: row["id"] for row in await conn.fetch("SELECT prompt, id FROM jobs")}
    finally:
        await conn.close()


async def rows(pg_url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def answered(ix) -> bool:  # noqa: ANN001
    return bool(ix.original and ix.original.content.startswith("You said") and "AI-generated" in ix.original.content)


def machine(env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    """A process's environment as if on a machine of its own: a data folder no other process reads."""
    return {**env, "NATTY_DATA_DIR": str(tmp_path / name)}


async def test_gateways_and_workers_share_one_fair_queue_and_lose_nothing(tmp_path, pg_url, s3_bucket: Bucket):
    async with FakeDiscord(token=TOKEN, shards=2) as server, HFTestServer() as hf:
        models = shared_catalog(hf, tmp_path)
        guilds = [server.add_guild(name=f"shard{k}", shard=k) for k in (0, 1)]
        chans = [server.add_channel(g) for g in guilds]
        alice = server.add_user("alice", guilds=guilds)
        bob = server.add_user("bob", guilds=guilds)
        env = bot_env(server, tmp_path, models, pg_url, HF_TOKEN="hf_" + "x" * 30, NATTY_LEASE_SECONDS="2",
                      NATTY_RESULTS_URL=s3_bucket.url, NATTY_S3_ENDPOINT=s3_bucket.endpoint,
                      **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")})
        genv = [machine(env, tmp_path, f"gateway{k}") for k in (0, 1)]
        wenv = [machine(env, tmp_path, f"worker{k}") for k in (0, 1)]
        glogs = [tmp_path / f"gateway{k}.log" for k in (0, 1)]
        wlogs = [tmp_path / f"worker{k}.log" for k in (0, 1)]
        gateways = [await start_bot(genv[0], glogs[0], "run", "--role", "gateway", "--shards", "0",
                                    "--shard-count", "2")]
        await server.ready(shards=1, timeout=60)  # one after the other: the first migrates the database
        gateways.append(await start_bot(genv[1], glogs[1], "run", "--role", "gateway", "--shards", "1",
                                        "--shard-count", "2"))
        workers: list[asyncio.subprocess.Process] = []
        try:
            await server.ready(shards=2, timeout=60)

            # no worker yet: the member is told so, in the message and in /jobs
            early = await server.slash(alice, chans[0], "chat", prompt="early bird", model="shared-chat")
            await early.wait_final(lambda ix: ix.original and "waiting for a worker for shared-chat"
                                   in ix.original.content, timeout=30)
            listing = await server.slash(alice, chans[0], "jobs")
            await server.wait_for(lambda: listing.original and listing.original.embeds, timeout=30)
            assert "waiting for a worker for shared-chat" in listing.original.embeds[0]["description"]

            hf.hold()
            workers = [await start_bot(wenv[k], wlogs[k], "run", "--role", "worker") for k in (0, 1)]
            await server.wait_for(lambda: in_flight(hf) == ["early bird"], timeout=60)
            await server.wait_for(lambda: all("serving" in log.read_text() for log in wlogs if log.exists())
                                  and all(log.exists() for log in wlogs), timeout=60)

            # alice floods shard 0; the lane runs two at once over both workers, never three
            flood = [await server.slash(alice, chans[0], "chat", prompt=f"flood {i}", model="shared-chat")
                     for i in range(4)]
            await server.wait_for(lambda: len(in_flight(hf)) == 2, timeout=30)
            light = await server.slash(bob, chans[1], "chat", prompt="light", model="shared-chat")
            await light.wait_final(lambda ix: ix.original and "Queued" in ix.original.content, timeout=30)
            await asyncio.sleep(1.0)
            assert sorted(in_flight(hf)) == ["early bird", "flood 0"]
            # a slot frees: bob, with nothing running, goes before alice's next flood job, whichever worker claims
            hf.release(1)
            await early.wait_final(answered, timeout=30)
            await server.wait_for(lambda: len(in_flight(hf)) == 2, timeout=30)
            assert sorted(in_flight(hf)) == ["flood 0", "light"]

            # the worker running bob's job dies; after its lease the other worker runs it again and posts it once
            ids = await job_ids(pg_url)
            holder = await server.wait_for(lambda: next((k + 1 for k in (0, 1)  # logs are written in batches
                                                         if f"claimed job {ids['light']}" in wlogs[k].read_text()),
                                                        None), timeout=30) - 1
            workers[holder].send_signal(signal.SIGKILL)
            await workers[holder].wait()
            survivor = 1 - holder
            # the dead worker's request stays held at the endpoint: the rerun is the second one light sends
            await server.wait_for(lambda: held_prompts(hf).count("light") == 2 and wlogs[survivor].read_text().count(
                f"claimed job {ids['light']}") == 1, timeout=30)
            hf.hold(False)
            hf.release(100)
            await light.wait_final(answered, timeout=60)
            for ix in flood:
                await ix.wait_final(answered, timeout=60)
            for ix in [early, light, *flood]:
                assert ix.followups == [] and ix.original.content.split("\n")[0].startswith("You said:")
            assert [ix.original.content.split("\n")[0] for ix in flood] == [f"You said: flood {i}" for i in range(4)]
            assert "queued again" in wlogs[survivor].read_text()
            done = await rows(pg_url, "SELECT prompt, state, delivered_at FROM jobs WHERE model = 'shared-chat'")
            prompts = ["early bird", "light", *(f"flood {i}" for i in range(4))]
            assert {r["prompt"]: r["state"] for r in done} == dict.fromkeys(prompts, "done")
            assert all(r["delivered_at"] is not None for r in done)
            # the gateways never generated: every chat request came from a worker
            for log in glogs:
                assert "claimed job" not in log.read_text() and "running on" not in log.read_text()

            # a cancel pressed in shard 1's server stops the job a worker runs
            hf.hold()
            slow = await server.slash(bob, chans[1], "chat", prompt="stop me", model="shared-chat")
            await server.wait_for(lambda: in_flight(hf) == ["stop me"], timeout=30)
            await server.wait_for(lambda: slow.original and slow.original.buttons, timeout=30)
            await (await server.press(bob, slow.original, label="Cancel")).acked()
            await slow.wait_final(lambda ix: ix.original and "Cancelled" in ix.original.content, timeout=30)
            hf.hold(False)
            hf.release(100)

            # /show in shard 0's server finds a result a worker stored
            shown = await server.slash(alice, chans[0], "show", job=ids["flood 1"])
            await server.wait_for(lambda: shown.original and "flood 1" in shown.original.content, timeout=30)
            # an image a worker made, shown by a gateway on another machine: the file comes from the object store
            image = await server.slash(alice, chans[1], "imagine", prompt="a red fox")
            await image.wait_final(lambda ix: ix.original and ix.original.attachments, timeout=60)
            (image_id,) = [r["id"] for r in await rows(pg_url, "SELECT id FROM jobs WHERE prompt = 'a red fox'")]
            assert f"results/{image_id}/image.png" in s3_bucket.keys()
            again = await server.slash(alice, chans[1], "show", job=image_id)
            await server.wait_for(lambda: again.original and again.original.attachments, timeout=30)
            assert same_pixels(again.original.attachments[0].data, image.original.attachments[0].data)
            # a button on that result, pressed in Discord: the gateway reads the picture from the store, a worker
            # varies it
            varied = await server.press(alice, image.original, label="Vary")
            await varied.wait_final(lambda ix: ix.original and ix.original.attachments, timeout=60)
            (varied_id,) = [r["id"] for r in await rows(pg_url, "SELECT id FROM jobs WHERE task = 'image-to-image'")]
            assert f"results/{varied_id}/image.png" in s3_bucket.keys()
            assert not any((tmp_path / name / "results").exists() for name in ("gateway0", "gateway1", "worker0",
                                                                                "worker1"))

            # everything restarts: nothing is lost, and a job after it runs
            await stop_bots(*gateways, *workers)
            gateways = [await start_bot(genv[k], glogs[k], "run", "--role", "gateway", "--shards", str(k),
                                        "--shard-count", "2") for k in (0, 1)]
            workers = [await start_bot(wenv[0], wlogs[0], "run", "--role", "worker", "--models", "shared-*")]
            await server.wait_for(lambda: len([s for s in server.sessions if s.open]) == 2, timeout=60)
            after = await server.slash(bob, chans[1], "chat", prompt="after restart", model="shared-chat")
            await after.wait_final(answered, timeout=60)
            states = await rows(pg_url, "SELECT state, count(*) AS n FROM jobs WHERE model = 'shared-chat' "
                                        "GROUP BY state")
            assert {r["state"]: r["n"] for r in states} == {"done": 7, "cancelled": 1}
            assert server.violations == []
        finally:
            await stop_bots(*gateways, *workers)


@pytest.mark.parametrize(("env", "expected"), [
    ({"NATTY_ROLE": "generator"}, "NATTY_ROLE='generator' must be all"),
    ({"NATTY_WORKER_MODELS": "natty-*"}, "only a worker (NATTY_ROLE=worker) serves models by list"),
    ({"NATTY_LEASE_SECONDS": "0.5"}, "NATTY_LEASE_SECONDS=0.5 must be at least 1"),
])
def test_bad_role_settings_stop_start_up_with_one_clear_line(env, expected):
    with pytest.raises(ConfigError) as err:
        load_settings({"DISCORD_TOKEN": GOOD_TOKEN, **env}, env_file=None)
    assert len(err.value.problems) == 1 and expected in err.value.problems[0]


async def test_a_gateway_and_a_worker_on_one_sqlite_file(tmp_path):
    """Roles without Postgres, on one machine: the worker polls the SQLite file for work (no notifications)."""
    async with FakeDiscord(token=TOKEN) as server, HFTestServer() as hf:
        models = shared_catalog(hf, tmp_path)
        guild = server.add_guild()
        chan = server.add_channel(guild)
        alice = server.add_user("alice", guilds=[guild])
        env = bot_env(server, tmp_path, models, f"sqlite:///{tmp_path}/natty.db", HF_TOKEN="hf_" + "x" * 30)
        gateway = await start_bot(env, tmp_path / "gateway.log", "run", "--role", "gateway")
        procs = [gateway]
        try:
            await server.ready(timeout=60)
            procs.append(await start_bot(env, tmp_path / "worker.log", "run", "--role", "worker"))
            ix = await server.slash(alice, chan, "chat", prompt="over sqlite", model="shared-chat")
            await ix.wait_final(answered, timeout=60)
            assert ix.original.content.startswith("You said: over sqlite") and ix.followups == []
            assert "claimed job" in (tmp_path / "worker.log").read_text()
            assert "claimed job" not in (tmp_path / "gateway.log").read_text()
            assert server.violations == []
        finally:
            await stop_bots(*procs)
