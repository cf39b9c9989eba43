"""The queue across processes: gateways publish jobs, workers claim them by the fair rule, in the database.

The rule is bot.jobs.scheduler's, kept in tables instead of one process's memory: in each lane (one backend key)
the job that starts next is the oldest queued job of the user with the fewest jobs running in that lane, the
least recently served first among equals, and a user not being served at all counts as never served, in order of
arrival. `lane_users` holds each user's standing in a lane (running, queued, served) under an index in exactly
that order, so a claim reads the first row of the index and the first queued job of that user: its cost does not
grow with the length of the queue. `lanes` holds each lane's concurrency and how many of its jobs run, and a
claim's first statement takes the lane's row (UPDATE ... WHERE running < concurrency): claims of one lane are one
at a time, whichever worker makes them, so the limit holds over all workers together. The job row itself is
taken FOR UPDATE SKIP LOCKED, so a cancel in flight on it is never waited for.

A claimed job carries its worker's id and a lease (`lease_until`) that the worker renews while the job runs and
while it delivers the result. A worker that dies (kill -9, machine gone) stops renewing: when the lease has run
out any worker puts the job back in the queue (`reap`), or fails it after MAX_ATTEMPTS, and takes over a
delivery left half done (`take_deliveries`; the presenter's delivered parts make that an edit, not a repost).
A worker finishing a job whose lease it lost (reaped meanwhile) records nothing and posts nothing.

Wake-ups: on Postgres, LISTEN/NOTIFY (`natty_jobs` when a job is published or put back, `natty_done` when one
ends, `natty_cancel` when a running one should stop); on SQLite, which has no notifications, waiters poll at a
short interval. Every wait also polls, slowly, so a notification lost with a connection costs only time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Executable, bindparam, delete, func, literal, select, update

from bot.jobs import database
from bot.jobs.database import SQLConnection
from bot.jobs.job import Job, JobState
from bot.jobs.schema import jobs, lane_users, lanes, workers
from bot.jobs.storage import FINISHED_STATES, Storage, _job, _jobs

log = logging.getLogger("natty.shared")

NEVER = -(1 << 62)  # "served" of a user not being served: before anyone served, in order of arrival
JOBS, DONE, CANCEL = "natty_jobs", "natty_done", "natty_cancel"
REAP_BATCH = 100  # expired leases handled per reap

# --- the statements --------------------------------------------------------------------------------------

_bump_lane = (update(lanes).where(lanes.c.key == bindparam("b_lane"))
              .values(seq=lanes.c.seq + 1, concurrency=bindparam("b_concurrency")).returning(lanes.c.seq))
_bump_free_lane = (update(lanes).where(lanes.c.key == bindparam("b_lane"), lanes.c.running < lanes.c.concurrency)
                   .values(seq=lanes.c.seq + 1).returning(lanes.c.seq))
_lane_started = update(lanes).where(lanes.c.key == bindparam("b_lane")).values(running=lanes.c.running + 1)
_lane_ended = update(lanes).where(lanes.c.key == bindparam("b_lane")).values(running=lanes.c.running - 1)
_add_queued = (update(lane_users).where(lane_users.c.lane == bindparam("b_lane"),
                                        lane_users.c.user_id == bindparam("b_user"))
               .values(queued=lane_users.c.queued + bindparam("n")))
_next_user = (select(lane_users.c.user_id).where(lane_users.c.lane == bindparam("b_lane"), lane_users.c.queued > 0)
              .order_by(lane_users.c.running, lane_users.c.served, lane_users.c.user_id).limit(1))
_first_job = (select(jobs).where(jobs.c.lane == bindparam("b_lane"), jobs.c.user_id == bindparam("b_user"),
                                 jobs.c.state == literal("queued"))
              .order_by(jobs.c.seq).limit(1).with_for_update(skip_locked=True))
_count_queued = (select(func.count()).select_from(jobs)
                 .where(jobs.c.lane == bindparam("b_lane"), jobs.c.user_id == bindparam("b_user"),
                        jobs.c.state == literal("queued")))
_set_queued = (update(lane_users).where(lane_users.c.lane == bindparam("b_lane"),
                                        lane_users.c.user_id == bindparam("b_user"))
               .values(queued=bindparam("n")))
_start_job = (update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.state == literal("queued"))
              .values(state="running", worker=bindparam("me"), lease_until=bindparam("b_until"),
                      started_at=bindparam("b_at"), cancel_requested=0))
_user_started = (update(lane_users).where(lane_users.c.lane == bindparam("b_lane"),
                                          lane_users.c.user_id == bindparam("b_user"))
                 .values(queued=lane_users.c.queued - 1, running=lane_users.c.running + 1,
                         served=bindparam("b_served")))
_user_ended = (update(lane_users).where(lane_users.c.lane == bindparam("b_lane"),
                                        lane_users.c.user_id == bindparam("b_user"))
               .values(running=lane_users.c.running - 1))
_forget_user = delete(lane_users).where(lane_users.c.lane == bindparam("b_lane"),
                                        lane_users.c.user_id == bindparam("b_user"),
                                        lane_users.c.running <= 0, lane_users.c.queued <= 0)
_publish = update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.state == literal("queued"),
                              jobs.c.lane.is_(None)).values(lane=bindparam("b_lane"))
_finish_held = (update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.worker == bindparam("me"),
                                   jobs.c.state == literal("running"))
                .values(state=bindparam("b_state"), error=bindparam("b_error"), finished_at=bindparam("b_finished"),
                        result=bindparam("b_result"), worker=bindparam("b_worker"), lease_until=bindparam("b_until"),
                        cancel_requested=0)
                .returning(jobs.c.lane))
_expired = (select(jobs).where(jobs.c.worker.is_not(None), jobs.c.lease_until < bindparam("now"),
                               jobs.c.state == literal("running"))
            .order_by(jobs.c.lease_until).limit(REAP_BATCH).with_for_update(skip_locked=True))
_expired_of = _expired.where(jobs.c.worker == bindparam("only"))
_reaped = update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.state == literal("running"))
_reap_failed = _reaped.values(state="failed", error=bindparam("b_error"), finished_at=bindparam("b_finished"),
                              worker=bindparam("b_worker"), lease_until=bindparam("b_until"))
_reap_queued = _reaped.values(state="queued", worker=None, lease_until=None, cancel_requested=0)
_orphaned_deliveries = (
    select(jobs).where(jobs.c.worker.is_not(None), jobs.c.lease_until < bindparam("now"),
                       jobs.c.delivered_at.is_(None), jobs.c.state.in_([literal(s) for s in FINISHED_STATES]))
    .order_by(jobs.c.seq).limit(bindparam("limit")).with_for_update(skip_locked=True))
_take_delivery = (update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.delivered_at.is_(None))
                  .values(worker=bindparam("me"), lease_until=bindparam("b_until")))
_renew = update(jobs).where(jobs.c.worker == bindparam("me")).values(lease_until=bindparam("b_until"))
_cancels_for = select(jobs.c.id).where(jobs.c.worker == bindparam("me"), jobs.c.state == literal("running"),
                                       jobs.c.cancel_requested == 1)
_cancel_queued = (update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.state == literal("queued"))
                  .values(state="cancelled", error=bindparam("b_error"), finished_at=bindparam("b_at"))
                  .returning(jobs.c.lane, jobs.c.user_id))
_states = select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
_request_cancel = (update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.state == literal("running"))
                   .values(cancel_requested=1))
_live_workers = select(workers.c.id, workers.c.models).where(workers.c.heartbeat_at >= bindparam("since"))
_drop_worker = delete(workers).where(workers.c.id == bindparam("me"))
_unpublished = (select(jobs).where(jobs.c.state == literal("queued"), jobs.c.lane.is_(None))
                .order_by(jobs.c.seq))
_lane_rank = select(lane_users.c.running, lane_users.c.served).where(
    lane_users.c.lane == bindparam("b_lane"), lane_users.c.user_id == bindparam("b_user"))
_ahead = (select(func.count()).select_from(lane_users)
          .where(lane_users.c.lane == bindparam("b_lane"), lane_users.c.queued > 0,
                 (lane_users.c.running < bindparam("running"))
                 | ((lane_users.c.running == bindparam("running")) & (lane_users.c.served < bindparam("b_served")))))
_own_ahead = (select(func.count()).select_from(jobs)
              .where(jobs.c.lane == bindparam("b_lane"), jobs.c.user_id == bindparam("b_user"),
                     jobs.c.state == literal("queued"), jobs.c.seq < bindparam("seq")))
_seq_of = select(jobs.c.seq).where(jobs.c.id == bindparam("job_id"))
_lane_seq = select(lanes.c.seq).where(lanes.c.key == bindparam("b_lane"))
_lane_counts = select(lanes.c.key, func.coalesce(
    select(func.sum(lane_users.c.queued)).where(lane_users.c.lane == lanes.c.key).scalar_subquery(), 0),
    lanes.c.running)
_unheld_undelivered = (select(jobs).where(jobs.c.delivered_at.is_(None), jobs.c.worker.is_(None),
                                          jobs.c.state.in_([literal(s) for s in FINISHED_STATES]))
                       .order_by(jobs.c.seq))


@cache
def _upserts(dialect: str) -> tuple[Executable, Executable, Executable]:
    """INSERT ... ON CONFLICT DO NOTHING for a lane, a lane's user and (DO UPDATE) a worker's heartbeat."""
    insert = database.DIALECTS[dialect].insert
    lane = insert(lanes).values(key=bindparam("b_lane"), concurrency=bindparam("b_concurrency"), running=0, seq=0)
    user = insert(lane_users).values(lane=bindparam("b_lane"), user_id=bindparam("b_user"), running=0, queued=0,
                                     served=bindparam("b_served"))
    beat = insert(workers).values(id=bindparam("me"), models=bindparam("b_models"), started_at=bindparam("now"),
                                  heartbeat_at=bindparam("now"))
    return (lane.on_conflict_do_nothing(index_elements=["key"]),
            user.on_conflict_do_nothing(index_elements=["lane", "user_id"]),
            beat.on_conflict_do_update(index_elements=["id"], set_={"heartbeat_at": beat.excluded.heartbeat_at,
                                                                    "models": beat.excluded.models}))


def _ended(conn: SQLConnection, lane: str | None, user_id: int, requeue: Executable | None = None) -> None:
    """A job of this lane's user stopped running: its slot is free (and with `requeue`, the upsert of the user's
    row, the job is queued again). Locks in the one order every statement here takes them: the lane's row first,
    then its user's, as a claim does (a finish that took them the other way deadlocked with claims)."""
    if lane is None:
        return
    user = {"b_lane": lane, "b_user": user_id}
    conn.execute(_lane_ended, {"b_lane": lane})
    if requeue is not None:  # queued again first, so that the row outlives its running count's end
        conn.execute(requeue, {**user, "b_served": NEVER})
        conn.execute(_add_queued, {**user, "n": 1})
    conn.execute(_user_ended, user)
    conn.execute(_forget_user, user)


@dataclass
class Standing:
    """Where a published job stands: at least `ahead` jobs start before it (a lower bound: every user ranked
    before its owner starts one first, and so do its owner's older jobs)."""

    ahead: int


class SharedQueue:
    """The statements of the shared queue on one Storage, each call one transaction."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def _atomic(self, work: Callable[[SQLConnection], Any]) -> Any:
        return await self.storage.runner.run(work, atomic=True)

    # --- gateways ----------------------------------------------------------------------------------

    async def publish(self, job: Job, lane: str, concurrency: int) -> bool:
        """Put a recorded, still queued job into its lane, where workers can claim it. False when it is not
        queued any more (cancelled meanwhile) or was published already."""
        new_lane, new_user, _beat = _upserts(self.storage.runner.dialect)

        def work(conn: SQLConnection) -> bool:
            conn.execute(new_lane, {"b_lane": lane, "b_concurrency": concurrency})
            seq = conn.execute(_bump_lane, {"b_lane": lane, "b_concurrency": concurrency}).scalar()
            if conn.execute(_publish, {"job_id": job.id, "b_lane": lane}).rowcount == 0:
                return False
            conn.execute(new_user, {"b_lane": lane, "b_user": job.user_id, "b_served": NEVER + seq})
            conn.execute(_add_queued, {"b_lane": lane, "b_user": job.user_id, "n": 1})
            return True

        return bool(await self._atomic(work))

    async def standing(self, job: Job, lane: str, *, published: bool = True) -> Standing:
        """A job's lower-bound position (reads of the ranking index and of the owner's queue). `published=False`:
        where it will stand once published (its owner's rank as publishing leaves it)."""
        def work(conn: SQLConnection) -> Standing:
            rank = conn.execute(_lane_rank, {"b_lane": lane, "b_user": job.user_id}).first()
            if rank is None:
                if published:
                    return Standing(0)
                rank = (0, NEVER + (conn.execute(_lane_seq, {"b_lane": lane}).scalar() or 0) + 1)
            others = conn.execute(_ahead, {"b_lane": lane, "running": rank[0], "b_served": rank[1]}).scalar() or 0
            if published:
                seq = conn.execute(_seq_of, {"job_id": job.id}).scalar()
                own = conn.execute(_own_ahead, {"b_lane": lane, "b_user": job.user_id, "seq": seq}).scalar() or 0
            else:
                own = conn.execute(_count_queued, {"b_lane": lane, "b_user": job.user_id}).scalar() or 0
            return Standing(int(others) + int(own))

        result: Standing = await self._atomic(work)
        return result

    async def lane_counts(self) -> dict[str, tuple[int, int]]:
        """Queued and running jobs of every lane, over all processes."""
        return {row[0]: (int(row[1]), int(row[2])) for row in await self.storage._all(_lane_counts)}

    async def unheld_undelivered(self) -> list[Job]:
        """Finished, undelivered jobs no worker holds (of this process's shards): a gateway's to post, such as a
        job cancelled while queued, or a part of one of its sessions."""
        return self.storage._own(await self.storage.runner.run(lambda c: _jobs(c.execute(_unheld_undelivered))))

    async def unpublished(self) -> list[Job]:
        """Recorded jobs a gateway stopped before publishing (of its own shards)."""
        return self.storage._own(await self.storage.runner.run(lambda c: _jobs(c.execute(_unpublished))))

    async def cancel_queued(self, job: Job, error: str, now: float | None = None) -> bool:
        """Cancel a job that no worker has claimed: True when it was still queued (and now is cancelled)."""
        at = time.time() if now is None else now

        def work(conn: SQLConnection) -> bool:
            row = conn.execute(_cancel_queued, {"job_id": job.id, "b_error": error, "b_at": at}).first()
            if row is None:
                return False
            lane, user_id = row
            if lane is not None:
                conn.execute(_add_queued, {"b_lane": lane, "b_user": user_id, "n": -1})
                conn.execute(_forget_user, {"b_lane": lane, "b_user": user_id})
            return True

        return bool(await self._atomic(work))

    async def request_cancel(self, job_id: str) -> bool:
        """Ask the worker running a job to stop it; False when the job is not running."""
        return bool(await self.storage._write(_request_cancel, {"job_id": job_id}))

    async def live_workers(self, within: float, now: float | None = None) -> dict[str, list[str]]:
        """Workers whose heartbeat is at most `within` seconds old: id -> the models they serve."""
        since = (time.time() if now is None else now) - within
        rows = await self.storage._all(_live_workers, {"since": since})
        return {row[0]: json.loads(row[1]) for row in rows}

    async def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        ids = list(job_ids)
        if not ids:
            return {}
        rows = await self.storage._all(_states, {"ids": ids})
        return {row[0]: JobState(row[1]) for row in rows}

    # --- workers -----------------------------------------------------------------------------------

    async def claim(self, lane: str, me: str, lease: float, now: float | None = None) -> Job | None:
        """Take the job the fair rule starts next in `lane`, if the lane has a free slot: it is `running`, held
        by worker `me` until `now + lease`."""
        at = time.time() if now is None else now

        def work(conn: SQLConnection) -> Job | None:
            seq = conn.execute(_bump_free_lane, {"b_lane": lane}).scalar()
            if seq is None:
                return None  # no such lane, or its slots are all taken
            user = conn.execute(_next_user, {"b_lane": lane}).scalar()
            if user is None:
                return None
            job = _job(conn.execute(_first_job, {"b_lane": lane, "b_user": user}).first())
            if job is None:  # locked by a cancel in flight, or the count drifted: make it true again
                count = conn.execute(_count_queued, {"b_lane": lane, "b_user": user}).scalar() or 0
                conn.execute(_set_queued, {"b_lane": lane, "b_user": user, "n": count})
                conn.execute(_forget_user, {"b_lane": lane, "b_user": user})
                return None
            conn.execute(_start_job, {"job_id": job.id, "me": me, "b_until": at + lease, "b_at": at})
            conn.execute(_user_started, {"b_lane": lane, "b_user": user, "b_served": seq})
            conn.execute(_lane_started, {"b_lane": lane})
            job.state, job.started_at = JobState.RUNNING, at
            return job

        claimed: Job | None = await self._atomic(work)
        return claimed

    async def finish(self, job: Job, me: str, *, deliver: bool, lease: float, now: float | None = None) -> bool:
        """Record how a job this worker holds ended and free its slot. With `deliver` the worker keeps holding it
        (a delivery lease) until its result is posted. False when the worker no longer holds it: its lease ran
        out and the job went back to the queue (or to another worker), so this run's result is dropped."""
        at = time.time() if now is None else now
        values = {"job_id": job.id, "me": me, "b_state": job.state.value, "b_error": job.error,
                  "b_finished": job.finished_at, "b_result": json.dumps(job.result) if job.result else None,
                  "b_worker": me if deliver else None, "b_until": at + lease if deliver else None}

        def work(conn: SQLConnection) -> bool:
            row = conn.execute(_finish_held, values).first()
            if row is None:
                return False
            _ended(conn, row[0], job.user_id)
            return True

        return bool(await self._atomic(work))

    async def renew(self, me: str, lease: float, models: list[str], now: float | None = None) -> list[str]:
        """Extend the leases of everything this worker holds, beat its heartbeat, and return the ids of its running
        jobs whose cancel was asked for."""
        at = time.time() if now is None else now
        _lane, _user, beat = _upserts(self.storage.runner.dialect)

        def work(conn: SQLConnection) -> list[str]:
            conn.execute(_renew, {"me": me, "b_until": at + lease})
            conn.execute(beat, {"me": me, "b_models": json.dumps(models), "now": at})
            return [row[0] for row in conn.execute(_cancels_for, {"me": me})]

        ids: list[str] = await self._atomic(work)
        return ids

    async def leave(self, me: str) -> None:
        """A worker stopping cleanly: it serves nothing any more (its held jobs are reaped when their leases end)."""
        await self.storage._write(_drop_worker, {"me": me})

    async def reap(self, me: str, *, max_attempts: int, lease: float, failure: Callable[[Job], str],
                   now: float | None = None, only: str | None = None) -> tuple[list[Job], list[Job]]:
        """Jobs whose worker stopped renewing: back to the queue, or failed with `failure(job)` once they ran out
        of attempts (held by `me` for delivery, unless their owner delivers them). Returns (requeued, failed).
        `only`: just that worker's jobs (a worker stopping hands its own back with now=inf)."""
        at = time.time() if now is None else now
        expired, find = (_expired, {"now": at}) if only is None else (_expired_of, {"now": at, "only": only})
        _new_lane, new_user, _beat = _upserts(self.storage.runner.dialect)

        def work(conn: SQLConnection) -> tuple[list[Job], list[Job]]:
            requeued, failed = [], []
            # lane by lane, in one order: two reapers never wait on each other's lanes the other way round
            for row in sorted(conn.execute(expired, find).all(), key=lambda r: r.lane or ""):
                job = _job(row)
                assert job is not None
                lane = row.lane
                if job.attempts >= max_attempts:
                    job.state, job.error, job.finished_at = JobState.FAILED, failure(job), time.time()
                    keep = owner_delivers(job)
                    until = None if keep else time.time() + lease
                    conn.execute(_reap_failed, {"job_id": job.id, "b_error": job.error, "b_finished": job.finished_at,
                                                "b_worker": None if keep else me, "b_until": until})
                    _ended(conn, lane, job.user_id)
                    failed.append(job)
                    continue
                conn.execute(_reap_queued, {"job_id": job.id})
                _ended(conn, lane, job.user_id, requeue=new_user)
                job.state = JobState.QUEUED
                requeued.append(job)
            return requeued, failed

        result: tuple[list[Job], list[Job]] = await self._atomic(work)
        return result

    async def take_deliveries(self, me: str, lease: float, limit: int = 20, now: float | None = None) -> list[Job]:
        """Finished jobs whose delivering worker stopped renewing before the result was posted: now held by `me`."""
        at = time.time() if now is None else now

        def work(conn: SQLConnection) -> list[Job]:
            found = _jobs(conn.execute(_orphaned_deliveries, {"now": at, "limit": limit}))
            for job in found:
                conn.execute(_take_delivery, {"job_id": job.id, "me": me, "b_until": at + lease})
            return found

        taken: list[Job] = await self._atomic(work)
        return taken


def owner_delivers(job: Job) -> bool:
    """A job its owner posts (a story scene, a game item, a story's script): the gateway that holds its session
    hears that it ended; workers never post it."""
    return job.silent or job.renderer is not None


# --- wake-ups --------------------------------------------------------------------------------------------


class Signals:
    """Wake-ups between processes. This one (SQLite) sends nothing: each waiter polls every `poll` seconds."""

    poll = 0.5

    def __init__(self) -> None:
        self.handlers: dict[str, list[Callable[[str], None]]] = {}

    def on(self, channel: str, handler: Callable[[str], None]) -> None:
        self.handlers.setdefault(channel, []).append(handler)

    async def start(self) -> None:
        return None

    async def send(self, channel: str, payload: str = "") -> None:
        return None

    async def close(self) -> None:
        return None


class PostgresSignals(Signals):
    """LISTEN/NOTIFY on a connection of its own (asyncpg's listeners); waiters still poll, slowly."""

    poll = 5.0

    def __init__(self, storage: Storage) -> None:
        super().__init__()
        self.storage = storage
        self._conn: Any = None
        self._raw: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        engine = getattr(self.storage.runner, "engine", None)
        assert engine is not None
        self._conn = await engine.connect()
        raw = await self._conn.get_raw_connection()
        self._raw = raw.driver_connection
        for channel in self.handlers:
            await self._raw.add_listener(channel, self._heard)

    def _heard(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        for handler in self.handlers.get(channel, []):
            try:
                handler(payload)
            except Exception:
                log.exception("handler of %s failed", channel)

    async def send(self, channel: str, payload: str = "") -> None:
        if self._raw is None:
            return
        try:
            async with self._lock:
                await self._raw.execute("SELECT pg_notify($1, $2)", channel, payload)
        except Exception as exc:  # a wake-up lost: the waiters' polls find the change
            log.warning("could not notify %s: %s", channel, exc)

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = self._raw = None


def signals_for(storage: Storage) -> Signals:
    return PostgresSignals(storage) if storage.runner.dialect == "postgresql" else Signals()
