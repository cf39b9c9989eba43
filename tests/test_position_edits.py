"""Queue positions of a waiting job: many changes in a short time make few edits, and the last one shown is right."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from bot.jobs.job import Job, JobState
from bot.ui.presenter import Presenter, Render


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
