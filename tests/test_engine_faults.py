"""The engine under races and faults: caps that hold for simultaneous requests, and a database or disk that
fails mid-job still ends the job with a message and frees its slot."""

import asyncio
import errno
import sqlite3

import pytest

from bot.jobs.engine import JobEngine, LimitHit, Limits
from bot.jobs.job import Job, JobState
from bot.jobs.storage import Storage
from models.backends import Backends
from models.catalog import load_catalog
from tests.hf_server import HFTestServer


async def _engine(tmp_path, hf: HFTestServer, limits: Limits) -> JobEngine:
    extra = tmp_path / "models.toml"
    extra.write_text(f"""
[[model]]
name = "img"
task = "text-to-image"
backend = "hf"
model = "{hf.endpoint('text-to-image')}"
concurrency = 1
""")
    storage = Storage(tmp_path / "natty.db", tmp_path / "data")
    await storage.open()
    engine = JobEngine(storage, load_catalog(extra), Backends(), limits)
    await engine.start(recover=False)
    return engine


async def test_simultaneous_requests_cannot_all_pass_a_cap_of_one(tmp_path):
    async with HFTestServer() as hf:
        hf.hold()
        engine = await _engine(tmp_path, hf, Limits(per_user=1, per_guild=50, cooldown=30))
        try:
            jobs = [Job(user_id=1, task="text-to-image", model="img", prompt=f"p{i}", guild_id=9) for i in range(6)]
            results = await asyncio.gather(*(engine.submit(j) for j in jobs), return_exceptions=True)
            refused = [r for r in results if isinstance(r, LimitHit)]
            assert len(refused) == 5 and len(engine.active) == 1
        finally:
            hf.hold(False)
            hf.release(10)
            await engine.stop()
            await engine.storage.close()


@pytest.mark.parametrize("fault", ["locked-once", "disk-full"])
async def test_a_fault_after_the_job_starts_ends_it_and_frees_the_slot(tmp_path, monkeypatch, fault):
    async with HFTestServer() as hf:
        engine = await _engine(tmp_path, hf, Limits(per_user=5, per_guild=50, cooldown=0))
        try:
            if fault == "locked-once":
                real = engine.storage.update_job
                calls = {"n": 0}

                async def flaky(job, *fields):  # noqa: ANN001, ANN002
                    calls["n"] += 1
                    if calls["n"] == 1:
                        raise sqlite3.OperationalError("database is locked")
                    return await real(job, *fields)

                monkeypatch.setattr(engine.storage, "update_job", flaky)
            else:
                def full(job, result):  # noqa: ANN001
                    raise OSError(errno.ENOSPC, "No space left on device")

                monkeypatch.setattr(engine, "_save_result", full)
            first = await engine.submit(Job(user_id=1, task="text-to-image", model="img", prompt="one"))
            done = await engine.wait(first.id, timeout=30)
            if fault == "locked-once":
                assert done.state is JobState.DONE and done.result["files"]
            else:
                assert done.state is JobState.FAILED and "could not be saved" in done.error
            # the lane's only slot is free again: the next job runs
            monkeypatch.undo()
            second = await engine.submit(Job(user_id=1, task="text-to-image", model="img", prompt="two"))
            assert (await engine.wait(second.id, timeout=30)).state is JobState.DONE
            assert engine.scheduler.running(engine.catalog.get("img").backend_key) == 0
        finally:
            await engine.stop()
            await engine.storage.close()
