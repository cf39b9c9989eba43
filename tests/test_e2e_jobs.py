"""The job engine as users meet it: fair turns, caps, progress, cancel, buttons after restarts, /jobs, /show,
long text, big files, and no pings."""

import io

from PIL import Image

from bot.jobs.job import JobState
from bot.ui.provenance import read as read_provenance
from tests.harness import Natty

SLOW_CHAT = """
[[model]]
name = "slow-chat"
task = "chat"
backend = "hf"
model = "{url}"
concurrency = 1
"""


def slow_chat(n: Natty) -> str:
    return SLOW_CHAT.format(url=n.hf.url)


async def test_imagine_delivers_a_labelled_png_with_seed_model_and_buttons(tmp_path):
    async with Natty.running(tmp_path) as n:
        ix = await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse at dusk", seed=42)
        msg = await n.final(ix)
        assert "a lighthouse at dusk" in msg.content and "seed 42" in msg.content
        assert "test-text-to-image" in msg.content and "AI-generated" in msg.content
        (att,) = msg.attachments
        image = Image.open(io.BytesIO(att.data))
        assert image.size == (1024, 1024)
        found = read_provenance(att.data)
        assert found["natty"] is not None and found["natty"].model == "test-text-to-image"
        assert [b.label for b in msg.buttons] == ["Re-roll", "Vary", "Remix", "Delete"]
        assert not msg.would_ping
        assert n.server.violations == []


async def test_a_user_with_five_jobs_does_not_delay_another_users_first(tmp_path):
    async with Natty.running(tmp_path, catalog_extra="") as n:
        n.hf.token_delay = 0.05
        await n.stop()
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text() + slow_chat(n))
        await n.start()
        a_jobs = [await n.server.slash(n.alice, n.general, "chat", prompt=f"alice {i} " + "word " * 12,
                                       model="slow-chat") for i in range(5)]
        await n.wait(lambda: len(n.bot.engine.active) == 5)
        b = await n.server.slash(n.bob, n.general, "chat", prompt="bob " + "word " * 12, model="slow-chat")
        await n.final(b)
        await n.final(a_jobs[2])
        jobs = {j.prompt.split()[0] + j.prompt.split()[1]: j for j in await _all_jobs(n)}
        assert jobs["bobword"].finished_at < jobs["alice2"].finished_at
        assert n.server.violations == []


async def _all_jobs(n: Natty):
    async with n.bot.storage.db.execute("SELECT id FROM jobs ORDER BY seq") as cur:
        ids = [r[0] for r in await cur.fetchall()]
    return [await n.bot.storage.get_job(i) for i in ids]


async def test_caps_and_cooldown_say_which_limit_was_hit(tmp_path):
    async with Natty.running(tmp_path, max_jobs_per_user=2, cooldown_seconds=0) as n:
        n.hf.token_delay = 0.2
        for _ in range(2):
            await n.server.slash(n.alice, n.general, "chat", prompt="hello " * 10)
        await n.wait(lambda: len(n.bot.engine.active) == 2)
        third = await n.server.slash(n.alice, n.general, "chat", prompt="one more")
        msg = await n.final(third)
        assert "You already have 2 jobs queued or running (the limit is 2)" in msg.content
        failed = [j for j in await _all_jobs(n) if j.state is JobState.FAILED]
        assert failed and "limit is 2" in failed[0].error
    async with Natty.running(tmp_path / "cool", cooldown_seconds=60) as n:
        await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="first"))
        msg = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="second"))
        assert "Slow down: you can start another job in" in msg.content and "(cooldown)" in msg.content
        assert n.server.violations == []


async def test_progress_streams_into_one_message_about_once_a_second_and_ends_complete(tmp_path):
    async with Natty.running(tmp_path, edit_interval=1.0) as n:
        n.hf.token_delay = 0.1
        prompt = " ".join(f"w{i}" for i in range(30))
        ix = await n.server.slash(n.alice, n.general, "chat", prompt=prompt)
        msg = await n.final(ix)
        assert msg.content.startswith(f"You said: {prompt}")
        times = [t for t, _ in msg.edits]
        assert len(times) >= 3  # queued/progress edits, then the final state
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert min(gaps) >= 0.9, gaps
        assert n.server.violations == []


async def test_cancel_by_owner_or_moderator_works_and_by_another_member_is_refused(tmp_path):
    async with Natty.running(tmp_path) as n:
        n.hf.token_delay = 0.3
        ix = await n.server.slash(n.alice, n.general, "chat", prompt="long " * 40)
        msg = await n.wait(lambda: ix.original if ix.original and ix.original.buttons else None)
        refused = await n.server.press(n.bob, msg, label="Cancel")
        reply = await refused.response()
        assert reply.ephemeral and "Only the person who started this job" in reply.content
        ok = await n.server.press(n.alice, msg, label="Cancel")
        await ok.acked()
        final = await n.final(ix)
        assert "Cancelled" in final.content
        job = (await _all_jobs(n))[-1]
        assert job.state is JobState.CANCELLED
        ix2 = await n.server.slash(n.alice, n.general, "chat", prompt="long " * 40)
        msg2 = await n.wait(lambda: ix2.original if ix2.original and ix2.original.buttons else None)
        await (await n.server.press(n.mod, msg2, label="Cancel")).acked()
        assert "Cancelled" in (await n.final(ix2)).content
        assert n.server.violations == []


async def test_buttons_work_after_a_restart_and_reroll_makes_a_new_seed(tmp_path):
    async with Natty.running(tmp_path) as n:
        msg = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a fox", seed=7))
        await n.restart()
        again = await n.server.press(n.alice, msg, label="Re-roll")
        rerolled = await n.final(again)
        assert "a fox" in rerolled.content and "seed 7 ·" not in rerolled.content
        assert rerolled.attachments
        remix = await n.server.press(n.alice, msg, label="Remix")
        modal = await remix.wait_modal()
        assert modal.fields[0].value == "a fox"
        remixed = await n.server.submit_modal(n.alice, remix, {modal.fields[0].custom_id: "a fox in snow"})
        assert "a fox in snow" in (await n.final(remixed)).content
        assert n.server.violations == []


async def test_jobs_and_show_respect_who_may_see_what(tmp_path):
    async with Natty.running(tmp_path) as n:
        public = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a public cat"))
        private = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="secret plans", private=True))
        assert private.ephemeral
        jobs = await _all_jobs(n)
        pub_id, priv_id = jobs[0].id, jobs[1].id
        listing = await (await n.server.slash(n.alice, n.general, "jobs")).response()
        assert listing.ephemeral and pub_id in listing.embeds[0]["description"]
        assert priv_id in listing.embeds[0]["description"]
        shown = await (await n.server.slash(n.bob, n.general, "show", job=pub_id)).response()
        assert "a public cat" in shown.content and shown.attachments and shown.buttons
        hidden = await (await n.server.slash(n.bob, n.general, "show", job=priv_id)).response()
        assert hidden.ephemeral and "that you can see" in hidden.content
        assert public.attachments
        assert n.server.violations == []


async def test_long_text_is_split_with_code_fences_intact(tmp_path):
    async with Natty.running(tmp_path) as n:
        code = "\n".join(f"print('line {i}')  # " + "x" * 30 for i in range(70))
        prompt = "Here is code:\n```python\n" + code + "\n```\nThe end."
        ix = await n.server.slash(n.alice, n.general, "chat", prompt=prompt)
        await n.final(ix)
        await n.wait(lambda: "The end." in "".join(m.content for m in ix.messages))
        parts = [m for m in ix.messages if m.content]
        assert len(parts) >= 2
        for part in parts:
            assert len(part.content) <= 2000
            assert part.content.count("```") % 2 == 0
        assert parts[1].content.lstrip().startswith("```python")
        assert n.server.violations == []


async def test_oversized_image_and_audio_are_reencoded_to_fit_with_a_note(tmp_path):
    async with Natty.running(tmp_path) as n:
        n.server.attachment_size_limit = 4_000  # the test server's 1344x768 PNG is about 5 KB
        msg = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="noise", aspect="wide"))
        (att,) = msg.attachments
        assert att.size <= 4_000 and att.filename.endswith((".webp", ".jpg"))
        Image.open(io.BytesIO(att.data)).load()
        assert "to fit" in msg.content
        n.server.attachment_size_limit = 20_000  # 10 s of audio is about 125 KB as default Opus
        music = await n.final(await n.server.slash(n.alice, n.general, "music", prompt="rain", seconds=10))
        (audio,) = music.attachments
        assert audio.size <= 20_000 and audio.filename.endswith((".ogg", ".mp3"))
        import soundfile

        assert abs(soundfile.info(io.BytesIO(audio.data)).duration - 10) < 0.2
        assert n.server.violations == []


async def test_mentions_in_prompts_and_outputs_ping_nobody(tmp_path):
    async with Natty.running(tmp_path) as n:
        prompt = f"@everyone @here <@{n.bob.id}> <@&{n.guild.id}> say hi"
        chat = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt=prompt))
        image = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt=prompt))
        for msg in (chat, image):
            assert "@everyone" in msg.content
            assert not msg.would_ping, msg.allowed_mentions
        assert n.server.violations == []
