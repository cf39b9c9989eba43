"""Operations: `GET /healthz` and `GET /metrics` (Prometheus text) for one bot, on its own event loop.

Served only when NATTY_METRICS_PORT is set. Each bot has its own CollectorRegistry, so several bots in one
process (the tests) keep separate numbers. Queue depth and running jobs are read from the scheduler at scrape
time; job durations and outcomes come from a JobListener; acknowledgement latency and Discord's 429s from an
aiohttp trace on the bot's HTTP session, which carries every REST call and every interaction callback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.jobs.job import Job
from models.base import Progress
from models.errors import redact_credentials

if TYPE_CHECKING:
    from bot.client import NattyBot
    from bot.jobs.engine import JobEngine

log = logging.getLogger("natty.ops")

DB_CHECK_TIMEOUT = 5.0  # seconds: a database that does not answer by then is reported unreachable
CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")
JOB_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
ACK_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5, 10)  # Discord wants an answer within 3 s


class _QueueCollector(Collector):
    """Queued and running jobs per lane: the fair scheduler's at the moment of the scrape, or the shared queue's as
    read just before it (JobEngine.refresh_counts)."""

    def __init__(self, engine: JobEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily("natty_queue_depth", "Jobs waiting in each lane (one backend key)",
                                   labels=["lane"])
        running = GaugeMetricFamily("natty_jobs_running", "Jobs running in each lane", labels=["lane"])
        for lane, (waiting, busy) in self.engine.lane_counts().items():
            label = redact_credentials(lane)  # a lane may be a server's URL
            queued.add_metric([label], waiting)
            running.add_metric([label], busy)
        yield queued
        yield running
        held = getattr(self.engine, "leases_held", None)
        if held is not None:  # a worker of the shared queue (bot.jobs.roles)
            leases = GaugeMetricFamily("natty_worker_leases", "Jobs this worker holds by a lease (running, or "
                                       "delivering their result)")
            leases.add_metric([], held())
            yield leases


class Ops:
    """The metrics of one bot and the small HTTP server that shows them and the bot's health."""

    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        self.registry = CollectorRegistry()
        self.job_seconds = Histogram("natty_job_duration_seconds", "Time from a job's start to its end, per model",
                                     ["model"], buckets=JOB_BUCKETS, registry=self.registry)
        self.jobs_finished = Counter("natty_jobs_finished", "Jobs that ended, per model and final state",
                                     ["model", "state"], registry=self.registry)
        self.ack_seconds = Histogram("natty_interaction_ack_seconds",
                                     "Time from an interaction's creation to Discord's answer to the bot's "
                                     "acknowledgement (defer or response)", buckets=ACK_BUCKETS,
                                     registry=self.registry)
        self.rate_limited = Counter("natty_discord_rate_limited", "429 responses from Discord's REST API, per "
                                    "X-RateLimit-Scope (user, global, shared; unknown without one)", ["scope"],
                                    registry=self.registry)
        self.registry.register(_QueueCollector(bot.engine))
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_end.append(self._request_ended)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the port bound, once serving (NATTY_METRICS_PORT, or a free one for 0)

    # --- observations --------------------------------------------------------------------------------

    async def job_queued(self, job: Job, position: int, eta: float | None, exact: bool = True) -> None:
        return None

    async def job_progress(self, job: Job, progress: Progress) -> None:
        return None

    async def job_finished(self, job: Job) -> None:
        self.jobs_finished.labels(model=job.model, state=str(job.state)).inc()
        if job.started_at is not None and job.finished_at is not None:  # a job cancelled in the queue never ran
            self.job_seconds.labels(model=job.model).observe(max(0.0, job.finished_at - job.started_at))

    async def _request_ended(self, session: aiohttp.ClientSession, context: Any,
                             params: aiohttp.TraceRequestEndParams) -> None:
        if params.response.status == 429:
            self.rate_limited.labels(scope=params.response.headers.get("X-RateLimit-Scope", "unknown")).inc()
        if params.method == "POST" and (match := CALLBACK.search(params.url.path)):
            created = discord.utils.snowflake_time(int(match.group(1))).timestamp()
            self.ack_seconds.observe(max(0.0, time.time() - created))

    # --- the HTTP server -----------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = self._runner.addresses[0][1]
        log.info("health and metrics on http://%s:%d/healthz and /metrics", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        await self._refresh()
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while the database answers (the gateway's state is reported, not judged: it reconnects on its
        own); 503 when it does not."""
        problem = await self.database_problem()
        if problem is None:
            await self._refresh()
        body = {"status": "ok" if problem is None else "unhealthy",
                "gateway_connected": self.bot.is_ready() and not self.bot.is_closed(),
                "queue_depth": sum(waiting for waiting, _ in self.bot.engine.lane_counts().values()),
                "database_reachable": problem is None}
        if problem is not None:
            body["database_error"] = problem
        return web.json_response(body, status=200 if problem is None else 503)

    async def _refresh(self) -> None:
        try:
            await asyncio.wait_for(self.bot.engine.refresh_counts(), DB_CHECK_TIMEOUT)
        except Exception as exc:  # the scrape shows the last counts read
            log.warning("could not read the shared queue's counts: %s", type(exc).__name__)

    async def database_problem(self) -> str | None:
        """None when a trivial SELECT goes through the storage's runner; else the kind of error."""
        try:
            await asyncio.wait_for(self.bot.storage.db.execute("SELECT 1"), DB_CHECK_TIMEOUT)
        except Exception as exc:  # whatever the driver raises, the answer is "not reachable"
            return type(exc).__name__
        return None
