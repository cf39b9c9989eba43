"""The database's cost per call on the bot's ack path: insert_job, update_job and get_job, as the engine makes
them for every job (median of repeats, in microseconds).

    python bench/storage.py                                   # SQLite in a temporary folder
    python bench/storage.py --url postgresql://user@/db?host=/run/postgresql
    python bench/storage.py --against old_storage.py          # and the same on another Storage, with the ratio

`--against` takes a file holding another version of bot/jobs/storage.py (for instance the aiosqlite one before
SQLAlchemy: `git show 6979185:bot/jobs/storage.py > /tmp/old_storage.py`), run on SQLite.
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


def show(title: str, result: dict[str, float]) -> None:
    print(title)
    for name, us in result.items():
        print(f"  {name:>10}: {us:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a DATABASE_URL to measure (default: SQLite in a temporary folder)")
    parser.add_argument("--against", help="another storage.py to measure on SQLite, with the ratio")
    parser.add_argument("--calls", type=int, default=500)
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


if __name__ == "__main__":
    main()
