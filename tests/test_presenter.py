"""The presenter's sends when the connection to Discord fails: a logged fallback, never an escaped exception."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import aiohttp
import pytest

from bot.jobs.job import Job, JobState
from bot.ui.presenter import LiveMessage, Presenter, Render


class FakeStorage:
    def __init__(self) -> None:
        self.links: list[tuple[int, str]] = []
        self.delivered: dict[str, str] = {}

    async def link_message(self, message_id: int, job_id: str, channel_id: int | None) -> None:
        self.links.append((message_id, job_id))

    async def mark_delivered(self, job_id: str, how: str) -> bool:
        return self.delivered.setdefault(job_id, how) == how

    async def record_part(self, job_id: str, route: str, part: int, message_id: int, channel_id: int | None) -> None:
        self.links.append((message_id, job_id))

    async def delivered_parts(self, job_id: str, route: str) -> dict[int, tuple[int, int | None]]:
        return {}

    async def clear_expired_tokens(self) -> int:
        return 0


def presenter() -> Presenter:
    bot = SimpleNamespace(settings=SimpleNamespace(edit_interval=0.0, token_margin=60.0), storage=FakeStorage(),
                          result_actions={})
    return Presenter(bot)  # type: ignore[arg-type]


def job() -> Job:
    return Job(user_id=1, task="chat", model="m", channel_id=5, state=JobState.DONE, application_id=9,
               interaction_token="tok", token_expires_at=time.time() + 900, message_id=77,
               result={"kind": "text", "text": "hello"})


@pytest.mark.parametrize("error", [aiohttp.ClientConnectionError("reset by peer"), TimeoutError(),
                                   ConnectionResetError(104, "reset")])
async def test_a_progress_edit_that_loses_the_connection_is_logged_not_raised(error, caplog):
    p = presenter()

    async def edit(job: Job, render: Render) -> None:
        raise error

    p.edit_job_message = edit  # type: ignore[method-assign]
    live = LiveMessage(p, job(), 0.0)
    live.pending = Render("50%")
    with caplog.at_level(logging.WARNING, "natty.presenter"):
        await live._flush()
    assert "progress edit failed" in caplog.text


@pytest.mark.parametrize("error", [aiohttp.ClientConnectionError("reset by peer"), TimeoutError()])
async def test_a_delivery_that_loses_the_connection_falls_back_to_the_channel(error, caplog):
    p = presenter()
    posted: list[str] = []

    async def interaction(job, renders, attachment):  # noqa: ANN001, ANN202
        raise error

    async def channel(job, renders, attachment):  # noqa: ANN001, ANN202
        posted.extend(r.content for r in renders)
        return [SimpleNamespace(id=123, channel=SimpleNamespace(id=5))]

    p._deliver_interaction = interaction  # type: ignore[method-assign]
    p._deliver_channel = channel  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "natty.presenter"):
        await p.deliver(job())
    assert posted and "hello" in posted[0]
    assert list(p.bot.storage.delivered.values()) == ["channel"]  # recorded as delivered, by the route it took
    assert "trying the channel" in caplog.text


async def test_a_delivery_whose_fallback_fails_too_is_logged_not_raised(caplog):
    p = presenter()

    async def broken(job, renders, attachment):  # noqa: ANN001, ANN202
        raise aiohttp.ServerDisconnectedError()

    p._deliver_interaction = broken  # type: ignore[method-assign]
    p._deliver_channel = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "natty.presenter"):
        await p.deliver(job())
    assert "through the channel failed too" in caplog.text
    assert p.bot.storage.delivered == {}  # not recorded as delivered: the next start tries it again
    assert "tried again at the next start" in caplog.text


async def test_finishing_a_job_clears_interaction_tokens_that_have_expired(tmp_path):
    from bot.jobs.storage import Storage

    storage = Storage(tmp_path / "db.sqlite", tmp_path / "data")
    await storage.open()
    try:
        now = time.time()
        old = Job(user_id=1, task="chat", model="m", state=JobState.DONE, interaction_token="old-secret",
                  token_expires_at=now - 1)
        fresh = Job(user_id=1, task="chat", model="m", state=JobState.RUNNING, interaction_token="fresh-secret",
                    token_expires_at=now + 600)
        for j in (old, fresh):
            await storage.insert_job(j)
        p = presenter()
        p.bot.storage = storage
        done = job()
        done.params["silent"] = True  # nothing to post: only the housekeeping runs
        await p.job_finished(done)
        assert (await storage.get_job(old.id)).interaction_token is None
        assert (await storage.get_job(fresh.id)).interaction_token == "fresh-secret"
        async with storage.db.execute("SELECT COUNT(*) FROM jobs WHERE interaction_token IS NOT NULL "
                                      "AND token_expires_at < ?", (now,)) as cur:
            assert (await cur.fetchone())[0] == 0
    finally:
        await storage.close()
