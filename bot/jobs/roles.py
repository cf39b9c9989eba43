"""The job engine split over processes: `natty run --role gateway` and `--role worker` (bot.jobs.shared).

A gateway answers Discord and records jobs: it admits each under the same limits as one process does, shows the
member where the job stands (or that no worker serves its model), then publishes it to the shared queue. It never
generates. It hears when its jobs end (NOTIFY, or a poll), frees their places under the caps, wakes whoever waits
for them, and posts the results that belong to its sessions (story scenes, game items: `owner_delivers`); a cancel
of a job that runs elsewhere becomes a request the holding worker acts on.

A worker connects to no gateway: it claims jobs of the lanes it serves, generates, edits their progress and posts
their results through Discord's REST API with the interaction token or the channel (the presenter needs nothing
else), and renews its leases; it puts back the jobs of workers that died and finishes their deliveries.

`--role all`, the default, is bot.jobs.engine's JobEngine: one process, the fair queue in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any

from bot.i18n import cancelled, t
from bot.jobs.engine import MAX_ATTEMPTS, JobEngine
from bot.jobs.job import Job, JobState
from bot.jobs.shared import CANCEL, DONE, JOBS, SharedQueue, Signals, owner_delivers, signals_for
from models.catalog import Catalog, ModelEntry

log = logging.getLogger("natty.roles")

WORKER_SEEN = 3.0  # a worker counts as connected while its heartbeat is this many lease-renewals old at most
WORKERS_CACHE = 2.0  # seconds a gateway reuses its list of connected workers


def served_models(catalog: Catalog, patterns: Iterable[str] | None) -> list[ModelEntry]:
    """The catalog entries a worker serves: all, or those matching any of `patterns` (names, or globs such as
    natty-* or *-local). A worker serves whole lanes: every entry of a lane one of them is in."""
    entries = list(catalog.entries.values())
    wanted = [p.strip() for p in patterns or () if p.strip()]
    if not wanted:
        return entries
    lanes = {e.backend_key for e in entries if any(fnmatch.fnmatchcase(e.name, p) for p in wanted)}
    return [e for e in entries if e.backend_key in lanes]


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class GatewayEngine(JobEngine):
    """Admits and records jobs, publishes them to the shared queue, hears how they end."""

    def __init__(self, *args: Any, lease: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = SharedQueue(self.storage)
        self.signals: Signals = Signals()
        self.lease = lease
        self._heard: set[str] = set()  # jobs that ended, heard of and not yet handled
        self._counts: dict[str, tuple[int, int]] = {}
        self._workers: tuple[float, dict[str, list[str]]] = (0.0, {})

    async def start(self, recover: bool = True) -> None:
        self.signals = signals_for(self.storage)
        self.signals.on(DONE, self._heard_done)
        await self.signals.start()
        if recover:
            await self._recover_gateway()
        self._loop_task = asyncio.create_task(self._watch(), name="natty-gateway-watch")

    async def stop(self) -> None:
        await super().stop()
        await self.signals.close()

    async def _recover_gateway(self) -> None:
        """After a restart: count this gateway's open jobs under the caps again, publish what it recorded but had
        not published, and post what ended and is this gateway's to post."""
        for job in await self.storage.jobs_in_states(JobState.QUEUED, JobState.RUNNING):
            self._count(job)
            self._finished_events.setdefault(job.id, asyncio.Event())
        for job in await self.queue.unpublished():
            entry = self.catalog.get(job.model)
            if entry is None:
                await self._finish_here(job, JobState.FAILED, t("job.model_gone", job.locale, model=job.model))
                continue
            await self._publish(job, entry)
        mine = [job for job in await self.queue.unheld_undelivered() if job.id not in self.active]
        if mine:
            self._redeliver_task = asyncio.create_task(self._redeliver(mine), name="natty-redeliver")

    async def _check_limits(self, job: Job, cooldown: bool = True) -> str | None:
        """The caps, cooldown and quota over every gateway on this database, not only this one: the open jobs
        are counted in the shared table, and the cooldown runs from the user's last job there (in this
        server), so a member whose commands land on two gateway processes gets no more than on one. Two
        gateways admitting the same member's jobs in the same few milliseconds can still both pass."""
        refusal = await super()._check_limits(job, cooldown)
        if refusal:
            return refusal
        limits, loc = self.limits_for(job), job.locale
        mine, theirs = await self._retry(self.storage.open_jobs, job.user_id, job.guild_id)
        if mine >= limits.per_user:
            return t("limit.per_user", loc, count=mine, limit=limits.per_user)
        if job.guild_id and theirs >= limits.per_guild:
            return t("limit.per_guild", loc, count=theirs, limit=limits.per_guild)
        if cooldown and limits.cooldown:
            last = (await self.storage.user_state(job.user_id, job.guild_id))["last_job_at"]
            wait = limits.cooldown - (time.time() - last) if last is not None else 0.0
            if wait > 0:
                return t("limit.cooldown", loc, seconds=max(1, round(wait)))
        return None

    async def _queue(self, job: Job, entry: ModelEntry) -> None:
        """Tell the member where the job stands before any worker can take it (so that this edit never lands
        after a worker's), then publish it."""
        if not job.silent:
            missing = await self._unserved(job.model)
            if missing:
                text = t("progress.waiting_worker", job.locale, model=job.model, id=job.id)
            else:
                ahead = await self.queue.standing(job, entry.backend_key, published=False)
                text = t("progress.queued_shared", job.locale, ahead=f"{ahead.ahead:,}", id=job.id, model=job.model)
            for listener in self.listeners:
                show = getattr(listener, "job_waiting", None)
                if show is not None:
                    try:
                        await show(job, text)
                    except Exception:
                        log.exception("listener failed on job %s waiting", job.id)
        await self._publish(job, entry)

    async def _publish(self, job: Job, entry: ModelEntry) -> None:
        if await self._retry(self.queue.publish, job, entry.backend_key, entry.max_concurrency):
            await self.signals.send(JOBS, entry.backend_key)

    async def _unserved(self, model: str) -> bool:
        """True when no connected worker serves `model`."""
        at, found = self._workers
        if time.monotonic() - at > WORKERS_CACHE:
            found = await self.queue.live_workers(self.lease * WORKER_SEEN / 3 + WORKERS_CACHE)
            self._workers = (time.monotonic(), found)
        return not any(model in models for models in found.values())

    async def wait_text(self, job: Job, locale: str | None) -> str:
        if await self._unserved(job.model):
            return t("jobs.waiting_worker", locale, model=job.model)
        entry = self.catalog.get(job.model)
        if entry is None:
            return ""
        ahead = await self.queue.standing(job, entry.backend_key)
        return t("jobs.position", locale, position=f"{ahead.ahead + 1:,}+" if ahead.ahead else "1")

    def _heard_done(self, job_id: str) -> None:
        if job_id in self.active:
            self._heard.add(job_id)
            self._wake.set()

    async def _watch(self) -> None:
        """Handle the ends of this gateway's jobs: heard of, or found by a poll of their states."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.signals.poll)
            self._wake.clear()
            try:
                heard, self._heard = self._heard, set()
                states = await self.queue.states(list(self.active))
                ended = heard | {job_id for job_id, state in states.items() if state.finished}
                for job_id in ended:
                    await self._ended_elsewhere(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking on jobs failed; trying again")

    async def _ended_elsewhere(self, job_id: str) -> None:
        job = self.active.get(job_id)
        record = await self.storage.get_job(job_id)
        if job is None or record is None or not record.state.finished:
            return
        self._release(job)
        self._announced.pop(job_id, None)
        if owner_delivers(record):
            await self._notify_finished(record)  # the presenter runs the output checks and hands it to its owner
        elif event := self._finished_events.pop(job_id, None):
            event.set()

    async def _finish_here(self, job: Job, state: JobState, error: str) -> None:
        self._release(job)
        await self._finish(job, state, error)

    async def cancel(self, job_id: str, by_user: int) -> bool:
        """Cancel a job whichever process holds it: still queued, here and now; running, by asking its worker
        (whose presenter then turns its message into "Cancelled.")."""
        job = self.active.get(job_id) or await self.storage.get_job(job_id)
        if job is None or job.state.finished:
            return False
        if await self.queue.cancel_queued(job, cancelled(job.locale)):
            self._release(job)
            job.state, job.error, job.finished_at = JobState.CANCELLED, cancelled(job.locale), time.time()
            self._announced.pop(job.id, None)
            await self._notify_finished(job)
            return True
        if await self.queue.request_cancel(job_id):
            await self.signals.send(CANCEL, job_id)
            return True
        return False

    def forecast(self, job_id: str) -> Any:
        return None  # positions live in the shared queue: wait_text

    def lane_counts(self) -> dict[str, tuple[int, int]]:
        return self._counts

    async def refresh_counts(self) -> None:
        self._counts = await self.queue.lane_counts()


class WorkerEngine(JobEngine):
    """Claims the jobs of the lanes it serves, runs them, holds them by leases, and delivers their results."""

    def __init__(self, *args: Any, serves: Iterable[ModelEntry] | None = None, lease: float = 30.0,
                 worker_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        entries = list(self.catalog.entries.values()) if serves is None else list(serves)
        self.lanes = {e.backend_key: e.max_concurrency for e in entries}
        self.models = sorted(e.name for e in entries)
        self.lease = lease
        self.me = worker_id or worker_name()
        self.queue = SharedQueue(self.storage)
        self.signals: Signals = Signals()
        self._lease_task: asyncio.Task[None] | None = None
        self._counts: dict[str, tuple[int, int]] = {}

    async def start(self, recover: bool = True) -> None:
        self.signals = signals_for(self.storage)
        self.signals.on(JOBS, lambda _lane: self._wake.set())
        self.signals.on(DONE, lambda _job: self._wake.set())  # another worker's job ended: a slot may be free
        self.signals.on(CANCEL, self._cancel_here)
        await self.signals.start()
        await self.queue.renew(self.me, self.lease, self.models)  # connected: gateways stop saying "no worker"
        log.info("worker %s serving %d model(s) in %d lane(s): %s", self.me, len(self.models), len(self.lanes),
                 ", ".join(self.models))
        self._loop_task = asyncio.create_task(self._claim_loop(), name="natty-claim")
        self._lease_task = asyncio.create_task(self._lease_loop(), name="natty-leases")

    async def stop(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        await super().stop()  # interrupts running jobs: they stay running, held by this worker
        try:  # hand them back at once rather than when the lease ends
            await self.queue.reap(self.me, max_attempts=MAX_ATTEMPTS + 1, lease=self.lease, failure=_restarted,
                                  now=float("inf"), only=self.me)
            await self.queue.leave(self.me)
            await self.signals.send(JOBS, "")
        except Exception:
            log.exception("worker %s could not hand its jobs back; they return when their leases end", self.me)
        await self.signals.close()

    async def _claim_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                for lane in self.lanes:
                    while (job := await self._retry(self.queue.claim, lane, self.me, self.lease)) is not None:
                        self._start(lane, job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming jobs failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.signals.poll)

    def _start(self, lane: str, job: Job) -> None:
        log.info("worker %s claimed job %s (%s on %s)", self.me, job.id, job.task, job.model)
        self._count(job)
        self._finished_events.setdefault(job.id, asyncio.Event())
        if self.catalog.get(job.model) is None:  # another worker's catalog has it; this one's lane does not
            self._tasks[job.id] = asyncio.create_task(self._finish_released(
                lane, job, JobState.FAILED, t("job.model_gone", job.locale, model=job.model)))
            return
        self._tasks[job.id] = asyncio.create_task(self._run(lane, job), name=f"job-{job.id}")

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                for job_id in await self.queue.renew(self.me, self.lease, self.models):
                    self._cancel_here(job_id)
                requeued, failed = await self.queue.reap(self.me, max_attempts=MAX_ATTEMPTS, lease=self.lease,
                                                         failure=_restarted)
                for job in requeued:
                    log.warning("job %s: its worker stopped renewing its lease; it is queued again", job.id)
                if requeued:
                    self._wake.set()
                    await self.signals.send(JOBS, "")
                for job in failed:
                    await self._ended(job)
                for job in await self.queue.take_deliveries(self.me, self.lease):
                    log.warning("job %s: its worker stopped before posting the result; posting it", job.id)
                    await self._redeliver([job])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("renewing leases failed; trying again")

    def _cancel_here(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is None:
            return
        self._cancelled_by[job_id] = 0
        token = self._cancels.get(job_id)
        if token:
            token.cancel()
        task.cancel()

    async def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        """Record the end under this worker's lease; post the result only while the lease is still ours."""
        self._announced.pop(job.id, None)
        job.state, job.error, job.finished_at = state, error, time.time()
        self._cancelled_by.pop(job.id, None)
        try:
            held = await self._retry(self._record_end, job)
        except Exception:
            log.exception("job %s: could not record that it ended; its lease runs out and it runs again", job.id)
            held = False
        if not held:
            log.warning("job %s: this worker's lease ran out before it ended; another run owns it now", job.id)
            if event := self._finished_events.pop(job.id, None):
                event.set()
            return
        await self._ended(job)

    async def _record_end(self, job: Job) -> bool:
        return await self.queue.finish(job, self.me, deliver=not owner_delivers(job), lease=self.lease)

    async def _ended(self, job: Job) -> None:
        await self.signals.send(DONE, job.id)
        if owner_delivers(job):  # the gateway holding its session posts it
            if event := self._finished_events.pop(job.id, None):
                event.set()
            return
        await self._notify_finished(job)

    def lane_counts(self) -> dict[str, tuple[int, int]]:
        return {lane: counts for lane, counts in self._counts.items() if lane in self.lanes}

    async def refresh_counts(self) -> None:
        self._counts = await self.queue.lane_counts()

    def leases_held(self) -> int:
        """Jobs this worker holds now (running, or being delivered)."""
        return len(self._tasks)

    async def submit(self, job: Job, *, check_limits: bool = True, cooldown: bool = True) -> Job:
        raise RuntimeError("a worker takes jobs from the shared queue; gateways submit them")


def _restarted(job: Job) -> str:
    return t("job.restarted_twice", job.locale)

