"""Scale-out on Postgres (bot.jobs.shared): the claim's cost as the queue grows, and throughput with 1, 2 and 4
worker processes against an endpoint that serves 8 requests at once.

    python bench/scale.py            # 10 / 10,000 / 100,000 queued; 3 repeats of 4 s per worker setting
    python bench/scale.py --quick    # 10 / 10,000 queued; 2 repeats of 2.5 s

Starts its own PostgreSQL (tests/postgres.py's initdb/pg_ctl, in a temporary folder removed at the end).

1. Claim cost: one lane holding N queued jobs spread over min(N, max(5, N/10)) users (N = 10: SharedQueue.publish
   one by one; larger N: COPY into jobs, lane_users and lanes, written as publish writes them, then ANALYZE as
   autovacuum would). Each probe publishes one more job of an existing user (so N stays N), claims one and
   finishes it: p50 and p99 ms of claim and of finish, median of repeats. Goal: claim p99 < 5 ms at 100,000.

2. Throughput: an aiohttp endpoint (in this process) that answers each request after 75 ms and counts how many it
   serves at once (its peak must never pass the lane's concurrency, 8). W worker processes (this file run with
   --worker) each run `cap` claim loops: SharedQueue.claim, one request to the endpoint, SharedQueue.finish, a
   NOTIFY natty_done; an idle loop wakes on natty_jobs / natty_done (LISTEN) or after 0.5 s. This is a minimal
   loop on the shared queue, not bot.jobs.roles.WorkerEngine: the engine claims while the lane has a free slot,
   so one engine alone takes all 8 slots and there is no per-worker cap to show scaling with. cap 2: one worker
   uses 2 of the 8 slots, two use 4, four use all 8 (the endpoint has free capacity up to 4 workers); cap 8:
   every worker could fill the lane alone (one worker saturates it; more add nothing). A heavy user has 1,500
   jobs queued at the start; a light user's first job arrives every 50 ms during the run. Prints jobs/s (jobs
   finished after a 0.5 s warm-up), the ratio to W = 1, and the p99 wait of the light users' first jobs (claim
   time - creation time; one still unclaimed when the run ends counts as waiting until then), medians of
   repeats. Goal: 2 workers >= 1.8x one while the endpoint has free capacity.

Claims, finishes and publishes that Postgres aborts as a deadlock (40P01) are retried as the engine's _retry does
(bot.jobs.database.is_busy) and counted. Postgres looks for a deadlock only after deadlock_timeout (1 s by
default), so each one stalls the lane that long: `--deadlock-timeout 10` runs the same with 10 ms, which shows
how much of the throughput the conflicts cost.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder leads sys.path, where bench/queue.py would shadow the standard library's queue.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import itertools  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402

from bot.jobs.database import is_busy  # noqa: E402
from bot.jobs.job import Job, JobState, new_job_id  # noqa: E402
from bot.jobs.shared import DONE, JOBS, NEVER, PostgresSignals, SharedQueue  # noqa: E402
from bot.jobs.storage import Storage  # noqa: E402

LANE = "bench-lane"
CONCURRENCY = 8  # the lane's, and what the endpoint can serve at once
DELAY = 0.075  # seconds the endpoint takes per request
HEAVY = 1, 1_500  # the heavy user, and how many jobs it has queued at the start
LIGHT_EVERY = 0.050  # a light user's first job arrives this often during a run
WARM = 0.5  # seconds of each run not counted in its throughput


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# --- filling a lane -------------------------------------------------------------------------------------


async def bulk_queue(url: str, owners: list[int], concurrency: int = CONCURRENCY) -> None:
    """Queue one job per entry of `owners` (a user id each) in LANE, in that order, as SharedQueue.publish
    would leave them: the jobs' rows, each user's lane_users row (queued = its jobs, served = NEVER + the lane
    seq of its first job) and the lane's row (seq = the number of jobs published)."""
    now = time.time()
    jobs: list[tuple[Any, ...]] = []
    first: dict[int, int] = {}
    queued: dict[int, int] = {}
    for seq, user in enumerate(owners, start=1):
        jobs.append((new_job_id(), user, "chat", "m", "p", "{}", "queued", now + seq * 1e-6, 0, 0, LANE, 0))
        first.setdefault(user, seq)
        queued[user] = queued.get(user, 0) + 1
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("jobs", records=jobs, columns=[
                "id", "user_id", "task", "model", "prompt", "params", "state", "created_at", "ephemeral",
                "attempts", "lane", "cancel_requested"])
            await conn.copy_records_to_table(
                "lane_users", records=[(LANE, u, 0, queued[u], NEVER + s) for u, s in first.items()],
                columns=["lane", "user_id", "running", "queued", "served"])
            await conn.execute("INSERT INTO lanes (key, concurrency, running, seq) VALUES ($1, $2, 0, $3) "
                               "ON CONFLICT (key) DO UPDATE SET seq = lanes.seq + $3", LANE, concurrency, len(owners))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


BUSY = [0]  # lock conflicts retried in this process


async def retried(op: Any, *args: Any, **kwargs: Any) -> Any:
    """As the engine's _retry: a Postgres lock conflict (deadlock, 40P01) is waited out and tried again."""
    for attempt in range(6):
        try:
            return await op(*args, **kwargs)
        except Exception as exc:
            if not is_busy(exc) or attempt == 5:
                raise
            BUSY[0] += 1
            await asyncio.sleep(0.05 * 2 ** attempt)


async def fetch(url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def publish(queue: SharedQueue, user: int, concurrency: int = CONCURRENCY) -> Job:
    job = Job(user_id=user, task="chat", model="m", prompt="p")
    await queue.storage.insert_job(job)
    await queue.publish(job, LANE, concurrency)
    return job


# --- 1. the claim's cost --------------------------------------------------------------------------------


async def claim_cost(url: str, data: Path, n: int, probes: int, repeats: int) -> dict[str, list[float]]:
    """Per repeat: p50 and p99 ms of publish, claim and finish with `n` queued."""
    users = min(n, max(5, n // 10))
    owners = [1 + i % users for i in range(n)]
    storage = Storage(url, data)
    await storage.open()
    queue = SharedQueue(storage)
    if n <= 100:
        for user in owners:
            await publish(queue, user)
    else:
        await bulk_queue(url, owners)
    found: dict[str, list[float]] = {}
    try:
        for rep in range(repeats + 1):  # the first round warms (statements compile, caches fill) and is dropped
            spent: dict[str, list[float]] = {"publish": [], "claim": [], "finish": []}
            for k in range(probes if rep else 20):
                t0 = time.perf_counter()
                await publish(queue, 1 + k % users)
                t1 = time.perf_counter()
                job = await queue.claim(LANE, "bench", 30.0)
                t2 = time.perf_counter()
                assert job is not None, "the lane had a job and a free slot"
                job.state, job.finished_at = JobState.DONE, time.time()
                assert await queue.finish(job, "bench", deliver=False, lease=30.0)
                t3 = time.perf_counter()
                for name, took in (("publish", t1 - t0), ("claim", t2 - t1), ("finish", t3 - t2)):
                    spent[name].append(took * 1000)
            if rep:
                for name, values in spent.items():
                    found.setdefault(f"{name} p50", []).append(statistics.median(values))
                    found.setdefault(f"{name} p99", []).append(pct(values, 0.99))
        queued = await fetch(url, "SELECT count(*) FROM jobs WHERE state = 'queued'")
        assert queued[0][0] == n, (queued, n)  # the queue stayed n long
    finally:
        await storage.close()
    return found


# --- 2. throughput with W worker processes ---------------------------------------------------------------


class Endpoint:
    """A model server that takes DELAY per request and counts how many it serves at once."""

    def __init__(self) -> None:
        self.now = self.peak = self.served = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(DELAY)
        finally:
            self.now -= 1
        self.served += 1
        return web.json_response({"text": "ok"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/generate", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/generate"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def worker_main(url: str, endpoint: str, cap: int, me: str) -> None:
    """One worker process: `cap` claim loops until a line on stdin says stop (the first says go)."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(url, Path(tmp))
        await storage.open()
        queue = SharedQueue(storage)
        signals = PostgresSignals(storage)
        state = {"wake": asyncio.Event()}

        def woken(_payload: str) -> None:
            state["wake"].set()
            state["wake"] = asyncio.Event()

        signals.on(JOBS, woken)
        signals.on(DONE, woken)
        await signals.start()
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession() as session:
            print("ready", flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            stop = asyncio.Event()
            claimed: list[tuple[int, float, float]] = []  # user, created, when the claim returned

            async def slot() -> None:
                while not stop.is_set():
                    wake = state["wake"]
                    job = await retried(queue.claim, LANE, me, 30.0)
                    if job is not None:
                        claimed.append((job.user_id, job.created_at, time.time()))
                    if job is None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), 0.5)
                        continue
                    async with session.post(endpoint, json={"job": job.id}) as answer:
                        await answer.read()
                    job.state, job.finished_at = JobState.DONE, time.time()
                    await retried(queue.finish, job, me, deliver=False, lease=30.0)
                    await signals.send(DONE, job.id)

            slots = [asyncio.create_task(slot()) for _ in range(cap)]
            await loop.run_in_executor(None, sys.stdin.readline)
            stop.set()
            await asyncio.gather(*slots)
        for user, created, at in claimed:
            print(f"claimed {user} {created!r} {at!r}")
        print(f"busy {BUSY[0]}", flush=True)
        await signals.close()
        await storage.close()


async def one_run(make_db: Any, data: Path, endpoint: Endpoint, workers: int, cap: int,
                  seconds: float) -> dict[str, float]:
    """A fresh database, the heavy user's backlog, W workers for `seconds` while light users arrive."""
    url = await make_db()
    storage = Storage(url, data)
    await storage.open()
    queue = SharedQueue(storage)
    await bulk_queue(url, [HEAVY[0]] * HEAVY[1])
    signals = PostgresSignals(storage)
    await signals.start()
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--worker", url, endpoint.url, str(cap), f"w{i}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE) for i in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line.strip() == b"ready", line
        endpoint.peak = 0
        t0 = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        light = []
        for k in itertools.count():
            wait = t0 + k * LIGHT_EVERY - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.time() - t0 >= seconds:
                break
            light.append(await retried(publish, queue, 1_000_000 + k))
            await signals.send(JOBS, LANE)
        t1 = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
        busy, BUSY[0] = BUSY[0], 0
        claims: list[list[str]] = []
        for proc in procs:
            assert proc.stdout is not None
            said = (await asyncio.wait_for(proc.stdout.read(), 60)).decode().splitlines()
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            busy += int(said[-1].split()[1])
            claims += [line.split()[1:] for line in said[:-1]]
        rows = await fetch(url, "SELECT finished_at FROM jobs")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await signals.close()
        await storage.close()
    done = sum(1 for r in rows if r[0] is not None and t0 + WARM <= r[0] <= t1)
    light_ids = {job.user_id for job in light}
    waits = [(float(at) - float(created)) * 1000 for user, created, at in claims if int(user) in light_ids]
    started = {int(user) for user, _created, _at in claims}
    unstarted = [job for job in light if job.user_id not in started]
    waits += [(t1 - job.created_at) * 1000 for job in unstarted]  # at least this long: counted, as a lower bound
    return {"jobs/s": done / (t1 - t0 - WARM), "light p50 ms": statistics.median(waits),
            "light p99 ms": pct(waits, 0.99), "light unstarted": len(unstarted),
            "peak": endpoint.peak, "deadlocks": busy}


# --- the bench --------------------------------------------------------------------------------------------


async def bench(server: Any, sizes: tuple[int, ...], probes: int, repeats: int, seconds: float,
                deadlock_ms: int | None) -> None:
    numbers = itertools.count(1)

    async def make_db() -> str:
        name = f"scale{next(numbers)}"
        url = str(server.create_database(name))
        if deadlock_ms is not None:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f"ALTER DATABASE {name} SET deadlock_timeout = '{int(deadlock_ms)}ms'")
            finally:
                await conn.close()
        return url

    print("Postgres deadlock_timeout: " + ("1000 ms (the default)" if deadlock_ms is None else f"{deadlock_ms} ms"))

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        print(f"claim cost on Postgres, one lane of concurrency {CONCURRENCY}, {probes} probes (publish one, "
              f"claim one, finish it), median of {repeats} repeats; {load()}")
        p99 = {}
        for n in sizes:
            t0 = time.perf_counter()
            url = await make_db()
            found = await claim_cost(url, data, n, probes, repeats)
            med = {name: statistics.median(values) for name, values in found.items()}
            p99[n] = med["claim p99"]
            print(f"  {n:>7,} queued (filled and probed in {time.perf_counter() - t0:5.1f} s): "
                  f"claim p50 {med['claim p50']:5.2f} ms p99 {med['claim p99']:5.2f} ms | "
                  f"finish p50 {med['finish p50']:5.2f} p99 {med['finish p99']:5.2f} | "
                  f"publish p50 {med['publish p50']:5.2f} p99 {med['publish p99']:5.2f}")
        top = sizes[-1]
        print(f"  claim p99 at {top:,} / at {sizes[0]:,}: {p99[top] / p99[sizes[0]]:.2f}x "
              f"(goal: p99 < 5 ms at 100,000: {p99[top]:.2f} ms{'' if top == 100_000 else ', not measured: --quick'})")

        endpoint = Endpoint()
        await endpoint.start()
        print(f"\nthroughput: endpoint {DELAY * 1000:.0f} ms per request, lane concurrency {CONCURRENCY}; "
              f"{HEAVY[1]:,} heavy jobs queued, a light user's first job every {LIGHT_EVERY * 1000:.0f} ms; "
              f"{seconds} s runs, median of {repeats}; {load()}")
        settings = [(cap, w) for cap in (2, CONCURRENCY) for w in (1, 2, 4)]
        runs: dict[tuple[int, int], list[dict[str, float]]] = {s: [] for s in settings}
        try:
            for _ in range(repeats):  # the settings take turns, so that they see the same noise
                for cap, w in settings:
                    runs[(cap, w)].append(await one_run(make_db, data, endpoint, w, cap, seconds))
        finally:
            await endpoint.stop()
        for cap in (2, CONCURRENCY):
            meaning = ("each worker at most 2 jobs at once: 1 worker uses 2 of the 8 slots, 2 use 4, 4 use 8"
                       if cap == 2 else "each worker up to 8 at once: one worker can fill the lane alone")
            print(f"  cap {cap} ({meaning}):")
            base = None
            for w in (1, 2, 4):
                med = {k: statistics.median(r[k] for r in runs[(cap, w)]) for k in runs[(cap, w)][0]}
                peak = max(r["peak"] for r in runs[(cap, w)])
                base = base or med["jobs/s"]
                print(f"    {w} worker{'s' if w > 1 else ' '}: {med['jobs/s']:6.1f} jobs/s "
                      f"({med['jobs/s'] / base:4.2f}x"
                      f" 1 worker; ideal {min(w * cap, CONCURRENCY) / min(cap, CONCURRENCY):.0f}x) | light first "
                      f"job wait p50 {med['light p50 ms']:6.1f} ms p99 {med['light p99 ms']:6.1f} ms, "
                      f"{med['light unstarted']:.0f} unstarted | endpoint peak {peak:.0f}/{CONCURRENCY}, "
                      f"lock conflicts retried {med['deadlocks']:.0f}"
                      f"{'  EXCEEDED' if peak > CONCURRENCY else ''}")
        cap2 = {w: statistics.median(r["jobs/s"] for r in runs[(2, w)]) for w in (1, 2)}
        print(f"  goal: with free capacity (cap 2), 2 workers / 1 >= 1.8x: {cap2[2] / cap2[1]:.2f}x")
    print(f"done; {load()}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, endpoint, cap, me = sys.argv[2:6]
        asyncio.run(worker_main(url, endpoint, int(cap), me))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 and 10,000 queued, fewer probes, short runs")
    parser.add_argument("--deadlock-timeout", type=int, metavar="MS",
                        help="the databases' deadlock_timeout (default: the server's, 1 s): how long a lock "
                             "conflict between a claim and a finish stalls the lane before Postgres breaks it")
    args = parser.parse_args()
    from tests.postgres import binaries, running_server

    found = binaries()
    if found is None:
        sys.exit("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt install postgresql)")
    sizes = (10, 10_000) if args.quick else (10, 10_000, 100_000)
    with running_server(*found, max_connections=100) as server:
        asyncio.run(bench(server, sizes, probes=200 if args.quick else 400, repeats=2 if args.quick else 3,
                          seconds=2.5 if args.quick else 4.0, deadlock_ms=args.deadlock_timeout))


if __name__ == "__main__":
    main()
