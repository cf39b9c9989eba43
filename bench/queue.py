"""The job queue's cost: scheduler time per job at 10, 1,000 and 100,000 queued, and event-loop lag while
real jobs run through the engine.

    python bench/queue.py

Prints medians of repeats. The scheduler must grow no faster than log n per job; the goal for the loop's
lag p99 while local models generate is under 20 ms.
"""

from __future__ import annotations

import os
import sys

# This file is named like the standard library's `queue`; take bench/ off the path before anything imports it.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import asyncio  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bot.jobs.engine import JobEngine, Limits  # noqa: E402
from bot.jobs.job import Job  # noqa: E402
from bot.jobs.scheduler import FairScheduler  # noqa: E402
from bot.jobs.storage import Storage  # noqa: E402
from models.backends import Backends  # noqa: E402
from models.catalog import load_catalog  # noqa: E402

REPEATS = 5


def scheduler_cost(queued: int, users: int = 100, probe: int = 1000) -> float:
    """Microseconds per push+pop+finish with `queued` jobs already waiting (median of repeats)."""
    samples = []
    for _ in range(REPEATS):
        s = FairScheduler()
        for i in range(queued):
            s.push("k", 1, i % users, f"q{i}")
        t0 = time.perf_counter()
        for i in range(probe):
            s.push("k", 1, i % users, f"p{i}")
            for _, job_id in s.pop_ready():
                s.finished(job_id)
        samples.append((time.perf_counter() - t0) / probe * 1e6)
    return statistics.median(samples)


async def loop_lag_while_generating(mode: str, jobs: int = 6) -> tuple[float, float, int]:
    """p50 and p99 lateness (ms) of a 10 ms sleeper while the engine runs local model jobs.

    `mode` is where the models run: "process" (natty's default worker process) or "thread" (in this process).
    """
    os.environ["NATTY_LOCAL_WORKER"] = mode
    catalog = load_catalog()
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp) / "bench.db", Path(tmp))
        await storage.open()
        engine = JobEngine(storage, catalog, Backends(), Limits(per_user=100, per_guild=100, cooldown=0))
        await engine.start()
        lags: list[float] = []
        done = asyncio.Event()

        async def sleeper() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.010)
                lags.append((time.perf_counter() - t0 - 0.010) * 1000)

        probe = asyncio.create_task(sleeper())
        submitted = []
        for i in range(jobs):
            task, model, prompt = [("text-to-image", "natty-pixelcnn", str(i % 10)),
                                   ("chat", "natty-rnn", "The sea"),
                                   ("text-to-audio", "natty-wavenet", "a chord")][i % 3]
            job = Job(user_id=i % 3, task=task, model=model, prompt=prompt,
                      params={"seed": i, "model_params": {"seconds": 0.25, "max_new_tokens": 200}})
            submitted.append(await engine.submit(job, check_limits=False))
        finished = [await engine.wait(j.id, timeout=600) for j in submitted]
        done.set()
        await probe
        await engine.stop()
        await storage.close()
    lags.sort()
    ok = sum(1 for j in finished if j.state.value == "done")
    return statistics.median(lags), lags[int(len(lags) * 0.99) - 1], ok


def main() -> None:
    print("scheduler cost per job (push + pop + finish), median of", REPEATS)
    base = None
    for n in (10, 1_000, 100_000):
        us = scheduler_cost(n)
        base = base or us
        print(f"  {n:>7,} queued: {us:6.2f} us/job  ({us / base:4.2f}x the cost at 10)")
    print("event-loop lag while local models generate (a 10 ms sleeper's lateness; median of 3 runs):")
    results = {}
    for mode in ("thread", "process"):
        runs = [asyncio.run(loop_lag_while_generating(mode)) for _ in range(3)]
        p50 = statistics.median(r[0] for r in runs)
        p99 = statistics.median(r[1] for r in runs)
        results[mode] = p99
        print(f"  models in a {mode:7}: p50 {p50:6.2f} ms, p99 {p99:7.2f} ms, {runs[0][2]} jobs done per run")
    print(f"  p99 thread / worker process: {results['thread'] / results['process']:.1f}x (goal p99 < 20 ms)")


if __name__ == "__main__":
    main()
