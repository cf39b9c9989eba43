"""Durable delivery: a job's row says DONE before its message is posted, so a crash in between must not lose the
result, and a delivery cut off halfway must be finished without posting any part twice. Where Discord will never
take the result (the bot lacks a permission), the job is settled with a log line and a note instead of retried
forever."""

import asyncio
import logging

from bot.jobs.job import JobState
from tests.fakediscord import ATTACH_FILES, SEND_MESSAGES
from tests.harness import Natty

LONG_CHAT = """
[[model]]
name = "long-chat"
task = "chat"
backend = "hf"
model = "{url}"
max_prompt_chars = 8000
"""  # the test server echoes the prompt: a prompt of three messages' length


class PowerCut(Exception):
    """What the process dying at this point looks like to the code after it: nothing more runs."""


async def delivery_of(n: Natty, job_id: str) -> tuple[float | None, str | None]:
    assert n.bot is not None
    return await n.bot.storage.delivery_of(job_id)


async def settled(n: Natty, job_id: str) -> str:
    """How the job's delivery was settled, once it is (the record follows the last message by a moment)."""
    for _ in range(300):
        when, how = await delivery_of(n, job_id)
        if when is not None and how:
            return how
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id}: delivery never settled")


async def only_job(n: Natty):
    assert n.bot is not None
    (job,) = await n.bot.storage.recent_jobs(n.alice.id)
    return job


async def test_a_result_made_just_before_a_crash_is_delivered_after_the_restart_once(tmp_path, monkeypatch):
    async with Natty.running(tmp_path) as n:
        assert n.bot is not None
        finished = []

        async def dies_before_posting(job):  # the job's row is DONE; the process dies before the message goes out
            finished.append(job.id)

        monkeypatch.setattr(n.bot.presenter, "deliver", dies_before_posting)
        ix = await n.server.slash(n.alice, n.general, "chat", prompt="hello before the crash")
        await n.wait(lambda: finished)
        job = await only_job(n)
        assert job.state is JobState.DONE and await delivery_of(n, job.id) == (None, None)
        assert "You said" not in (ix.original.content if ix.original else "")

        await n.restart()
        final = await n.final(ix)
        assert final.content.startswith("You said: hello before the crash") and "AI-generated" in final.content
        assert await settled(n, job.id) == "interaction"
        posted = [m for m in ix.messages if m.content]

        await n.restart()  # settled: a further start posts nothing again
        other = await n.server.slash(n.bob, n.general, "chat", prompt="after the second start")
        await n.final(other)
        assert [m for m in ix.messages if m.content] == posted
        assert n.server.violations == []


async def test_a_delivery_cut_off_halfway_is_finished_without_posting_a_part_twice(tmp_path, monkeypatch):
    async with Natty.running(tmp_path, max_prompt_chars=8000) as n:
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text() + LONG_CHAT.format(url=n.hf.url))
        await n.restart()
        assert n.bot is not None
        presenter = n.bot.presenter
        record = presenter._sent
        calls = []

        async def cut_after_the_second_message(job, route, part, message):
            await record(job, route, part, message)
            calls.append(part)
            if part == 1:
                raise PowerCut("the process died here")

        monkeypatch.setattr(presenter, "_sent", cut_after_the_second_message)
        text = "\n\n".join(f"Paragraph {i}: " + "words and more words " * 12 for i in range(20))
        ix = await n.server.slash(n.alice, n.general, "chat", prompt=text + "\nThe end.", model="long-chat")
        await n.wait(lambda: 1 in calls)
        job = await only_job(n)
        assert await delivery_of(n, job.id) == (None, None)  # not settled: two of its messages are out
        assert len([m for m in ix.messages if m.content]) == 2

        await n.restart()
        await n.wait(lambda: "The end." in "".join(m.content for m in ix.messages))
        await n.final(ix)
        parts = [m.content for m in ix.messages if m.content]
        assert len(parts) >= 3
        joined = "".join(parts)
        for i in range(20):  # every paragraph once: the two messages of the first try were edited, not posted again
            assert joined.count(f"Paragraph {i}:") == 1
        assert await settled(n, job.id) == "interaction"
        assert await n.bot.storage.delivered_parts(job.id, "interaction") == {}  # settled: its parts are forgotten
        assert n.server.violations == []


async def test_a_followup_discord_took_before_the_crash_is_found_and_not_posted_again(tmp_path, monkeypatch):
    """The crash falls after Discord took a followup (which takes no nonce) and before natty wrote it down: the
    retry finds the mark left before sending, finds the message in the channel, and edits it instead."""
    async with Natty.running(tmp_path, max_prompt_chars=8000) as n:
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text() + LONG_CHAT.format(url=n.hf.url))
        await n.restart()
        assert n.bot is not None
        presenter = n.bot.presenter
        record = presenter._sent
        cut = []

        async def cut_before_recording_the_first_followup(job, route, part, message):
            if part == 1 and not cut:
                cut.append(message.id)
                raise PowerCut("the process died before writing the followup down")
            await record(job, route, part, message)

        monkeypatch.setattr(presenter, "_sent", cut_before_recording_the_first_followup)
        text = "\n\n".join(f"Paragraph {i}: " + "words and more words " * 12 for i in range(20))
        ix = await n.server.slash(n.alice, n.general, "chat", prompt=text + "\nThe end.", model="long-chat")
        await n.wait(lambda: cut)
        job = await only_job(n)
        assert await delivery_of(n, job.id) == (None, None)
        assert len(ix.followups) == 1  # out in Discord, not in natty's records

        await n.restart()
        await n.wait(lambda: "The end." in "".join(m.content for m in ix.messages))
        await n.final(ix)
        joined = "".join(m.content for m in ix.messages if m.content)
        for i in range(20):
            assert joined.count(f"Paragraph {i}:") == 1
        assert ix.followups[0].id == cut[0]  # the followup of the first try, edited in place
        assert await settled(n, job.id) == "interaction"
        assert n.server.violations == []


async def test_a_channel_where_the_bot_may_not_post_settles_the_job_with_a_log_line(tmp_path, caplog):
    async with Natty.running(tmp_path, token_margin=0.0) as n:
        n.server.token_lifetime = 1.0
        n.server.tolerate("expired_token")  # the bot tries its expired token first (token_margin=0)
        n.hf.loading(estimated_time=1.5, path="text-to-image")  # the job outlives the token: the channel it is
        ix = await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse")
        await ix.acked()
        n.server.set_overwrite(n.general, n.server.bot_user, deny=SEND_MESSAGES)
        with caplog.at_level(logging.WARNING, "natty.presenter"):
            job = await only_job(n)
            await n.wait(lambda: "cannot be posted" in caplog.text, timeout=30)
        assert (await settled(n, job.id)).startswith("failed: the bot lacks Send Messages")
        assert not [m for m in n.general.messages if m.interaction is None]  # no refused post was even tried
        assert {v.kind for v in n.server.violations} <= {"expired_token"}


async def test_without_attach_files_the_channel_gets_the_text_and_a_note(tmp_path):
    async with Natty.running(tmp_path, token_margin=0.0) as n:
        n.server.token_lifetime = 1.0
        n.server.expect_ping(n.alice)  # the channel fallback pings the requester
        n.server.tolerate("expired_token")
        n.hf.loading(estimated_time=1.5, path="text-to-image")
        ix = await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse")
        await ix.acked()
        n.server.set_overwrite(n.general, n.server.bot_user, deny=ATTACH_FILES)
        posted = await n.wait(lambda: next((m for m in n.general.messages if m.interaction is None), None),
                              timeout=30)
        assert not posted.attachments
        job = await only_job(n)
        assert "Attach Files" in posted.content and f"/show job:{job.id}" in posted.content
        assert await settled(n, job.id) == "channel"
        assert {v.kind for v in n.server.violations} <= {"expired_token"}


async def test_a_channel_post_discord_took_before_the_crash_is_not_posted_again(tmp_path, monkeypatch):
    """The crash falls after Discord took the channel message and before natty wrote it down: the retry sends the
    same nonce, and Discord (enforce_nonce) returns that message instead of a second copy."""
    async with Natty.running(tmp_path, token_margin=10**6) as n:  # every token counts as expired: the channel
        assert n.bot is not None
        presenter = n.bot.presenter
        record = presenter._sent
        cut = []

        async def cut_before_the_record(job, route, part, message):
            if not cut:
                cut.append(message.id)
                raise PowerCut("the process died before writing the message down")
            await record(job, route, part, message)

        monkeypatch.setattr(presenter, "_sent", cut_before_the_record)
        n.server.expect_ping(n.alice)  # a channel delivery mentions its requester
        ix = await n.server.slash(n.alice, n.general, "chat", prompt="say it once")
        await n.wait(lambda: cut)
        job = await only_job(n)
        assert await delivery_of(n, job.id) == (None, None)

        def said() -> list:
            return [m for m in n.general.messages if m.interaction is None and "You said: say it once" in m.content]

        assert len(said()) == 1
        await n.restart()

        async def is_settled() -> bool:
            return (await delivery_of(n, job.id))[0] is not None

        for _ in range(100):
            if await is_settled():
                break
            await asyncio.sleep(0.1)
        assert await settled(n, job.id) == "channel"
        assert [m.id for m in said()] == cut  # the one message Discord took, not a second
        assert ix.followups == []
        assert n.server.violations == []
