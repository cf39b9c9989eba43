"""The job engine: every generation is a durable job, run through the fair scheduler, reported to listeners.

The engine knows jobs, the catalog and the backends, not Discord: the bot's presenter listens to it and
renders messages, and `natty generate` listens with a console printer. Jobs live in the database, so after
a crash `recover()` puts every queued job back and re-runs (or fails, with a message) every running one.
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
from bot.jobs import Job, JobState
from bot.scheduler import FairScheduler
from bot.storage import Storage
from models.backends import Backends
from models.base import (
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


class JobListener(Protocol):
    async def job_queued(self, job: Job, position: int, eta: float | None) -> None: ...
    async def job_progress(self, job: Job, progress: Progress) -> None: ...
    async def job_finished(self, job: Job) -> None: ...


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
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancels: dict[str, CancelToken] = {}
        self._cancelled_by: dict[str, int] = {}
        self._durations: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=20))
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._finished_events: dict[str, asyncio.Event] = {}
        self._announced: dict[str, int] = {}  # the queue position each job's message last showed
        self.requests: dict[str, Callable[[Job], Request]] = {}  # task -> request builder override

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self, recover: bool = True) -> None:
        if recover:
            await self.recover()
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="natty-dispatch")

    async def stop(self) -> None:
        """Stop dispatching and interrupt running jobs; they stay `running` in the database and are
        recovered on the next start, exactly as after a crash."""
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for job_id, task in list(self._tasks.items()):
            job = self.active.get(job_id)
            if job is not None and job.state is JobState.RUNNING:  # a job being delivered may finish
                task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backends.aclose()

    async def recover(self) -> None:
        """Re-queue what a crash or restart interrupted, in the order it was submitted."""
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
        await self._announce_positions()
        self._wake.set()

    # --- submission ----------------------------------------------------------------------------------

    def limits_for(self, job: Job) -> Limits:
        return self._limits(job) if callable(self._limits) else self._limits

    async def submit(self, job: Job, *, check_limits: bool = True) -> Job:
        """Queue a job. Raises LimitHit (with a job record saved as failed) when a cap or cooldown applies."""
        entry = self.catalog.get(job.model)
        if entry is None:
            raise ValueError(f"unknown model {job.model!r}")
        if check_limits:
            refusal = await self._check_limits(job)
            if refusal:
                await self.record_failure(job, refusal)
                raise LimitHit(refusal)
        await self.storage.insert_job(job)
        await self.storage.record_job_start(job.user_id, job.guild_id, time.time())
        self._last_submit[job.user_id] = time.monotonic()
        self._enqueue(job)
        log.info("job %s queued: %s on %s for user %s in channel %s", job.id, job.task, job.model, job.user_id,
                 job.channel_id)
        position = self.scheduler.position(job.id) or 1
        await self._notify_queued(job, position)
        self._wake.set()
        return job

    async def record_failure(self, job: Job, message: str) -> Job:
        """Keep a record of a request that was refused before it could queue."""
        job.state, job.error, job.finished_at = JobState.FAILED, message, time.time()
        await self.storage.insert_job(job)
        log.info("job %s refused: %s", job.id, message)
        return job

    async def _check_limits(self, job: Job) -> str | None:
        limits = self.limits_for(job)
        loc = job.locale
        if self._by_user[job.user_id] >= limits.per_user:
            return t("limit.per_user", loc, count=self._by_user[job.user_id], limit=limits.per_user)
        if job.guild_id and self._by_guild[job.guild_id] >= limits.per_guild:
            return t("limit.per_guild", loc, count=self._by_guild[job.guild_id], limit=limits.per_guild)
        last = self._last_submit.get(job.user_id)
        if limits.cooldown and last is not None:
            wait = limits.cooldown - (time.monotonic() - last)
            if wait > 0:
                return t("limit.cooldown", loc, seconds=max(1, round(wait)))
        if limits.daily_quota:
            state = await self.storage.user_state(job.user_id, job.guild_id)
            today = time.strftime("%Y-%m-%d", time.gmtime())
            if state["day"] == today and state["jobs_today"] >= limits.daily_quota:
                return t("limit.daily_quota", loc, quota=limits.daily_quota)
        return None

    def _enqueue(self, job: Job) -> None:
        entry = self.catalog.get(job.model)
        assert entry is not None
        self.active[job.id] = job
        self._by_user[job.user_id] += 1
        if job.guild_id:
            self._by_guild[job.guild_id] += 1
        self._finished_events.setdefault(job.id, asyncio.Event())
        self.scheduler.push(entry.backend_key, entry.max_concurrency, job.user_id, job.id)

    def _release(self, job: Job) -> None:
        self.active.pop(job.id, None)
        self._by_user[job.user_id] -= 1
        if job.guild_id:
            self._by_guild[job.guild_id] -= 1

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
        if job.state is JobState.QUEUED and self.scheduler.discard(job_id):
            self._release(job)
            await self._finish(job, JobState.CANCELLED, error=cancelled(job.locale))
            await self._announce_positions()
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
            started = False
            for key, job_id in self.scheduler.pop_ready():
                job = self.active.get(job_id)
                if job is None:
                    self.scheduler.finished(key)
                    continue
                self._tasks[job_id] = asyncio.create_task(self._run(key, job), name=f"job-{job_id}")
                started = True
            if started:
                await self._announce_positions()

    async def _announce_positions(self, limit: int = 50) -> None:
        """Tell the first queued jobs of each lane their new place. Bounded, so a huge queue stays cheap."""
        shown = 0
        for job in list(self.active.values()):
            if shown >= limit:
                break
            if job.state is JobState.QUEUED:
                position = self.scheduler.position(job.id)
                if position is not None and self._announced.get(job.id) != position:
                    await self._notify_queued(job, position)
                shown += 1

    def eta(self, job: Job, position: int) -> float | None:
        durations = self._durations.get(job.model)
        if not durations:
            return None
        entry = self.catalog.get(job.model)
        lanes = entry.max_concurrency if entry else 1
        return statistics.median(durations) * ((position + lanes - 1) // lanes + 1)

    def build_request(self, job: Job, entry: ModelEntry) -> Request:
        """Turn a job record into a backend request: the catalog's defaults under the job's parameters."""
        if job.task in self.requests:
            return self.requests[job.task](job)
        p = dict(job.params)
        params = {**entry.params, **p.pop("model_params", {})}
        request = Request(task=job.task, prompt=job.prompt, params=params, seed=p.get("seed"),
                          negative_prompt=p.get("negative") or None, messages=p.get("messages"))
        if p.get("image_path"):
            request.image = Path(p["image_path"]).read_bytes()
        if p.get("audio_path"):
            request.audio = Path(p["audio_path"]).read_bytes()
        return request

    async def _run(self, key: str, job: Job) -> None:
        entry = self.catalog.get(job.model)
        assert entry is not None
        cancel = CancelToken()
        self._cancels[job.id] = cancel
        loop = asyncio.get_running_loop()
        job.state, job.started_at, job.attempts = JobState.RUNNING, time.time(), job.attempts + 1
        await self.storage.update_job(job, "state", "started_at", "attempts")
        log.info("job %s running on %s (attempt %d)", job.id, entry.backend_key, job.attempts)

        def report(progress: Progress) -> None:  # called from any thread
            loop.call_soon_threadsafe(self._progress_soon, job, progress)

        ctx = RunContext(report=report, cancel=cancel, deadline=time.monotonic() + entry.timeout)
        await self._notify_progress(job, Progress(fraction=0.0, message=t("progress.starting", job.locale)))
        started = time.monotonic()
        try:
            request = self.build_request(job, entry)
            result = await asyncio.wait_for(
                self._generate(entry, request, ctx, int(job.params.get("count", 1)), job.locale),
                timeout=entry.timeout + 5)
        except asyncio.CancelledError:
            cancel.cancel()
            if job.id in self._cancelled_by:
                await self._finish_released(key, job, JobState.CANCELLED, error=cancelled(job.locale))
            else:  # shutting down: leave it `running` so recovery runs it again
                self.scheduler.finished(key)
                self._cleanup(job)
            raise
        except BackendError as exc:
            state = JobState.CANCELLED if exc.kind is ErrorKind.CANCELLED else JobState.FAILED
            log.warning("job %s failed: %s", job.id, exc)
            await self._finish_released(key, job, state, error=error_message(exc, entry.name, job.locale))
        except TimeoutError:
            log.warning("job %s timed out after %.0f s", job.id, entry.timeout)
            await self._finish_released(
                key, job, JobState.FAILED,
                error=error_message(BackendError(ErrorKind.TIMEOUT), entry.name, job.locale))
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            await self._finish_released(key, job, JobState.FAILED, error=error_message(exc, entry.name, job.locale))
        else:
            self._durations[job.model].append(time.monotonic() - started)
            job.result = await asyncio.to_thread(self._save_result, job, result)  # file writes off the loop
            await self._finish_released(key, job, JobState.DONE)
            log.info("job %s done in %.2f s", job.id, time.monotonic() - started)

    async def _generate(self, entry: ModelEntry, request: Request, ctx: RunContext, count: int,
                        locale: str | None = None) -> Result:
        """Run the backend; several images are several calls with consecutive seeds, gathered into one result."""
        if count <= 1 or request.task not in ("text-to-image", "image-to-image"):
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
        """Keep the result's bytes under the data folder, never only as a CDN link."""
        out: dict[str, Any] = {"meta": result.meta, "files": []}
        if isinstance(result, TextResult):
            out.update(kind="text", text=result.text)
        elif isinstance(result, LabelsResult):
            out.update(kind="labels", labels=result.labels)
        elif isinstance(result, ImageResult | AudioResult | VideoResult):
            kind = {ImageResult: "image", AudioResult: "audio", VideoResult: "video"}[type(result)]
            images = result.meta.pop("images", None) if isinstance(result, ImageResult) else None
            blobs = images or [result.data]
            folder = self.storage.result_dir(job.id)
            for i, blob in enumerate(blobs):
                name = f"{kind}{'' if len(blobs) == 1 else f'_{i + 1}'}.{_ext(result.format)}"
                (folder / name).write_bytes(blob)
                out["files"].append({"path": str(folder / name), "filename": name})
            out["kind"] = kind
            if isinstance(result, AudioResult):
                out["duration"] = result.duration
        return out

    async def _finish_released(self, key: str, job: Job, state: JobState, error: str | None = None) -> None:
        self.scheduler.finished(key)
        self._release(job)
        try:
            await self._finish(job, state, error)
        finally:
            self._cleanup(job)
            self._wake.set()

    def _cleanup(self, job: Job) -> None:
        self._tasks.pop(job.id, None)
        self._cancels.pop(job.id, None)

    async def _finish(self, job: Job, state: JobState, error: str | None = None) -> None:
        self._announced.pop(job.id, None)
        job.state, job.error, job.finished_at = state, error, time.time()
        await self.storage.update_job(job, "state", "error", "finished_at", "result")
        self._cancelled_by.pop(job.id, None)
        await self._notify_finished(job)

    # --- listeners: one failing listener never stops the engine or the others -------------------------

    async def _notify_queued(self, job: Job, position: int) -> None:
        self._announced[job.id] = position
        for listener in self.listeners:
            try:
                await listener.job_queued(job, position, self.eta(job, position))
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
