"""One policy for every entry point: slash commands, buttons, chat replies, /collab, /story, /natty and its
detector all obey the same channel, command, safety, model and limit rules (bot/policy.py), through the real bot."""

from __future__ import annotations

from bot.jobs.job import JobState
from tests.harness import Natty
from tests.hf_server import draw_png
from tests.test_e2e_collab import add_idea, start_session
from tests.test_e2e_natty import DETECTOR
from tests.test_e2e_settings import _jobs, admin

ADULT_CHAT = """
[[model]]
name = "adult-chat"
task = "chat"
backend = "hf"
model = "{url}"
nsfw = true
"""


def hf_calls(n: Natty, kind: str) -> int:
    """Requests the model server got for chat ("chat") or images ("image")."""
    if kind == "chat":
        return sum(r.path.endswith("/chat/completions") for r in n.hf.requests)
    return sum(r.path.rstrip("/").endswith("text-to-image") for r in n.hf.requests)


async def test_the_channel_rule_holds_at_every_entry_point(tmp_path):
    async with Natty.running(tmp_path) as n:
        elsewhere = n.server.add_channel(n.guild, name="elsewhere")
        await n.wait(lambda: n.bot.get_channel(elsewhere.id))
        image = await n.final(await n.server.slash(n.alice, elsewhere, "imagine", prompt="a lighthouse"))
        answer = await n.final(await n.server.slash(n.alice, elsewhere, "chat", prompt="hello"))
        await admin(n, "channels add", channel=n.general)
        images, chats = hf_calls(n, "image"), hf_calls(n, "chat")
        only = f"I answer only in <#{n.general.id}>"

        slash = await n.final(await n.server.slash(n.alice, elsewhere, "imagine", prompt="a kite"))
        button = await n.final(await n.server.press(n.alice, image, label="Re-roll"))
        collab = await (await n.server.slash(n.alice, elsewhere, "collab start", theme="a kite")).response()
        game = await (await n.server.slash(n.alice, elsewhere, "natty play")).response()
        check = await (await n.server.slash(n.alice, elsewhere, "natty check", text="hello")).response()
        await n.server.send_message(n.alice, elsewhere, "and then?", reply_to=answer)
        reply = await n.wait(lambda: next((m for m in elsewhere.messages if m.reference is not None
                                           and m.author.id == n.server.bot_user.id and only in m.content), None))
        for message in (slash, button, collab, game, check, reply):
            assert only in message.content, message.content
        assert not elsewhere.threads  # no collab thread was opened
        assert (hf_calls(n, "image"), hf_calls(n, "chat")) == (images, chats)  # no model was asked
        refused = [j for j in await _jobs(n) if j.state is JobState.FAILED and only in (j.error or "")]
        assert len(refused) == 6  # every refusal keeps a record, whichever door it came through
        assert n.server.violations == []


async def test_turning_off_a_feature_stops_what_it_starts(tmp_path):
    async with Natty.running(tmp_path) as n:
        await admin(n, "commands", disable="collab")
        await admin(n, "commands", disable="natty")
        collab = await (await n.server.slash(n.alice, n.general, "collab start", theme="a kite")).response()
        assert "`/collab` is turned off on this server" in collab.content
        play = await (await n.server.slash(n.alice, n.general, "natty play")).response()
        assert "`/natty` is turned off on this server" in play.content
        assert not n.general.threads
        # a feature's parts are its own: /story still illustrates with /imagine turned off
        await admin(n, "commands", disable="imagine")
        ix = await n.server.slash(n.alice, n.general, "story", premise="A robot paints the sea. It is happy.",
                                  scenes=2)
        await n.wait(lambda: ix.original if ix.original and any(
            a.filename == "story.md" for a in ix.original.attachments) else None, timeout=60)
        (thread,) = n.general.threads
        scenes = [m for m in thread.messages if m.content.startswith("**Scene")]
        assert len(scenes) == 2 and all(any(a.filename.endswith(".png") for a in m.attachments) for m in scenes)
        assert n.server.violations == []


async def test_collab_and_story_parts_obey_the_prompt_rules_of_imagine(tmp_path):
    async with Natty.running(tmp_path) as n:
        blocked = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a nude portrait"))
        assert "only in age-restricted channels" in blocked.content
        images = hf_calls(n, "image")

        thread, panel = await start_session(n, n.alice, theme="a nude portrait", minutes=30.0)
        await add_idea(n, n.bob, thread, panel, "in soft light")
        await (await n.server.press(n.alice, panel, label="Generate")).response()
        failed = await n.wait(lambda: next((m for m in thread.messages if "age-restricted" in m.content), None),
                              timeout=60)
        assert not failed.attachments

        ix = await n.server.slash(n.alice, n.general, "story", premise="A nude portrait hangs in a hall. "
                                  "A guard looks at it.", scenes=3)
        await n.wait(lambda: ix.original if ix.original and any(
            a.filename == "story.md" for a in ix.original.attachments) else None, timeout=60)
        story_thread = next(t for t in n.general.threads if t is not thread)
        scenes = [m for m in story_thread.messages if m.content.startswith("**Scene")]
        assert len(scenes) == 3  # the story goes on, each scene saying why it has no picture
        assert all("age-restricted" in m.content and not m.attachments for m in scenes)
        assert hf_calls(n, "image") == images  # the image model never saw the premise
        refused = [j for j in await _jobs(n) if j.task == "text-to-image" and j.state is JobState.FAILED]
        assert len(refused) == 5 and all("age-restricted" in j.error for j in refused)
        assert n.server.violations == []


async def test_chat_replies_obey_the_model_rules_and_store_images_once(tmp_path):
    async with Natty.running(tmp_path) as n:
        await n.stop()
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text()
                                              + ADULT_CHAT.format(url=n.hf.url))
        await n.start()
        answer = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="hello"))

        def bot_reply_to(message, marker):
            return lambda: next((m for m in n.general.messages if m.reference is message
                                 and m.author.id == n.server.bot_user.id and marker in m.content), None)

        # images: stored once as files and referred to by every later turn, never copied into the record
        picture = draw_png("c", 16, 16, 3)
        first = await n.server.send_message(n.alice, n.general, "and this?", reply_to=answer,
                                            attachments=[("c.png", picture, "image/png")])
        seen = await n.wait(bot_reply_to(first, "(and sent 1 image)"), timeout=30)
        second = await n.server.send_message(n.alice, n.general, "and again?", reply_to=seen,
                                             attachments=[("c.png", picture, "image/png")])
        await n.wait(bot_reply_to(second, "(and sent 2 images)"), timeout=30)
        sent = [r.json for r in n.hf.requests if r.path.endswith("/chat/completions")][-1]
        urls = [p["image_url"]["url"] for m in sent["messages"] if isinstance(m["content"], list)
                for p in m["content"] if p["type"] == "image_url"]
        assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)  # the model sees them
        async with n.bot.storage.db.execute("SELECT MAX(LENGTH(params)) FROM jobs") as cur:
            assert (await cur.fetchone())[0] < 4000  # no base64 in the records
        assert len(list((tmp_path / "data" / "inputs" / "chat").iterdir())) == 1

        big = await n.server.send_message(n.alice, n.general, "and this one?", reply_to=answer,
                                          attachments=[("big.png", b"\x89PNG" + bytes(21 * 1024 * 1024),
                                                        "image/png")])
        too_big = await n.wait(bot_reply_to(big, "big.png"), timeout=30)
        assert "the limit is 20" in too_big.content, too_big.content
        await n.wait(bot_reply_to(big, "You said: and this one?"), timeout=30)  # the words still get an answer

        chats = hf_calls(n, "chat")
        await admin(n, "disable-model", model="test-chat")
        off = await n.server.send_message(n.alice, n.general, "still there?", reply_to=answer)
        refused = await n.wait(bot_reply_to(off, "There is no model named **test-chat**"), timeout=30)
        assert refused.content.startswith("⚠️")

        adult = await n.final(await n.server.slash(n.alice, n.nsfw, "chat", prompt="hi", model="adult-chat"))
        await admin(n, "nsfw", policy="never")
        late = await n.server.send_message(n.alice, n.nsfw, "and now?", reply_to=adult)
        await n.wait(lambda: next((m for m in n.nsfw.messages if m.reference is late
                                   and "does not allow in any channel" in m.content), None), timeout=30)
        assert hf_calls(n, "chat") == chats + 1  # only the adult model's first answer
        failed = [j for j in await _jobs(n) if j.task == "chat" and j.state is JobState.FAILED]
        assert len(failed) == 2
        assert n.server.violations == []


async def test_the_detector_of_natty_check_is_a_metered_job(tmp_path):
    async with Natty.running(tmp_path) as n:
        await n.stop()
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text()
                                              + DETECTOR.format(url=n.hf.endpoint("image-classification")))
        await n.start()
        await admin(n, "limits", daily_quota=2)
        png = ("p.png", draw_png("p", 32, 32, 1), "image/png")
        first = await (await n.server.slash(n.alice, n.general, "natty check", file=png)).response()
        assert "Detector **ai-image-detector**" in str(first.embeds)
        (job,) = [j for j in await _jobs(n) if j.task == "image-classification"]
        assert job.user_id == n.alice.id and job.state is JobState.DONE
        await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a kite"))
        second = await (await n.server.slash(n.alice, n.general, "natty check", file=png)).response()
        assert "could not run" in str(second.embeds) and "today's 2 jobs" in str(second.embeds)
        assert n.server.violations == []
