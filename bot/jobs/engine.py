"""The job engine: every generation is a durable job, run through the fair scheduler, reported to listeners.

The engine knows jobs, the catalog and the backends, not Discord: the bot's presenter listens to it and
renders messages, and `natty generate` listens with a console printer. Jobs live in the database, so after
a crash `recover()` puts every queued job back and re-runs (or fails, with a message) every running one, and
hands the listeners every finished job whose result never reached its user (`job_redeliver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.i18n import cancelled, error_message, t
from bot.jobs.database import DATABASE_ERRORS, is_busy
from bot.jobs.job import Job, JobState
from bot.jobs.scheduler import FairScheduler, Forecast
from bot.jobs.storage import Storage
from models.backends import Backends
from models.backends.http import data_url
from models.base import (
    OUTPUT,
    AudioResult,
    CancelToken,
    ImageResult,
    LabelsResult,
    Progress,
    Request,
    Result,
    RunContext,
    TextResult,
    VideoResult,
)
from models.catalog import Catalog, ModelEntry
from models.errors import BackendError, ErrorKind

log = logging.getLogger("natty.jobs")

MAX_ATTEMPTS = 2  # a job interrupted by a restart runs again once; a second interruption fails it
POSITION_HORIZON = 200  # positions past this many jobs are shown as "200+": asking stays cheap in a long queue
ANNOUNCE_LIMIT = 50  # queued jobs told their new place per change, per lane
ANNOUNCE_COALESCE = 0.2  # seconds: newcomers to a lane within this long share one recount of the places
RECORD_RETRIES = 5  # a busy database ("database is locked") is retried this often, with growing waits


class JobListener(Protocol):
    async def job_queued(self, job: Job, position: int, eta: float | None, exact: bool = True) -> None: ...
    async def job_progress(self, job: Job, progress: Progress) -> None: ...
    async def job_finished(self, job: Job) -> None: ...
    # optional: async def job_redeliver(self, job: Job) -> None, for a job that finished before a restart
    # and was never marked delivered (bot.jobs.storage `delivered_at`)


class LimitHit(Exception):
    """A submission refused by a cap, a cooldown or a quota; `message` is for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Limits:
    per_user: int
    per_guild: int
    cooldown: float
    daily_quota: int | None = None


def inline_files(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as a backend takes them: images that a conversation keeps as files (stored once, however
    many later turns refer to them) become data: URLs; a file no longer kept becomes a short note."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                ref = (part.get("image_url") or {}).get("file") if part.get("type") == "image_url" else None
                if ref:
                    try:
                        part = {"type": "image_url", "image_url": {"url": data_url(Path(ref).read_bytes())}}
                    except OSError:
                        part = {"type": "text", "text": "(an image that is no longer available)"}
                parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


def reads_files(job: Job) -> bool:
    """Whether `JobEngine.build_request` reads files for this job: an input image or audio, or a conversation
    whose messages have parts (images that `inline_files` may read)."""
    p = job.params
    return bool(p.get("image_path") or p.get("audio_path")
                or any(isinstance(m.get("content"), list) for m in p.get("messages") or ()))


def _ext(fmt: str) -> str:
    return {"jpeg": "jpg"}.get(fmt, fmt)


class JobEngine:
    def __init__(self, storage: Storage, catalog: Catalog, backends: Backends,
                 limits: Callable[[Job], Limits] | Limits) -> None:
        self.storage = storage
        self.catalog = catalog
        self.backends = backends
        self._limits = limits
        self.listeners: list[JobListener] = []
        self.scheduler = FairScheduler()
        self.active: dict[str, Job] = {}  # queued and running jobs
        self._by_user: Counter[int] = Counter()
        self._by_guild: Counter[int] = Counter()
        self._last_submit: dict[int, float] = {}
        self._admit = asyncio.Lock()  # checking the limits and counting the job are one step
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, CancelToken] = {}
        self._cancelled_by: dict[str, int] = {}
        self._durations: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=20))
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._undelivered: list[Job] = []  # finished before the last stop, never delivered: see recover()
        self._redeliver_task: asyncio.Task[None] | None = None
        self._finished_events: dict[str, asyncio.Event] = {}
        self._announced: dict[str, int] = {}  # the queue position each job's message last showed
        self._recount: dict[str, list[str]] = {}  # lanes whose places changed -> newcomers waiting for theirs
        self._recount_task: asyncio.Task[None] | None = None
        # called with (model name, exception) when a job fails: bot.jobs.availability re-checks a model that is down
        self.failure_hooks: list[Callable[[str, BaseException], None]] = []

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self, recover: bool = True) -> None:
        if recover:
            await self.recover()
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="natty-dispatch")
        if self._undelivered:  # in the background: an output check may take a while, and new jobs need not wait
            jobs, self._undelivered = self._undelivered, []
            self._redeliver_task = asyncio.create_task(self._redeliver(jobs), name="natty-redeliver")

    async def stop(self) -> None:
        """Stop dispatching and interrupt running jobs; they stay `running` in the database and are
        recovered on the next start, exactly as after a crash."""
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._recount_task:
            self._recount_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._recount_task
        if self._redeliver_task:  # what it did not reach stays undelivered, for the next start
            self._redeliver_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._redeliver_task
        for job_id, task in list(self._tasks.items()):
            job = self.active.get(job_id)
            if job is not None and job.state is JobState.RUNNING:  # a job being delivered may finish
                task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backends.aclose()

    async def recover(self) -> None:
        """Re-queue what a crash or restart interrupted, in the order it was submitted, and keep for `start` the
        finished jobs whose delivery never completed (a job is DONE in its row before its message is posted:
        a crash in between would lose it). Read first: the jobs failed here are delivered by _notify_finished."""
        self._undelivered = await self.storage.undelivered_jobs()
        for job in await self.storage.jobs_in_states(JobState.QUEUED, JobState.RUNNING):
            if job.state is JobState.RUNNING and job.attempts >= MAX_ATTEMPTS:
                job.state, job.finished_at = JobState.FAILED, time.time()
                job.error = t("job.restarted_twice", job.locale)
                await self.storage.update_job(job, "state", "finished_at", "error")
                log.warning("job %s failed after %d interrupted attempts", job.id, job.attempts)
                await self._notify_finished(job)
                continue
            if self.catalog.get(job.model) is None:
                job.state, job.finished_at = JobState.FAILED, time.time()
                job.error = t("job.model_gone", job.locale, model=job.model)
                await self.storage.update_job(job, "state", "finished_at", "error")
                await self._notify_finished(job)
                continue
            if job.state is JobState.RUNNING:
                log.info("job %s was running when the bot stopped; running it again", job.id)
                job.state = JobState.QUEUED
                await self.storage.update_job(job, "state")
            self._enqueue(job)
            log.info("job %s recovered into the queue", job.id)
        await self._announce_positions(*self.scheduler.lanes())
        self._wake.set()

    async def _redeliver(self, jobs: list[Job]) -> None:
        """Hand each undelivered finished job to the listeners that deliver again, oldest first."""
        log.info("%d finished job(s) were not delivered before the restart; delivering them", len(jobs))
        for job in jobs:
            for listener in self.listeners:
                redeliver = getattr(listener, "job_redeliver", None)
                if redeliver is None:
                    continue
                try:
                    await redeliver(job)
                except Exception:
                    log.exception("listener failed on job %s redelivery", job.id)

    # --- submission ----------------------------------------------------------------------------------

    def limits_for(self, job: Job) -> Limits:
        return self._limits(job) if callable(self._limits) else self._limits

    async def submit(self, job: Job, *, check_limits: bool = True, cooldown: bool = True) -> Job:
        """Queue a job. Raises LimitHit (with a job record saved as failed) when a cap, cooldown or quota applies.

        The limits are checked and the job counted under one lock, so simultaneous submissions cannot all
        pass a check that only one of them should. `cooldown=False` for the parts of a job a user already
        started (a story's scenes): they count towards caps and quotas but do not wait out the cooldown.
        """
        entry = self.catalog.get(job.model)
        if entry is None:
            raise ValueError(f"unknown model {job.model!r}")
        async with self._admit:
            if check_limits:
                refusal = await self._check_limits(job, cooldown=cooldown)
                if refusal:
                    await self.record_failure(job, refusal)
                    raise LimitHit(refusal)
            self._count(job)
            try:
                await self._retry(self.storage.insert_submitted, job, time.time())
            except BaseException:
                self._release(job)
                raise
            if check_limits and cooldown:
                self._last_submit[job.user_id] = time.monotonic()
        self._finished_events.setdefault(job.id, asyncio.Event())
        log.info("job %s queued: %s on %s for user %s in channel %s", job.id, job.task, job.model, job.user_id,
                 job.channel_id)
        await self._queue(job, entry)
        return job

    async def _queue(self, job: Job, entry: ModelEntry) -> None:
        """Hand an admitted, recorded job to the scheduler (bot.jobs.roles: to the shared queue)."""
        self.scheduler.push(entry.backend_key, entry.max_concurrency, job.user_id, job.id)
        # a newcomer can go ahead of jobs already waiting: tell those whose place changed, and this one. The
        # first newcomer in a while hears at once; those who follow within ANNOUNCE_COALESCE share one recount
        # (a burst of 200 recounted the lane 200 times, on the loop)
        key = entry.backend_key
        if key in self._recount:
            self._recount[key].append(job.id)
        else:
            await self._announce_positions(key)
            if job.id not in self._announced:  # further back than the announced window
                await self._notify_queued(job, self.forecast(job.id) or Forecast(1))
            self._recount[key] = []
            if self._recount_task is None or self._recount_task.done():
                self._recount_task = asyncio.create_task(self._recount_soon(), name="natty-positions")
        self._wake.set()

    async def _recount_soon(self) -> None:
        while self._recount:
            await asyncio.sleep(ANNOUNCE_COALESCE)
            lanes, self._recount = self._recount, {}
            if changed := [key for key, newcomers in lanes.items() if newcomers]:
                await self._announce_positions(*changed)
            for key, newcomers in lanes.items():
                waiting = [job for job_id in newcomers if (job := self.active.get(job_id)) is not None
                           and job.state is JobState.QUEUED and job_id not in self._announced]
                if not waiting:  # all of them inside the announced window, or gone
                    continue
                # further back than the announced window: one forecast of the lane for all of them (a forecast
                # each, after a burst of 200, held the loop for tens of ms), and the loop free between messages
                places = self._places(key)
                for job in waiting:
                    await self._notify_queued(job, places.get(job.id, Forecast(len(places) + 1, False)))
                    await asyncio.sleep(0)

    def lane_counts(self) -> dict[str, tuple[int, int]]:
        """Queued and running jobs per lane (bot.ops' metrics)."""
        return {lane: (self.scheduler.queued(lane), self.scheduler.running(lane)) for lane in self.scheduler.lanes()}

    async def refresh_counts(self) -> None:
        """Read what lane_counts shows, where it lives elsewhere (the shared queue of bot.jobs.roles)."""
        return None

    async def wait_text(self, job: Job, locale: str | None) -> str:
        """Where a queued job stands, for /jobs (" · position 3"): its place in the fair queue."""
        forecast = self.forecast(job.id)
        shown = "?" if forecast is None else f"{forecast.position:,}" if forecast.exact \
            else f"{forecast.position - 1:,}+"
        return t("jobs.position", locale, position=shown)

    async def record_failure(self, job: Job, message: str) -> Job:
        """Keep a record of a request that was refused before it could queue."""
        job.state, job.error, job.finished_at = JobState.FAILED, message, time.time()
        await self.storage.insert_job(job)
        log.info("job %s refused: %s", job.id, message)
        return job

    async def _check_limits(self, job: Job, cooldown: bool = True) -> str | None:
        limits = self.limits_for(job)
        loc = job.locale
        if self._by_user[job.user_id] >= limits.per_user:
            return t("limit.per_user", loc, count=self._by_user[job.user_id], limit=limits.per_user)
        if job.guild_id and self._by_guild[job.guild_id] >= limits.per_guild:
            return t("limit.per_guild", loc, count=self._by_guild[job.guild_id], limit=limits.per_guild)
        last = self._last_submit.get(job.user_id)
        if cooldown and limits.cooldown and last is not None:
            wait = limits.cooldown - (time.monotonic() - last)
            if wait > 0:
                return t("limit.cooldown", loc, seconds=max(1, round(wait)))
        if limits.daily_quota:
            state = await self.storage.user_state(job.user_id, job.guild_id)
            today = time.strftime("%Y-%m-%d", time.gmtime())
            if state["day"] == today and state["jobs_today"] >= limits.daily_quota:
                return t("limit.daily_quota", loc, quota=limits.daily_quota)
        return None

    def _prune_cooldowns(self) -> None:
        """Forget cooldowns that have run out (the longest a server may set is a day)."""
        if len(self._last_submit) > 1000:
            cutoff = time.monotonic() - 86400
            for user, at in list(self._last_submit.items()):
                if at < cutoff:
                    del self._last_submit[user]

    def _count(self, job: Job) -> None:
        self.active[job.id] = job
        self._by_user[job.user_id] += 1
        if job.guild_id:
            self._by_guild[job.guild_id] += 1

    def _enqueue(self, job: Job) -> None:
        entry = self.catalog.get(job.model)
        assert entry is not None
        self._count(job)
        self._finished_events.setdefault(job.id, asyncio.Event())
        self.scheduler.push(entry.backend_key, entry.max_concurrency, job.user_id, job.id)

    def _release(self, job: Job) -> None:
        if self.active.pop(job.id, None) is None:
            return  # released already: counting down twice would open a cap
        self._by_user[job.user_id] -= 1
        if self._by_user[job.user_id] <= 0:
            del self._by_user[job.user_id]
        if job.guild_id:
            self._by_guild[job.guild_id] -= 1
            if self._by_guild[job.guild_id] <= 0:
                del self._by_guild[job.guild_id]
        self._prune_cooldowns()

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until a job finishes; returns its final record."""
        event = self._finished_events.get(job_id)
        if event is not None:
            await asyncio.wait_for(event.wait(), timeout)
        job = await self.storage.get_job(job_id)
        assert job is not None
        return job

    # --- cancel --------------------------------------------------------------------------------------

    async def cancel(self, job_id: str, by_user: int) -> bool:
        """Cancel a queued or running job. Permission checks are the caller's (the presenter's)."""
        job = self.active.get(job_id)
        if job is None:
            return False
        self._cancelled_by[job_id] = by_user
        lane = self.scheduler.lane_of(job_id)
        if job.state is JobState.QUEUED and self.scheduler.discard(job_id):
            self._release(job)
            await self._finish(job, JobState.CANCELLED, error=cancelled(job.locale))
            if lane:
                await self._announce_positions(lane)
            return True
        token = self._cancels.get(job_id)
        if token:
            token.cancel()
        task = self._tasks.get(job_id)
        if task:
            task.cancel()
        return True

    # --- running -------------------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            lanes: set[str] = set()
            for key, job_id in self.scheduler.pop_ready():
                job = self.active.get(job_id)
                if job is None:
                    self.scheduler.finished(job_id)
                    continue
                job.state, job.started_at = JobState.RUNNING, time.time()  # before the forecast counts it
                self._tasks[job_id] = asyncio.create_task(self._run(key, job), name=f"job-{job_id}")
                lanes.add(key)
            if lanes:
                await self._announce_positions(*lanes)

    # --- positions and ETAs: the scheduler's rule run forward -----------------------------------------

    def _forecast_kw(self, key: str) -> dict[str, Any]:
        """Durations for a lane's forecast: each model's median run time (a model not yet timed counts as the
        slowest that was). With none timed yet, jobs are taken to end in the order they started, and no ETA
        is shown."""
        medians = {e.name: statistics.median(self._durations[e.name]) for e in self.catalog.entries.values()
                   if e.backend_key == key and self._durations.get(e.name)}
        if not medians:
            return {}
        slowest = max(medians.values())

        def duration(job_id: str) -> float:
            job = self.active.get(job_id)
            return medians.get(job.model, slowest) if job else slowest

        def started_at(job_id: str) -> float | None:
            job = self.active.get(job_id)
            return job.started_at if job else None

        return {"now": time.time(), "duration": duration, "started_at": started_at}

    def forecast(self, job_id: str) -> Forecast | None:
        """Where a queued job stands: its position and, when durations are known, when it starts."""
        key = self.scheduler.lane_of(job_id)
        if key is None:
            return None
        return self.scheduler.position(job_id, POSITION_HORIZON, **self._forecast_kw(key))

    def _places(self, key: str) -> dict[str, Forecast]:
        """Every queued job of a lane within POSITION_HORIZON, with its place: one forecast for many jobs."""
        kw = self._forecast_kw(key)
        now = kw.get("now", 0.0)
        return {job_id: Forecast(i + 1, True, None if at is None else max(0.0, at - now))
                for i, (job_id, at) in enumerate(self.scheduler.forecast(key, POSITION_HORIZON, **kw))}

    async def _announce_positions(self, *lanes: str) -> None:
        """Tell the first queued jobs of these lanes their new place, when it changed. Bounded per lane, so a
        huge queue stays cheap; jobs further back hear when they move up into that window."""
        for key in lanes:
            kw = self._forecast_kw(key)
            now = kw.get("now", 0.0)
            for i, (job_id, at) in enumerate(self.scheduler.forecast(key, ANNOUNCE_LIMIT, **kw)):
                job = self.active.get(job_id)
                if job is None or self._announced.get(job_id) == i + 1:
                    continue
                await self._notify_queued(job, Forecast(i + 1, True, None if at is None else max(0.0, at - now)))

    def eta(self, job: Job, forecast: Forecast) -> float | None:
        """Seconds until the job is done: when it starts, plus its model's typical run time."""
        own = self._durations.get(job.model)
        if forecast.starts_in is None or not own:
            return None
        return forecast.starts_in + statistics.median(own)

    def build_request(self, job: Job, entry: ModelEntry) -> Request:
        """Turn a job record into a backend request: the catalog's defaults under the job's parameters."""
        p = dict(job.params)
        params = {**entry.params, **p.pop("model_params", {})}
        messages = p.get("messages")
        request = Request(task=job.task, prompt=job.prompt, params=params, seed=p.get("seed"),
                          negative_prompt=p.get("negative") or None,
                          messages=inline_files(messages) if messages else messages)
        if p.get("image_path"):
            request.image = Path(p["image_path"]).read_bytes()
        if p.get("audio_path"):
            request.audio = Path(p["audio_path"]).read_bytes()
        return request

    async def _run(self, key: str, job: Job) -> None:
        """Run one job. Whatever happens after it starts (the backend failing, the database locked, the disk
        full), it ends with a message, its slot is freed and it is recorded."""
        entry = self.catalog.get(job.model)
        assert entry is not None
        cancel = CancelToken()
        self._cancels[job.id] = cancel
        loop = asyncio.get_running_loop()
        job.attempts += 1  # the dispatch loop marked it running and stamped its start
        state, error = JobState.FAILED, None
        started = time.monotonic()
        try:
            await self._retry(self.storage.update_job, job, "state", "started_at", "attempts")
            log.info("job %s running on %s (attempt %d)", job.id, entry.backend_key, job.attempts)

            def report(progress: Progress) -> None:  # called from any thread
                loop.call_soon_threadsafe(self._progress_soon, job, progress)

            ctx = RunContext(report=report, cancel=cancel, deadline=time.monotonic() + entry.timeout)
            await self._notify_progress(job, Progress(fraction=0.0, message=t("progress.starting", job.locale)))
            # reads the job's input files and inlines a conversation's images: off the loop (a job with none is
            # built here: a thread hop costs the loop more than the few dict copies)
            request = (await asyncio.to_thread(self.build_request, job, entry) if reads_files(job)
                       else self.build_request(job, entry))
            result = await asyncio.wait_for(
                self._generate(entry, request, ctx, int(job.params.get("count", 1)), job.locale),
                timeout=entry.timeout + 5)
            elapsed = time.monotonic() - started
            # file writes off the loop; a text or labels result writes none
            job.result = (self._save_result(job, result) if isinstance(result, TextResult | LabelsResult)
                          else await asyncio.to_thread(self._save_result, job, result))
            self._durations[job.model].append(elapsed)
            state = JobState.DONE
            log.info("job %s done in %.2f s", job.id, elapsed)
        except asyncio.CancelledError:
            cancel.cancel()
            if job.id in self._cancelled_by:
                state, error = JobState.CANCELLED, cancelled(job.locale)
            else:  # shutting down: leave it `running` so recovery runs it again
                self.scheduler.finished(job.id)
                self._cleanup(job)
                raise
        except BackendError as exc:
            state = JobState.CANCELLED if exc.kind is ErrorKind.CANCELLED else JobState.FAILED
            log.warning("job %s failed: %s", job.id, exc)
            error = error_message(exc, entry.name, job.locale)
            for hook in self.failure_hooks:
                hook(entry.name, exc)
        except TimeoutError:
            log.warning("job %s timed out after %.0f s", job.id, entry.timeout)
            error = error_message(BackendError(ErrorKind.TIMEOUT), entry.name, job.locale)
        except OSError as exc:  # the disk (ENOSPC) or the database, while saving
            log.error("job %s could not be saved: %s", job.id, exc)
            job.result = None
            error = t("job.save_failed", job.locale)
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            job.result = None
            error = (t("job.save_failed", job.locale) if isinstance(exc, DATABASE_ERRORS)
                     else error_message(exc, entry.name, job.locale))
        await self._finish_released(key, job, state, error)

    async def _generate(self, entry: ModelEntry, request: Request, ctx: RunContext, count: int,
                        locale: str | None = None) -> Result:
        """Run the backend; several images are several calls with consecutive seeds, gathered into one result."""
        if count <= 1 or OUTPUT.get(request.task) != "image":
            return await self.backends.run(entry, request, ctx)
        first_seed = request.seed if request.seed is not None else 0
        results: list[ImageResult] = []
        for i in range(count):
            request.seed = first_seed + i
            result = await self.backends.run(entry, request, ctx)
            assert isinstance(result, ImageResult)
            results.append(result)
            ctx.report(Progress(fraction=(i + 1) / count, message=t("progress.image", locale, n=i + 1, count=count)))
        combined = results[0]
        combined.meta["seed"] = first_seed
        combined.meta["images"] = [r.data for r in results]
        return combined

    def _progress_soon(self, job: Job, progress: Progress) -> None:
        if job.state is JobState.RUNNING:
            asyncio.ensure_future(self._notify_progress(job, progress))

    def _save_result(self, job: Job, result: Result) -> dict[str, Any]:
        """Keep the result's bytes in the results store (bot.jobs.results), never only as a CDN link. Blocks:
        runs in a thread."""
        out: dict[str, Any] = {"meta": result.meta, "files": []}
        if isinstance(result, TextResult):
            out.update(kind="text", text=result.text)
        elif isinstance(result, LabelsResult):
            out.update(kind="labels", labels=result.labels)
        elif isinstance(result, ImageResult | AudioResult | VideoResult):
            kind = {ImageResult: "image", AudioResult: "audio", VideoResult: "video"}[type(result)]
            images = result.meta.pop("images", None) if isinstance(result, ImageResult) else None
            blobs = images or [result.data]
            for i, blob in enumerate(blobs):
                name = f"{kind}{'' if len(blobs) == 1 else f'_{i + 1}'}.{_ext(result.format)}"
                out["files"].append({"ref": self.storage.results.put(job.id, name, blob), "filename": name})
            for name, blob in result.extra_files:
                name = Path(name).name or "file"
                out["files"].append({"ref": self.storage.results.put(job.id, name, blob), "filename": name,
                                     "extra": True})
            out["kind"] = kind
            if isinstance(result, AudioResult):
                out["duration"] = result.duration
        return out

    async def _finish_released(self, key: str, job: Job, state: JobState, error: str | None = None) -> None:
        self.scheduler.finished(job.id)
        self._release(job)
        try:
            await self._finish(job, state, error)
        finally:
            self._cleanup(job)
            self._wake.set()

    def _cleanup(self, job: Job) -> None:
        self._tasks.pop(job.id, None)
        self._cancels.pop(job.id, None)

    async def _retry(self, op: Callable[..., Any], *args: Any) -> Any:
        """Run a storage call, waiting out a busy database a few times before giving up."""
        for attempt in range(RECORD_RETRIES):
            try:
                return await op(*args)
            except Exception as exc:
                if not _is_busy(exc) or attempt == RECORD_RETRIES - 1:
                    raise
                log.warning("database busy (%s); retrying", exc)
                await asyncio.sleep(0.05 * 2 ** attempt)
        return None

    async def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        self._announced.pop(job.id, None)
        job.state, job.error, job.finished_at = state, error, time.time()
        try:
            await self._retry(self.storage.update_job, job, "state", "error", "finished_at", "result")
        except Exception:  # the user still hears how it ended; the record is stale until the next start
            log.exception("job %s: could not record that it ended (%s)", job.id, state)
        self._cancelled_by.pop(job.id, None)
        await self._notify_finished(job)

    # --- listeners: one failing listener never stops the engine or the others -------------------------

    async def _notify_queued(self, job: Job, forecast: Forecast) -> None:
        self._announced[job.id] = forecast.position
        for listener in self.listeners:
            try:
                await listener.job_queued(job, forecast.position, self.eta(job, forecast), forecast.exact)
            except Exception:
                log.exception("listener failed on job %s queued", job.id)

    async def _notify_progress(self, job: Job, progress: Progress) -> None:
        for listener in self.listeners:
            try:
                await listener.job_progress(job, progress)
            except Exception:
                log.exception("listener failed on job %s progress", job.id)

    async def _notify_finished(self, job: Job) -> None:
        for listener in self.listeners:
            try:
                await listener.job_finished(job)
            except Exception:
                log.exception("listener failed on job %s finished", job.id)
        event = self._finished_events.pop(job.id, None)
        if event:
            event.set()


def _is_busy(exc: BaseException) -> bool:
    return is_busy(exc)
