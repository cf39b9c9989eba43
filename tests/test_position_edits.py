"""Queue positions of a waiting job: many changes in a short time make few edits, and the last one shown is right."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiohttp
import yarl

from bot.jobs.job import Job, JobState
from bot.ui.presenter import Presenter, Render
from models.base import Progress


def presenter(edits: list[tuple[str, str]]) -> Presenter:
    bot = SimpleNamespace(settings=SimpleNamespace(edit_interval=0.0, token_margin=60.0), result_actions={})
    p = Presenter(bot)  # type: ignore[arg-type]
    p.position_interval, p.first_position_delay = 0.2, 0.0

    async def edit(job: Job, render: Render) -> None:
        edits.append((job.id, render.content))

    p.edit_job_message = edit  # type: ignore[method-assign]
    return p


def waiting() -> Job:
    return Job(user_id=1, task="text-to-image", model="m", channel_id=5, state=JobState.QUEUED, application_id=9,
               interaction_token="tok", token_expires_at=time.time() + 900, message_id=77)


async def test_many_position_changes_make_few_edits_and_the_last_position_shows():
    edits: list[tuple[str, str]] = []
    p = presenter(edits)
    job = waiting()
    for position in range(40, 0, -1):  # forty changes well inside one interval
        await p.job_queued(job, position, None)
        await asyncio.sleep(0)
    await asyncio.sleep(0.5)
    assert 1 <= len(edits) <= 3
    assert "position 1." in edits[-1][1]


async def test_a_position_pending_when_the_job_starts_is_never_shown():
    edits: list[tuple[str, str]] = []
    p = presenter(edits)
    p.first_position_delay = 0.1
    job = waiting()
    await p.job_queued(job, 3, None)
    job.state = JobState.RUNNING  # the dispatcher took it before its position went out
    await asyncio.sleep(0.3)
    assert edits == []


async def test_progress_edits_wait_while_an_interaction_is_unanswered_and_go_once_it_is():
    edits: list[tuple[str, str]] = []
    p = presenter(edits)
    parsers: dict = {"INTERACTION_CREATE": lambda data: None}
    trace = aiohttp.TraceConfig()
    p.acks.watch(parsers, trace)
    parsers["INTERACTION_CREATE"]({"id": "123456789012345678"})  # a command arrives, not yet acknowledged
    job = waiting()
    job.state = JobState.RUNNING
    await p.job_progress(job, Progress(fraction=0.5))
    await asyncio.sleep(0.2)
    assert edits == []  # held back: the acknowledgement goes first
    callback = SimpleNamespace(method="POST", url=yarl.URL(
        "http://discord/api/v10/interactions/123456789012345678/tok/callback"))
    for hook in trace.on_request_end:
        await hook(None, None, callback)
    await asyncio.sleep(0.1)
    assert len(edits) == 1 and "50%" in edits[0][1]


async def test_an_interaction_never_answered_holds_edits_back_only_for_a_while():
    edits: list[tuple[str, str]] = []
    p = presenter(edits)
    p.acks.limit = 0.2
    p.acks.arrived(1)
    job = waiting()
    job.state = JobState.RUNNING
    await p.job_progress(job, Progress(fraction=0.25))
    await asyncio.sleep(0.6)
    assert len(edits) == 1 and p.acks.waits == 1
