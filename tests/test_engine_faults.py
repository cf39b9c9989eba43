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


async def test_a_burst_of_newcomers_shares_one_recount_and_every_place_shown_is_right(tmp_path, monkeypatch):
    """Jobs that join a busy lane together are told their places after one recount of the lane, not one per
    newcomer; the first in a quiet moment hears at once; each waiting job's last shown place is its real one."""
    import bot.jobs.engine as engine_module

    async with HFTestServer() as hf:
        hf.hold()  # the lane's one slot stays busy, so everything after the first job waits
        engine = await _engine(tmp_path, hf, Limits(per_user=5, per_guild=500, cooldown=0))
        shown: dict[str, int] = {}

        class Listener:
            async def job_queued(self, job, position, eta, exact=True):  # noqa: ANN001
                shown[job.id] = position

            async def job_progress(self, job, progress):  # noqa: ANN001
                pass

            async def job_finished(self, job):  # noqa: ANN001
                pass

        engine.listeners.append(Listener())
        recounts: list[tuple[str, ...]] = []
        real = engine._announce_positions

        async def counted(*lanes: str) -> None:
            recounts.append(lanes)
            await real(*lanes)

        monkeypatch.setattr(engine, "_announce_positions", counted)
        try:
            first = await engine.submit(Job(user_id=1, task="text-to-image", model="img", prompt="first"))
            assert first.id in shown and len(recounts) == 1  # alone: told at once
            while not hf.held:
                await asyncio.sleep(0.01)
            await asyncio.sleep(engine_module.ANNOUNCE_COALESCE * 2)  # a quiet moment
            recounts.clear()
            burst = [Job(user_id=2 + i % 30, task="text-to-image", model="img", prompt=f"p{i}", guild_id=9)
                     for i in range(60)]
            await asyncio.gather(*(engine.submit(j) for j in burst))
            assert len(recounts) == 1 and burst[0].id in shown  # the first at once; 59 wait for one recount
            await asyncio.sleep(engine_module.ANNOUNCE_COALESCE * 3)
            assert len(recounts) == 2, recounts
            lane = engine.catalog.get("img").backend_key
            order = [job_id for job_id, _ in engine.scheduler.forecast(lane, 100)]
            assert len(order) == 60
            assert engine_module.ANNOUNCE_LIMIT < 60  # so some heard theirs past the recounted window
            assert [shown[job_id] for job_id in order] == list(range(1, 61))
        finally:
            hf.hold(False)
            hf.release(100)
            await engine.stop()
            await engine.storage.close()
