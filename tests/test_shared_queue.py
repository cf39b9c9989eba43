"""The shared queue (bot.jobs.shared) on SQLite and a real Postgres: the fair rule as the in-memory scheduler
runs it, the lane limit over several workers, leases, reaping, cancels and delivery hand-over."""

import random
from pathlib import Path

import pytest

from bot.jobs.job import Job, JobState
from bot.jobs.scheduler import FairScheduler
from bot.jobs.shared import SharedQueue
from bot.jobs.storage import Storage

LANE = "lane-a"


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request, tmp_path):
    """Two Storage objects on one database: two processes' views of it."""
    target = Path(tmp_path / "natty.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = []
    for name in ("a", "b"):
        store = Storage(target, tmp_path / f"data-{name}")
        await store.open()
        opened.append(store)
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def queued(store: Storage, user: int, prompt: str = "p", **params) -> Job:
    job = Job(user_id=user, task="chat", model="m", prompt=prompt, guild_id=1, params=params)
    await store.insert_job(job)
    return job


async def test_claims_follow_the_fair_rule_exactly_as_the_in_memory_scheduler(stores):
    """A random run of arrivals, claims and ends: the shared queue starts the same jobs in the same order as
    bot.jobs.scheduler's FairScheduler given the same events."""
    store = stores[0]
    queue = SharedQueue(store)
    memory = FairScheduler()
    rng = random.Random(7)
    limit = 3
    running: list[Job] = []
    shared_order: list[str] = []
    memory_order: list[str] = []
    for step in range(300):
        action = rng.random()
        if action < 0.5:
            user = rng.choice([1, 2, 3, 4, 5, 5, 5])  # user 5 floods
            job = await queued(store, user, f"s{step}")
            assert await queue.publish(job, LANE, limit)
            memory.push(LANE, limit, user, job.id)
        elif action < 0.8 or not running:
            claimed = await queue.claim(LANE, "w1", lease=60)
            started = memory.pop_ready()
            if claimed is None:
                assert started == []
                continue
            assert started, "the shared queue started a job the scheduler would not"
            shared_order.append(claimed.id)
            memory_order.append(started[0][1])
            for _lane, extra in started[1:]:  # the scheduler fills every free slot at once: claim them too
                more = await queue.claim(LANE, "w1", lease=60)
                assert more is not None
                shared_order.append(more.id)
                memory_order.append(extra)
                running.append(more)
            running.append(claimed)
            assert shared_order == memory_order
        else:
            done = running.pop(rng.randrange(len(running)))
            done.state = JobState.DONE
            assert await queue.finish(done, "w1", deliver=True, lease=60)
            memory.finished(done.id)
    assert len(shared_order) > 50 and shared_order == memory_order


async def test_the_lane_limit_holds_over_two_workers_and_a_free_slot_goes_to_either(stores):
    a, b = SharedQueue(stores[0]), SharedQueue(stores[1])
    jobs = [await queued(stores[0], user) for user in (1, 2, 3, 4)]
    for job in jobs:
        await a.publish(job, LANE, 2)
    first = await a.claim(LANE, "wa", lease=60)
    second = await b.claim(LANE, "wb", lease=60)
    assert first is not None and second is not None and first.id != second.id
    assert await a.claim(LANE, "wa", lease=60) is None and await b.claim(LANE, "wb", lease=60) is None
    second.state = JobState.DONE
    assert await b.finish(second, "wb", deliver=True, lease=60)
    third = await a.claim(LANE, "wa", lease=60)
    assert third is not None and third.id not in (first.id, second.id)
    assert await b.claim(LANE, "wb", lease=60) is None


async def test_a_dead_workers_job_goes_back_and_its_late_result_is_dropped(stores):
    a, b = SharedQueue(stores[0]), SharedQueue(stores[1])
    job = await queued(stores[0], 1)
    await a.publish(job, LANE, 1)
    held = await a.claim(LANE, "dead", lease=5, now=1000.0)
    assert held is not None
    # the lease is still good: nothing is reaped
    assert await b.reap("alive", max_attempts=2, lease=5, failure=lambda j: "x", now=1004.0) == ([], [])
    requeued, failed = await b.reap("alive", max_attempts=2, lease=5, failure=lambda j: "x", now=1006.0)
    assert [j.id for j in requeued] == [job.id] and failed == []
    again = await b.claim(LANE, "alive", lease=60)
    assert again is not None and again.id == job.id
    # the first worker was only slow: its result must not be recorded or posted
    held.state = JobState.DONE
    held.result = {"kind": "text", "text": "late"}
    assert not await a.finish(held, "dead", deliver=True, lease=60)
    assert (await stores[0].get_job(job.id)).state is JobState.RUNNING


async def test_a_job_interrupted_too_often_fails_with_a_message_and_is_held_for_delivery(stores):
    queue = SharedQueue(stores[0])
    job = await queued(stores[0], 1)
    await queue.publish(job, LANE, 1)
    await queue.claim(LANE, "w1", lease=5, now=1000.0)
    await stores[0].update_job(Job(**{**job.__dict__, "attempts": 2, "state": JobState.RUNNING}), "attempts")
    requeued, failed = await queue.reap("w2", max_attempts=2, lease=60, failure=lambda j: "restarted twice",
                                        now=2000.0)
    assert requeued == [] and [j.id for j in failed] == [job.id]
    record = await stores[0].get_job(job.id)
    assert record.state is JobState.FAILED and record.error == "restarted twice"
    # its slot is free again
    other = await queued(stores[0], 2)
    await queue.publish(other, LANE, 1)
    assert (await queue.claim(LANE, "w2", lease=60)).id == other.id


async def test_a_delivery_left_half_done_is_taken_over_once(stores):
    a, b = SharedQueue(stores[0]), SharedQueue(stores[1])
    job = await queued(stores[0], 1)
    await a.publish(job, LANE, 1)
    held = await a.claim(LANE, "wa", lease=5, now=1000.0)
    held.state = JobState.DONE
    assert await a.finish(held, "wa", deliver=True, lease=5, now=1001.0)
    assert await b.take_deliveries("wb", lease=60, now=1003.0) == []  # still held by wa
    taken = await b.take_deliveries("wb", lease=60, now=1007.0)
    assert [j.id for j in taken] == [job.id]
    assert await a.take_deliveries("wa", lease=60, now=1010.0) == []  # wb holds it now
    await stores[1].mark_delivered(job.id, "interaction")
    assert await a.take_deliveries("wa", lease=60, now=10**10) == []


async def test_cancels_queued_at_once_and_running_by_asking_the_worker(stores):
    queue = SharedQueue(stores[0])
    run, wait = await queued(stores[0], 1), await queued(stores[0], 1)
    for job in (run, wait):
        await queue.publish(job, LANE, 1)
    assert (await queue.claim(LANE, "w1", lease=60)).id == run.id
    assert await queue.cancel_queued(wait, "Cancelled.")
    assert not await queue.cancel_queued(run, "Cancelled.")  # running: not the gateway's to end
    assert (await stores[0].get_job(wait.id)).state is JobState.CANCELLED
    assert await queue.request_cancel(run.id)
    assert await queue.renew("w1", 60, ["m"]) == [run.id]
    assert await queue.renew("w2", 60, ["m"]) == []
    run.state = JobState.CANCELLED
    assert await queue.finish(run, "w1", deliver=True, lease=60)
    assert await queue.claim(LANE, "w1", lease=60) is None  # the cancelled one is not claimed


async def test_standing_is_a_lower_bound_of_the_jobs_that_start_first(stores):
    queue = SharedQueue(stores[0])
    flood = [await queued(stores[0], 9, f"f{i}") for i in range(5)]
    for job in flood:
        await queue.publish(job, LANE, 1)
    light = await queued(stores[0], 2)
    # before it is published: nobody else has been served, so only user 9's rank is ahead
    assert (await queue.standing(light, LANE, published=False)).ahead == 1
    await queue.publish(light, LANE, 1)
    assert (await queue.standing(light, LANE)).ahead == 1
    assert (await queue.standing(flood[3], LANE)).ahead == 3
    assert (await queue.claim(LANE, "w", lease=60)).id == flood[0].id
    # user 9 now runs a job: the light user's first job goes next
    assert (await queue.standing(light, LANE)).ahead == 0


async def test_workers_are_seen_while_they_beat(stores):
    queue = SharedQueue(stores[0])
    await queue.renew("w1", 30, ["natty-pixelcnn", "slow-chat"], now=1000.0)
    assert await queue.live_workers(30, now=1010.0) == {"w1": ["natty-pixelcnn", "slow-chat"]}
    assert await queue.live_workers(30, now=1100.0) == {}
    await queue.leave("w1")
    assert await queue.live_workers(10**10, now=1010.0) == {}


async def test_metrics_show_the_shared_queue_and_a_workers_leases(stores):
    from prometheus_client import CollectorRegistry, generate_latest

    from bot.jobs.roles import WorkerEngine
    from bot.ops import _QueueCollector
    from models.backends import Backends
    from models.catalog import Catalog, ModelEntry

    entry = ModelEntry(name="m", task="chat", backend="hf", model="http://127.0.0.1:9/chat", concurrency=1)
    worker = WorkerEngine(stores[1], Catalog({"m": entry}), Backends(), lambda job: None)
    queue = SharedQueue(stores[0])
    for user in (1, 2, 3):
        await queue.publish(await queued(stores[0], user), entry.backend_key, 1)
    await queue.claim(entry.backend_key, worker.me, lease=60)
    registry = CollectorRegistry()
    registry.register(_QueueCollector(worker))
    await worker.refresh_counts()
    text = generate_latest(registry).decode()
    assert 'natty_queue_depth{lane="hf:http://127.0.0.1:9/chat"} 2.0' in text
    assert 'natty_jobs_running{lane="hf:http://127.0.0.1:9/chat"} 1.0' in text
    assert "natty_worker_leases 0.0" in text  # claimed through the queue here, not run by this engine's tasks


async def test_caps_and_the_cooldown_hold_over_two_gateways(stores):
    """A member whose commands land on two gateway processes gets the caps of one: gateway B counts the jobs
    gateway A admitted (the shared table), and A's last admission starts B's cooldown."""
    import time

    from bot.jobs.engine import Limits
    from bot.jobs.roles import GatewayEngine
    from models.backends import Backends
    from models.catalog import Catalog, ModelEntry

    entry = ModelEntry(name="m", task="chat", backend="hf", model="http://127.0.0.1:9/chat", concurrency=1)
    limits = Limits(per_user=2, per_guild=3, cooldown=0.0)
    gateway_b = GatewayEngine(stores[1], Catalog({"m": entry}), Backends(), lambda job: limits)

    def ask(user: int) -> Job:
        return Job(user_id=user, task="chat", model="m", prompt="p", guild_id=1)

    assert await gateway_b._check_limits(ask(5)) is None
    for _ in range(2):  # admitted by gateway A: B has none of them in its memory
        await stores[0].insert_submitted(ask(5), time.time())
    refused = await gateway_b._check_limits(ask(5))
    assert refused is not None and "2" in refused
    assert await gateway_b._check_limits(ask(6)) is None  # another member of the server still may
    await queued(stores[0], 7)
    refused = await gateway_b._check_limits(ask(6))  # the server's three are open now
    assert refused is not None and "3" in refused

    limits = Limits(per_user=10, per_guild=10, cooldown=60.0)
    await stores[0].record_job_start(8, 1, time.time())  # member 8's last job, admitted by A just now
    refused = await gateway_b._check_limits(ask(8))
    assert refused is not None and ("60" in refused or "59" in refused)
    assert await gateway_b._check_limits(ask(8), cooldown=False) is None  # a story's further scenes
