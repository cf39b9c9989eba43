"""Collaborative prompting as a group meets it: a thread, ideas through a modal, votes, the host's Generate or
the timer, a fused prompt, a result that credits everyone, remixes, and sessions that outlive restarts."""

from __future__ import annotations

from bot.ui.provenance import read as read_provenance
from tests.harness import Natty


async def start_session(n: Natty, user, **options):
    start = await (await n.server.slash(user, n.general, "collab start", **options)).response()
    assert "started a collab session" in start.content and not start.would_ping
    thread = await n.wait(lambda: start.thread)
    panel = await n.wait(lambda: next((m for m in thread.messages if "Collab session" in m.content), None))
    assert [b.label for b in panel.buttons] == ["Add idea", "Generate"]
    return thread, panel


async def add_idea(n: Natty, user, thread, panel, text: str):
    press = await n.server.press(user, panel, label="Add idea")
    modal = await press.wait_modal()
    reply = await (await n.server.submit_modal(user, press, {modal.fields[0].custom_id: text})).response()
    assert reply.ephemeral
    if "Added your idea" not in reply.content:
        return reply
    return await n.wait(lambda: next((m for m in thread.messages if text in m.content and m.buttons), None))


async def vote(n: Natty, user, idea, expect: int) -> None:
    await (await n.server.press(user, idea, custom_id=idea.buttons[0].custom_id)).acked()
    await n.wait(lambda: idea.buttons and idea.buttons[0].label == f"Vote ({expect})")


async def result_in(n: Natty, thread, marker: str = "Collab result", count: int = 1):
    def found():
        results = [m for m in thread.messages if marker in m.content]
        return results if len(results) >= count else None

    return await n.wait(found, timeout=60)


async def test_a_whole_session_with_ideas_votes_a_restart_and_the_hosts_generate(tmp_path):
    async with Natty.running(tmp_path) as n:
        thread, panel = await start_session(n, n.alice, theme="a castle on a cliff", minutes=30.0)
        dragons = await add_idea(n, n.bob, thread, panel, "with dragons circling")
        sunset = await add_idea(n, n.alice, thread, panel, "at sunset")
        snow = await add_idea(n, n.mod, thread, panel, "in deep snow")
        again = await add_idea(n, n.bob, thread, panel, "At  sunset")
        assert "already on the list" in again.content
        assert f"idea 1 by <@{n.bob.id}>" in dragons.content and not dragons.would_ping

        await vote(n, n.alice, dragons, 1)
        await vote(n, n.mod, dragons, 2)
        await vote(n, n.bob, snow, 1)
        await vote(n, n.bob, snow, 0)  # pressed again: the vote is taken back
        await vote(n, n.bob, snow, 1)
        await n.wait(lambda: "**1.** with dragons circling · 2 votes" in panel.content)
        refused = await (await n.server.press(n.bob, panel, label="Generate")).response()
        assert refused.ephemeral and "Only the host" in refused.content

        await n.restart()  # the session, its buttons and its timer outlive the bot
        await vote(n, n.mod, sunset, 1)
        go = await (await n.server.press(n.alice, panel, label="Generate")).response()
        assert go.ephemeral and "Generating" in go.content
        (result,) = await result_in(n, thread)
        fused = next(r for r in n.hf.requests if r.json and "messages" in r.json and "Ideas" in str(r.json))
        assert "with dragons circling" in str(fused.json) and "in deep snow" in str(fused.json)
        assert "fused by test-chat" in result.content and "**Prompt:** You said: Theme: a castle on a cliff" in \
            result.content
        (image,) = result.attachments
        label = read_provenance(image.data)["natty"]
        assert label is not None and label.model == "test-text-to-image"
        credit = next(line for line in result.content.splitlines() if line.startswith("Made together"))
        assert f"hosted by <@{n.alice.id}>" in credit
        for user in (n.alice, n.bob, n.mod):
            assert f"<@{user.id}> (1 used)" in credit
        assert not result.would_ping and [b.label for b in result.buttons] == ["Remix together"]
        await n.wait(lambda: not dragons.buttons and not panel.buttons and "Done" in panel.content)
        late = await n.server.slash(n.bob, n.general, "collab remix", session="nosuchsession")
        assert "No finished collab session" in (await late.response()).content
        assert n.server.violations == []


async def test_the_timer_survives_a_restart_the_rule_fuses_and_a_remix_builds_on_the_result(tmp_path):
    async with Natty.running(tmp_path) as n:
        # no language model here: the documented rule fuses the ideas
        await n.bot.save_guild_settings(n.guild.id, {"disabled_models": ["test-chat"]})
        thread, panel = await start_session(n, n.alice, theme="a lighthouse", minutes=0.1)
        await add_idea(n, n.bob, thread, panel, "stormy sea")
        boat = await add_idea(n, n.alice, thread, panel, "tiny red boat")
        await vote(n, n.mod, boat, 1)
        await n.restart()
        await n.bot.save_guild_settings(n.guild.id, {"disabled_models": ["test-chat"]})
        (result,) = await result_in(n, thread)
        assert "**Prompt:** a lighthouse, tiny red boat\n" in result.content  # only voted ideas make the cut
        assert "fused by natty's rule" in result.content
        assert f"ideas by <@{n.bob.id}>, <@{n.alice.id}> (1 used); votes by <@{n.mod.id}>" in result.content
        assert result.attachments

        remix = await (await n.server.press(n.bob, result, label="Remix together")).response()
        assert remix.ephemeral and "Remix round started" in remix.content
        panel2 = await n.wait(lambda: next((m for m in thread.messages if "Remixing an earlier result" in m.content),
                                           None))
        assert "*a lighthouse, tiny red boat*" in panel2.content
        await add_idea(n, n.alice, thread, panel2, "at dawn")
        await (await n.server.press(n.bob, panel2, label="Generate")).response()
        _, second = await result_in(n, thread, count=2)
        assert "(remix of `" in second.content
        assert "**Prompt:** a lighthouse, tiny red boat, at dawn\n" in second.content
        assert f"hosted by <@{n.bob.id}>" in second.content
        assert n.server.violations == []


async def test_a_text_session_and_one_nobody_joined(tmp_path):
    async with Natty.running(tmp_path) as n:
        thread, panel = await start_session(n, n.bob, theme="a haiku about rain", task="text", minutes=30.0)
        await add_idea(n, n.alice, thread, panel, "mention a tin roof")
        await (await n.server.press(n.bob, panel, label="Generate")).response()
        (result,) = await result_in(n, thread)
        assert "You said:" in result.content and not result.attachments and "AI-generated" in result.content
        empty_thread, empty_panel = await start_session(n, n.alice, theme="nothing yet", minutes=0.05)
        await n.wait(lambda: "ended without a result" in empty_panel.content and not empty_panel.buttons)
        assert "nobody added an idea" in empty_panel.content
        sessions = n.bot.get_cog("Collab").sessions  # both sessions ended: nothing of theirs stays in memory
        await n.wait(lambda: not (sessions.tasks or sessions.locks or sessions.wakeups), timeout=10)
        assert n.server.violations == []


async def test_the_panel_keeps_up_with_many_long_ideas(tmp_path):
    async with Natty.running(tmp_path) as n:
        thread, panel = await start_session(n, n.alice, theme="a lighthouse in a storm", minutes=30.0)
        ideas = []
        for k in range(7):  # each at the modal's 300-character limit: the full panel would be over 2,000
            text = f"idea {k}: " + ("waves breaking over the rocks while gulls circle the lamp " * 6)[:290].strip()
            ideas.append(await add_idea(n, (n.alice, n.bob, n.mod)[k % 3], thread, panel, text))
        await vote(n, n.bob, ideas[-1], 1)
        await n.wait(lambda: "**1.** idea 6:" in panel.content and "· 1 vote" in panel.content)
        assert len(panel.content) <= 2000
        assert all(f"idea {k}:" in panel.content for k in range(7))  # every idea still listed, shortened
        assert len(ideas[-1].content) > 290  # its own message keeps the whole idea
        assert n.server.violations == []


async def test_a_long_session_posts_its_panel_again_after_an_hour_and_reopens_an_archived_thread(tmp_path, caplog):
    async with Natty.running(tmp_path) as n:
        thread, panel = await start_session(n, n.alice, theme="a harbour at dawn", minutes=180.0)
        await add_idea(n, n.alice, thread, panel, "fishing boats with red sails")
        await n.wait(lambda: "red sails" in panel.content)

        # an hour on, Discord refuses edits of the panel (30046): the panel comes again, below, up to date
        n.server.advance_clock(3700)
        n.server.tolerate("old_message_edit")
        await add_idea(n, n.bob, thread, panel, "a lighthouse keeper waving")

        def new_panel():
            return next((m for m in thread.messages if "Collab session" in m.content and m is not panel
                         and not m.deleted), None)

        fresh = await n.wait(new_panel)
        await n.wait(lambda: "red sails" in fresh.content and "lighthouse keeper" in fresh.content)
        await n.wait(lambda: panel.deleted)
        assert [b.label for b in fresh.buttons] == ["Add idea", "Generate"]
        assert thread.messages[-1] is fresh  # at the bottom, under the idea that came last

        # a moderator archives the thread while the session runs: the next idea reopens it
        n.server.set_thread_state(thread, archived=True)
        n.server.tolerate("archived_thread")
        idea = await add_idea(n, n.mod, thread, fresh, "gulls over the breakwater")
        assert not thread.archived and "gulls" in idea.content
        await n.wait(lambda: "gulls over the breakwater" in fresh.content)
        assert [m for m in thread.messages if "Collab session" in m.content and not m.deleted] == [fresh]
        assert {v.kind for v in n.server.violations} <= {"old_message_edit", "archived_thread"}
