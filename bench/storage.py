"""The database's cost per call on the bot's ack path: insert_job, update_job and get_job, as the engine makes
them for every job (median of repeats, in microseconds).

    python bench/storage.py                                   # SQLite in a temporary folder
    python bench/storage.py --url postgresql://user@/db?host=/run/postgresql
    python bench/storage.py --against old_storage.py          # and the same on another Storage, with the ratio

`--against` takes a file holding another version of bot/jobs/storage.py (for instance the aiosqlite one before
SQLAlchemy: `git show 6979185:bot/jobs/storage.py > /tmp/old_storage.py`), run on SQLite.

Then, as in a busy bot (`--concurrent`, the default: on): 10 tasks make jobs (insert, update, get, a 2 ms pause)
while the loop itself is busy 1 ms in every 4 ms, and a 5 ms sleeper measures how late the loop wakes it. A
database thread that holds the interpreter lock long delays the loop, and the loop in turn delays that thread:
fewer jobs get through and the sleeper wakes later.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bot.jobs.job import Job, JobState  # noqa: E402

REPEATS = 7


def load_module(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("other_storage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def one_round(storage, calls: int) -> dict[str, float]:
    """Microseconds per insert_job, update_job, get_job and the three together, over `calls` new jobs."""
    jobs = [Job(user_id=1234567890123456789, guild_id=987654321098765432, channel_id=5, task="chat", model="m",
                prompt="a prompt of a few words", params={"seed": i}) for i in range(calls)]
    spent = {"insert_job": 0.0, "update_job": 0.0, "get_job": 0.0, "all three": 0.0}
    for job in jobs:
        t0 = time.perf_counter()
        await storage.insert_job(job)
        t1 = time.perf_counter()
        job.state, job.started_at = JobState.RUNNING, time.time()
        await storage.update_job(job, "state", "started_at")
        t2 = time.perf_counter()
        await storage.get_job(job.id)
        t3 = time.perf_counter()
        spent["insert_job"] += t1 - t0
        spent["update_job"] += t2 - t1
        spent["get_job"] += t3 - t2
        spent["all three"] += t3 - t0
    return {name: total / calls * 1e6 for name, total in spent.items()}


async def measure(storages: list, calls: int) -> list[dict[str, float]]:
    """The median over REPEATS rounds of each storage, the storages taking turns (so both see the same noise)."""
    for storage in storages:
        await storage.open()
        await one_round(storage, 20)  # warm: first statements compile, caches fill
    rounds: list[list[dict[str, float]]] = [[] for _ in storages]
    try:
        for _ in range(REPEATS):
            for i, storage in enumerate(storages):
                rounds[i].append(await one_round(storage, calls))
    finally:
        for storage in storages:
            await storage.close()
    return [{name: statistics.median(r[name] for r in runs) for name in runs[0]} for runs in rounds]


async def busy(storage, seconds: float = 4.0) -> dict[str, float]:
    """Jobs a second through 10 concurrent makers while the loop works, and the sleeper's lateness (ms)."""
    await storage.open()
    stop, lags, rounds = False, [], 0

    async def maker() -> None:
        nonlocal rounds
        while not stop:
            job = Job(user_id=1, task="chat", model="m", prompt="p")
            await storage.insert_job(job)
            job.state = JobState.RUNNING
            await storage.update_job(job, "state")
            await storage.get_job(job.id)
            rounds += 1
            await asyncio.sleep(0.002)

    async def loop_work() -> None:
        while not stop:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.001:
                pass
            await asyncio.sleep(0.003)

    async def sleeper() -> None:
        while not stop:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - t0 - 0.005) * 1000)

    tasks = [asyncio.create_task(maker()) for _ in range(10)]
    tasks += [asyncio.create_task(loop_work()), asyncio.create_task(sleeper())]
    try:
        await asyncio.sleep(seconds)
    finally:
        stop = True
        await asyncio.gather(*tasks)
        await storage.close()
    lags.sort()
    return {"jobs/s": rounds / seconds, "lateness p50 ms": statistics.median(lags),
            "lateness p99 ms": lags[int(len(lags) * 0.99)]}


def show(title: str, result: dict[str, float]) -> None:
    print(title)
    for name, us in result.items():
        print(f"  {name:>10}: {us:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a DATABASE_URL to measure (default: SQLite in a temporary folder)")
    parser.add_argument("--against", help="another storage.py to measure on SQLite, with the ratio")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--no-concurrent", dest="concurrent", action="store_false", help="skip the busy-bot part")
    args = parser.parse_args()
    import bot.jobs.storage as current

    with tempfile.TemporaryDirectory() as tmp:
        target: Path | str = args.url or Path(tmp) / "now.db"
        storages = [current.Storage(target, Path(tmp) / "data")]
        if args.against:
            storages.append(load_module(args.against).Storage(Path(tmp) / "before.db", Path(tmp) / "data"))
        results = asyncio.run(measure(storages, args.calls))
        where = "SQLite" if isinstance(target, Path) else args.url.split(":", 1)[0]
        show(f"this storage ({where}), per call, median of {REPEATS} rounds of {args.calls} jobs:", results[0])
        if args.against:
            show(f"{args.against} (SQLite):", results[1])
            print("ratio this / that:")
            for name in results[0]:
                print(f"  {name:>10}: {results[0][name] / results[1][name]:5.2f}x")
        if not args.concurrent:
            return
        makers = [lambda: current.Storage(target, Path(tmp) / "data")]
        if args.against:
            other = load_module(args.against)
            makers.append(lambda: other.Storage(Path(tmp) / "before.db", Path(tmp) / "data"))
        runs: list[list[dict[str, float]]] = [[] for _ in makers]
        for _ in range(3):  # taking turns
            for i, make in enumerate(makers):
                runs[i].append(asyncio.run(busy(make())))
        busy_results = [{k: statistics.median(r[k] for r in rs) for k in rs[0]} for rs in runs]
        print("a busy bot (10 job makers, the loop busy a quarter of the time), median of 3 runs of 4 s:")
        for label, result in zip(["this storage", args.against], busy_results, strict=False):
            print(f"  {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()))
        if args.against:
            print("  ratio this / that: " + ", ".join(
                f"{k} {busy_results[0][k] / busy_results[1][k]:.2f}x" for k in busy_results[0]))


if __name__ == "__main__":
    main()
