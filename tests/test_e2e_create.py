"""Every creation command, context menu and button as a member uses them, through the Hugging Face backend."""

import io

import av
import soundfile
from PIL import Image

from bot.ui.provenance import read as read_provenance
from tests.fakediscord import CREATE_PUBLIC_THREADS
from tests.harness import Natty
from tests.hf_server import draw_png, tone


def wav(seconds: float) -> bytes:
    return tone(seconds)


async def test_speak_and_music_give_playable_labelled_audio_with_duration(tmp_path):
    async with Natty.running(tmp_path) as n:
        spoken = await n.final(await n.server.slash(n.alice, n.general, "speak", text="Hello there, natty."))
        (att,) = spoken.attachments
        assert att.filename.endswith(".ogg")
        info = soundfile.info(io.BytesIO(att.data))
        assert info.duration > 0.5
        assert read_provenance(att.data)["natty"].model == "test-text-to-speech"
        assert f"{info.duration:.1f} s" in spoken.content and "AI-generated" in spoken.content
        music = await n.final(await n.server.slash(n.alice, n.general, "music", prompt="calm piano", seconds=4))
        (att,) = music.attachments
        assert abs(soundfile.info(io.BytesIO(att.data)).duration - 4) < 0.1
        assert [b.label for b in music.buttons] == ["Re-roll", "Delete"]
        assert n.server.violations == []


async def test_video_arrives_as_an_mp4_that_decodes(tmp_path):
    async with Natty.running(tmp_path) as n:
        msg = await n.final(await n.server.slash(n.alice, n.general, "video", prompt="waves at night"))
        (att,) = msg.attachments
        assert att.filename.endswith(".mp4")
        with av.open(io.BytesIO(att.data)) as container:
            assert len(list(container.decode(video=0))) == 6
        assert n.server.violations == []


async def test_animate_makes_a_clip_that_starts_from_the_members_picture_and_rerolls_it(tmp_path):
    async with Natty.running(tmp_path) as n:
        red = io.BytesIO()
        Image.new("RGB", (64, 64), (220, 20, 20)).save(red, "PNG")
        msg = await n.final(await n.server.slash(n.alice, n.general, "animate", prompt="the square spins",
                                                 image=("red.png", red.getvalue(), "image/png")))
        (att,) = msg.attachments
        assert att.filename.endswith(".mp4") and "AI-generated" in msg.content
        with av.open(io.BytesIO(att.data)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 5  # the catalog entry's num_frames reached the provider
        r, g, b = frames[0].reshape(-1, 3).mean(axis=0)
        assert r > 150 and g < 80 and b < 80  # the clip starts from the member's picture
        sent = n.hf.requests_to("/wavespeed/api/v3/")
        assert sent[-1].json["prompt"] == "the square spins" and sent[-1].json["image"].startswith("data:image/")
        assert [b.label for b in msg.buttons] == ["Re-roll", "Delete"]
        again = await n.final(await n.server.press(n.alice, msg, label="Re-roll"))
        (att2,) = again.attachments
        assert att2.filename.endswith(".mp4") and len(n.hf.requests_to("/wavespeed/api/v3/")) == 2
        not_a_picture = await n.server.slash(n.alice, n.general, "animate", prompt="x",
                                             image=("a.wav", wav(1), "audio/wav"))
        refused = await n.final(not_a_picture)
        assert "a.wav" in refused.content and "image" in refused.content
        assert n.server.violations == []


async def test_video_that_outlives_the_interaction_token_is_posted_in_the_channel(tmp_path):
    async with Natty.running(tmp_path, token_margin=0.0) as n:
        n.server.token_lifetime = 1.0
        n.server.expect_ping(n.alice)  # the channel fallback pings the requester
        n.server.tolerate("expired_token")  # the bot tries its expired token first (token_margin=0)
        n.hf.loading(estimated_time=1.5, path="novita")  # the model "loads" past the token's one-second life
        ix = await n.server.slash(n.alice, n.general, "video", prompt="a slow sunrise", model="test-text-to-video")
        await ix.acked()
        posted = await n.wait(lambda: next((m for m in n.general.messages
                                            if m.attachments and m.interaction is None), None), timeout=30)
        assert posted.content.startswith(f"<@{n.alice.id}>")
        assert posted.pings == [f"user:{n.alice.id}"]  # the requester, and nobody else
        (att,) = posted.attachments
        assert att.filename.endswith(".mp4") and att.data  # not the 0-byte file of the failed webhook upload
        with av.open(io.BytesIO(att.data)) as container:
            assert len(list(container.decode(video=0))) == 6
        # the only refusals are the bot trying its expired token before falling back to the channel
        assert {v.kind for v in n.server.violations} <= {"expired_token"}


async def test_an_image_that_outlives_the_token_is_posted_in_the_channel_as_a_whole_png(tmp_path):
    async with Natty.running(tmp_path, token_margin=0.0) as n:
        n.server.token_lifetime = 1.0
        n.server.expect_ping(n.alice)  # the channel fallback pings the requester
        n.server.tolerate("expired_token")  # the bot tries its expired token first (token_margin=0)
        n.hf.loading(estimated_time=1.5, path="text-to-image")
        ix = await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse, @everyone")
        await ix.acked()
        posted = await n.wait(lambda: next((m for m in n.general.messages
                                            if m.attachments and m.interaction is None), None), timeout=30)
        assert posted.pings == [f"user:{n.alice.id}"]
        (att,) = posted.attachments
        assert att.filename.endswith(".png") and att.size > 0
        image = Image.open(io.BytesIO(att.data))
        image.load()  # every byte is there
        assert image.size[0] > 0 and read_provenance(att.data)["natty"] is not None
        assert {v.kind for v in n.server.violations} <= {"expired_token"}


async def test_describe_gives_a_caption_and_three_prompts_that_imagine_on_a_press(tmp_path):
    async with Natty.running(tmp_path) as n:
        png = draw_png("a red square", 64, 64, 1)
        msg = await n.final(await n.server.slash(n.alice, n.general, "describe", image=("red.png", png, "image/png")))
        assert "**Caption:**" in msg.content and msg.content.count("**1.**") == 1 and "**3.**" in msg.content
        labels = [b.label for b in msg.buttons]
        assert labels[-3:] == ["Imagine 1", "Imagine 2", "Imagine 3"]
        made = await n.final(await n.server.press(n.bob, msg, label="Imagine 2"))
        assert "cinematic photograph" in made.content and made.attachments
        async with n.bot.storage.db.execute("SELECT id FROM jobs WHERE task = 'image-to-text'") as cur:
            (job_id,) = await cur.fetchone()
        shown = await (await n.server.slash(n.alice, n.general, "show", job=job_id)).response()
        assert shown.content.split("\n")[:1] == msg.content.split("\n")[:1]  # /show renders it the same way
        assert [b.label for b in shown.buttons][-3:] == ["Imagine 1", "Imagine 2", "Imagine 3"]
        assert n.server.violations == []


async def test_describe_and_transcribe_menus_work_on_any_message_with_media(tmp_path):
    async with Natty.running(tmp_path) as n:
        pic = await n.server.send_message(n.bob, n.general, "look", attachments=[("p.png", draw_png("x", 32, 32, 2),
                                                                                   "image/png")])
        voice = await n.server.send_message(n.bob, n.general, "", attachments=[("voice-message.ogg", wav(2.0),
                                                                                  "audio/ogg")])
        described = await n.final(await n.server.context_menu(n.alice, n.general, "Describe", target=pic))
        assert "**Caption:**" in described.content
        heard = await n.final(await n.server.context_menu(n.alice, n.general, "Transcribe", target=voice))
        assert "2.0" in heard.content or "2 s" in heard.content or "seconds" in heard.content
        nothing = await n.server.context_menu(n.alice, n.general, "Transcribe", target=pic)
        reply = await nothing.response()
        assert reply.ephemeral and "no audio" in reply.content
        assert n.server.violations == []


async def test_transcribe_slash_command_checks_the_attachment_type(tmp_path):
    async with Natty.running(tmp_path) as n:
        ok = await n.final(await n.server.slash(n.alice, n.general, "transcribe", audio=("a.wav", wav(1.5),
                                                                                          "audio/wav")))
        assert "AI-generated" in ok.content
        bad = await n.server.slash(n.alice, n.general, "transcribe", audio=("notes.txt", b"hello", "text/plain"))
        msg = await bad.response()
        assert msg.ephemeral and "notes.txt" in msg.content and "not audio" in msg.content
        bad_image = await n.server.slash(n.alice, n.general, "describe", image=("a.wav", wav(1), "audio/wav"))
        msg = await bad_image.response()
        assert msg.ephemeral and "not an image" in msg.content
        assert n.server.violations == []


async def test_reply_chains_continue_conversations_and_never_mix_two_users(tmp_path):
    async with Natty.running(tmp_path) as n:
        a = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="my name is Alice"))
        b = await n.final(await n.server.slash(n.bob, n.general, "chat", prompt="my name is Bob"))
        await n.server.send_message(n.alice, n.general, "what is my name?", reply_to=a)
        await n.server.send_message(n.bob, n.general, "and mine?", reply_to=b)
        answers = await n.wait(lambda: [m for m in n.general.messages if m.reference and "AI-generated" in m.content
                                        and m.author.id == n.server.bot_user.id] or None)
        await n.wait(lambda: len([m for m in n.general.messages if m.reference and "AI-generated" in m.content])
                     == 2)
        chats = [r.json for r in n.hf.requests if r.path.endswith("/chat/completions")]
        alice_chain = next(c["messages"] for c in chats if c["messages"][-1]["content"] == "what is my name?")
        bob_chain = next(c["messages"] for c in chats if c["messages"][-1]["content"] == "and mine?")
        assert [m["content"] for m in alice_chain][:2] == ["my name is Alice", "You said: my name is Alice"]
        assert not any("Bob" in str(m["content"]) for m in alice_chain)
        assert not any("Alice" in str(m["content"]) for m in bob_chain)
        assert answers and not any(m.would_ping for m in n.general.messages if m.author.id == n.server.bot_user.id)
        # an image in a reply reaches a model that accepts images
        bot_answer = next(m for m in n.general.messages
                          if m.reference is not None and getattr(m.reference, "content", "") == "what is my name?")
        await n.server.send_message(n.alice, n.general, "and this?", reply_to=bot_answer,
                                    attachments=[("c.png", draw_png("c", 16, 16, 3), "image/png")])
        await n.wait(lambda: any("(and sent 1 image)" in m.content for m in n.general.messages))
        assert n.server.violations == []


async def test_bad_inputs_get_clear_messages_and_job_records(tmp_path):
    async with Natty.running(tmp_path) as n:
        empty = await (await n.server.slash(n.alice, n.general, "imagine", prompt="   ")).response()
        assert empty.ephemeral and "The prompt is empty" in empty.content
        huge = await (await n.server.slash(n.alice, n.general, "chat", prompt="x" * 10_000)).response()
        assert huge.ephemeral and "10,000 characters" in huge.content
        missing = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a cat", model="nope"))
        assert "There is no model named **nope**" in missing.content
        async with n.bot.storage.db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'failed'") as cur:
            assert (await cur.fetchone())[0] == 3
        assert n.server.violations == []


async def test_a_task_with_no_usable_model_says_so(tmp_path):
    extra = """
[[model]]
name = "wan-t2v"
enabled = false
"""
    async with Natty.running(tmp_path, catalog_extra="") as n:
        await n.stop()
        blocks = (tmp_path / "models.toml").read_text().split("[[model]]")
        kept = [b for b in blocks if 'name = "test-text-to-video"' not in b]
        (tmp_path / "models.toml").write_text("[[model]]".join(kept) + extra)
        await n.start()
        msg = await n.final(await n.server.slash(n.alice, n.general, "video", prompt="anything"))
        assert "No model is configured for video on this server." in msg.content
        help_text = (await (await n.server.slash(n.alice, n.general, "help")).response()).embeds[0]["fields"][0]
        assert "**video**: no model can run here yet" in help_text["value"]
        assert n.server.violations == []


async def test_vary_and_delete_buttons(tmp_path):
    async with Natty.running(tmp_path) as n:
        msg = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a blue circle"))
        varied = await n.final(await n.server.press(n.alice, msg, label="Vary"))
        assert varied.attachments and "a blue circle" in varied.content
        Image.open(io.BytesIO(varied.attachments[0].data)).load()
        refused = await (await n.server.press(n.bob, msg, label="Delete")).response()
        assert refused.ephemeral and not msg.deleted
        await (await n.server.press(n.alice, msg, label="Delete")).acked()
        await n.wait(lambda: msg.deleted)
        assert n.server.violations == []


async def test_story_posts_each_scene_in_a_thread_with_picture_and_narration(tmp_path):
    async with Natty.running(tmp_path, edit_interval=0.2) as n:
        ix = await n.server.slash(n.alice, n.general, "story", premise="A robot learns to paint. It fails. "
                                  "Then it paints the sea.", scenes=3, narrate=True)
        final = await n.wait(lambda: ix.original if ix.original and any(
            a.filename == "story.md" for a in ix.original.attachments) else None, timeout=60)
        (thread,) = n.general.threads
        scenes = [m for m in thread.messages if m.content.startswith("**Scene")]
        assert [m.content.split("\n")[0] for m in scenes] == ["**Scene 1**", "**Scene 2**", "**Scene 3**"]
        for m in scenes:
            kinds = sorted(a.filename.rsplit(".", 1)[1] for a in m.attachments)
            assert kinds == ["ogg", "png"], kinds
            assert "AI-generated" in m.content and not m.would_ping
        story_md = next(a for a in final.attachments if a.filename == "story.md").data.decode()
        assert story_md.count("## Scene") == 3
        shown = [payload.get("content", "") for _, payload in final.edits]
        assert any("scene 2/3: illustrating" in c for c in shown)
        assert any("narrating" in c for c in shown)
        assert n.server.violations == []


async def test_story_without_the_thread_permission_posts_its_scenes_in_the_channel(tmp_path):
    async with Natty.running(tmp_path) as n:
        n.server.set_overwrite(n.general, n.server.bot_user, deny=CREATE_PUBLIC_THREADS)
        ix = await n.server.slash(n.alice, n.general, "story", premise="A kite escapes. A child follows it.",
                                  scenes=2)
        await n.wait(lambda: ix.original and any(a.filename == "story.md" for a in ix.original.attachments),
                     timeout=60)
        assert n.general.threads == []
        scenes = [m for m in n.general.messages if m.content.startswith("**Scene")]
        assert [m.content.split("\n")[0] for m in scenes] == ["**Scene 1**", "**Scene 2**"]
        assert all(m.attachments and "AI-generated" in m.content for m in scenes)
        assert n.server.violations == []  # no refused thread was even tried


async def test_a_near_limit_answer_that_outlives_the_token_arrives_whole_in_the_channel(tmp_path):
    async with Natty.running(tmp_path, token_margin=0.0) as n:
        n.server.token_lifetime = 1.0
        n.server.expect_ping(n.alice)  # the channel fallback pings the requester
        n.server.tolerate("expired_token")  # the bot tries its expired token first (token_margin=0)
        n.hf.loading(estimated_time=1.5, path="chat")
        words = ("lighthouse keeper " * 200).split()
        prompt = " ".join(words)[: 1990 - len("You said: ")].rstrip()  # the answer is one chunk of ~1,990 chars
        ix = await n.server.slash(n.alice, n.general, "chat", prompt=prompt)
        await ix.acked()
        footer = await n.wait(lambda: next((m for m in n.general.messages
                                            if m.interaction is None and "AI-generated" in m.content), None),
                              timeout=30)
        posted = [m for m in n.general.messages if m.interaction is None and m.author.id == n.server.bot_user.id]
        assert all(len(m.content) <= 2000 for m in posted)
        assert posted[0].content.startswith(f"<@{n.alice.id}> ") and posted[0].pings == [f"user:{n.alice.id}"]
        text = " ".join(m.content.removeprefix(f"<@{n.alice.id}> ") for m in posted if m is not footer)
        assert " ".join(text.split()) == f"You said: {prompt}"  # every word, none cut at the limit
        assert all(not m.would_ping for m in posted[1:])
        assert {v.kind for v in n.server.violations} <= {"expired_token"}
