"""Natty or Not and collab sessions without Discord: planning, votes, scoring, persistence, the fusion rule,
and what /natty check may claim."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from bot.community import check
from bot.community import collab as c
from bot.community import game as g
from bot.jobs.storage import Storage
from bot.ui.provenance import Provenance, read, stamp


def game_with(items: list[str]) -> tuple[g.Game, g.Round]:
    game = g.Game(id="abc", guild_id=1, channel_id=2, host_id=10, kind="digits", rounds_total=2, seconds=5, seed=7)
    rnd = g.Round(index=0, items=[g.Item(t, "image", "src") for t in items], phase="voting")
    game.rounds.append(rnd)
    return game, rnd


def test_rounds_pair_a_natural_and_an_ai_item_or_show_one_and_are_reproducible():
    seen = {tuple(g.plan_truths(random.Random(i))) for i in range(200)}
    assert seen == {("natural", "ai"), ("ai", "natural"), ("natural",), ("ai",)}
    game, _ = game_with([])
    assert [g.plan_truths(game.rng(3)) for _ in range(2)] == [g.plan_truths(g.Game.from_json(game.to_json()).rng(3))
                                                              for _ in range(2)]


def test_votes_can_change_and_each_right_call_scores_one_point():
    _, rnd = game_with([g.NATURAL, g.AI])
    assert g.cast_vote(rnd, 1, 0, g.AI) is None
    assert g.cast_vote(rnd, 1, 0, g.NATURAL) == g.AI
    g.cast_vote(rnd, 1, 1, g.AI)
    g.cast_vote(rnd, 2, 0, g.AI)
    result = g.score_round(rnd)
    assert result.points == {1: 2, 2: 0} and result.misses == {1: 0, 2: 1}
    assert result.right == {0: [1], 1: [1]} and result.wrong == {0: [2], 1: []}
    with pytest.raises(ValueError):
        g.cast_vote(rnd, 1, 5, g.AI)
    with pytest.raises(ValueError):
        g.cast_vote(rnd, 1, 0, "maybe")


def test_reveal_and_final_texts_name_who_was_right():
    game, rnd = game_with([g.AI])
    g.cast_vote(rnd, 5, 0, g.AI)
    g.cast_vote(rnd, 6, 0, g.NATURAL)
    text = g.reveal_text(game, rnd, g.score_round(rnd))
    assert "was **AI-generated**" in text and "Right: <@5> · Wrong: <@6>" in text
    game.points = {"6": 0, "5": 3}
    final = g.final_text(game)
    assert final.index("🥇 <@5>: 3 points") < final.index("🥈 <@6>: 0 points")


def test_game_state_round_trips_through_json():
    game, rnd = game_with([g.NATURAL, g.AI])
    g.cast_vote(rnd, 1, 1, g.AI)
    back = g.Game.from_json(game.to_json())
    assert back == game and isinstance(back.rounds[0].items[1], g.Item)


def test_real_digits_look_like_generated_ones():
    png, digit = g.real_digit(random.Random(0), 7)
    image = Image.open(io.BytesIO(png))
    assert digit == 7 and image.size == (g.ITEM_SIDE, g.ITEM_SIDE) and image.mode == "RGB"
    assert read(png)["text_chunks"] == {}
    corner = image.getpixel((0, 0))
    assert corner == (255, 255, 255) or min(corner) < 255  # ink on white, no frame


def test_normalizing_an_image_strips_every_label():
    out = io.BytesIO()
    Image.new("RGB", (600, 300), (1, 2, 3)).save(out, "PNG")
    labelled = stamp(out.getvalue(), "png", Provenance.for_prompt("x", model="m", backend="b", task="t"))
    assert read(labelled)["natty"] is not None
    plain = g.normalize_image(labelled)
    assert read(plain)["natty"] is None and Image.open(io.BytesIO(plain)).size == (256, 128)
    assert Image.open(io.BytesIO(g.normalize_image(labelled, size=(100, 40)))).size == (100, 40)


def test_generated_text_items_start_like_the_real_one():
    assert g.clean_generated_text("and the river sang.", "The old ferryman") == "The old ferryman and the river sang."
    assert g.clean_generated_text("\"The old ferryman slept.\"", "The old ferryman") == "The old ferryman slept."
    long = "One sentence here. " * 30
    assert g.excerpt(long).endswith(".") and len(g.excerpt(long)) <= 280
    assert g.opening("a b c d e f g h i j", 3) == "a b c"
    assert all(len(p) > 50 for p in g.hand_written_passages())


def test_detector_scores_read_ai_and_human_labels():
    assert check.detector_score([("human", 0.2), ("artificial", 0.8)]) == 0.8
    assert check.detector_score([("real", 0.9)]) == pytest.approx(0.1)
    assert check.detector_score([("teapot", 0.9)]) is None


def test_check_never_gives_a_bare_verdict():
    bare = check.assess_file({"c2pa": False, "natty": None, "generator_hints": [], "software": None}, None, None,
                         None, None)
    assert bare.strength == "none" and any("Absence proves nothing" in p for p in bare.proves)
    unverified = check.assess_file({"c2pa": True, "natty": None, "generator_hints": [], "software": None}, None, None,
                               None, None)
    assert "not verified" in unverified.found[0] and unverified.strength == "weak"
    prov = Provenance.for_prompt("x", model="m", backend="b", task="text-to-image", job_id="j1")
    claimed = check.assess_file({"c2pa": False, "natty": prov, "generator_hints": [], "software": "natty"}, None, None,
                            ("det", [("artificial", 0.7), ("human", 0.3)]), None)
    assert claimed.title == "Labelled as made by natty" and claimed.strength == "weak"
    assert any("70% likely AI-generated" in f for f in claimed.found)
    assert any("statistical guesses" in p for p in claimed.proves)
    proven = check.assess_file({"c2pa": False, "natty": prov, "generator_hints": [], "software": None}, None,
                           "pixels match", None, None)
    assert proven.title == "Made by natty" and proven.strength == "strong"
    text = check.assess_text(None)
    assert "nothing can be proven" in text.proves[0]


def test_text_hash_ignores_whitespace_only():
    assert check.text_sha256(" a  b\n") == check.text_sha256("a b")
    assert check.text_sha256("a b") != check.text_sha256("a c")


async def test_scores_pool_and_sessions_persist(tmp_path):
    storage = Storage(tmp_path / "db.sqlite", tmp_path / "data")
    await storage.open()
    try:
        game, rnd = game_with([g.NATURAL])
        g.cast_vote(rnd, 1, 0, g.NATURAL)
        g.cast_vote(rnd, 2, 0, g.AI)
        rnd.deadline = 123.0
        await g.save_game(storage, game)
        assert await g.SessionStore(storage, "game").open_ids() == ["abc"]
        assert await g.SessionStore(storage, "collab").open_ids() == []
        assert await g.load_game(storage, "abc") == game
        await g.add_scores(storage, 1, g.score_round(rnd))
        await g.add_scores(storage, 1, g.score_round(rnd))
        await g.count_game(storage, 1, [1, 2])
        board = await g.leaderboard(storage, 1)
        assert board[0] == {"user_id": 1, "points": 2, "correct": 2, "wrong": 0, "games": 1}
        assert board[1]["user_id"] == 2 and board[1]["wrong"] == 2
        game.state = "done"
        await g.save_game(storage, game)
        assert await g.SessionStore(storage, "game").open_ids() == []

        pool = g.RealPool(storage)
        out = io.BytesIO()
        Image.new("RGB", (40, 20)).save(out, "JPEG")
        await pool.add(1, "image", 9, image=out.getvalue())
        await pool.add(1, "text", 9, text="A sentence by a person.")
        assert await pool.counts(1) == {"image": 1, "text": 1}
        picked = await pool.pick(1, "image", random.Random(0))
        assert picked and Image.open(picked["path"]).format == "PNG"
        assert await pool.pick(2, "image", random.Random(0)) is None
    finally:
        await storage.close()


# --- collab ---------------------------------------------------------------------------------------------------------

def session() -> c.Session:
    return c.Session(id="s1", guild_id=1, channel_id=2, host_id=10, task="image", theme="a castle", deadline=0)


def test_ideas_are_deduplicated_and_votes_toggle():
    s = session()
    c.add_idea(s, 1, "with  dragons")
    with pytest.raises(c.CollabError):
        c.add_idea(s, 2, "With dragons")
    with pytest.raises(c.CollabError):
        c.add_idea(s, 2, "   ")
    assert c.toggle_vote(s, 0, 3) is True and c.toggle_vote(s, 0, 3) is False
    with pytest.raises(c.CollabError):
        c.toggle_vote(s, 4, 3)
    s.state = "generating"
    with pytest.raises(c.CollabError):
        c.add_idea(s, 2, "late")


def test_the_fusion_rule_takes_the_theme_then_the_top_voted_ideas():
    s = session()
    for author, text in [(1, "at dusk"), (2, "with dragons"), (3, "in snow"), (4, "a castle"), (5, "tiny boat")]:
        c.add_idea(s, author, text)
    assert [i.text for i in c.top_ideas(s)] == ["at dusk", "with dragons", "in snow"]  # no votes: first three
    for voter, idx in [(7, 2), (8, 2), (7, 4), (9, 3), (9, 1)]:
        c.toggle_vote(s, idx, voter)
    top = [i.text for i in c.top_ideas(s)]
    assert top == ["in snow", "with dragons", "a castle"]  # ties keep the order ideas came in
    assert c.fuse_by_rule(s.theme, top) == "a castle, in snow, with dragons"  # "a castle" is already in
    assert c.fuse_by_rule("", ["x."]) == "x"
    assert len(c.fuse_by_rule("t", ["y" * 400, "z" * 400])) <= c.MAX_PROMPT


def test_fused_answers_are_cleaned_and_everyone_is_credited():
    assert c.clean_fused('Prompt: "a castle at dusk"\nExplanation: ...') == "a castle at dusk"
    assert c.clean_fused("\n\n**Final prompt:** a ship") == "a ship"
    s = session()
    c.add_idea(s, 1, "a")
    c.add_idea(s, 2, "b")
    c.toggle_vote(s, 1, 3)
    credit = c.credit_line(s)
    assert credit == "Made together: hosted by <@10>; ideas by <@1>, <@2> (1 used); votes by <@3>."
    assert s.contributors == [10, 1, 2, 3]
    assert c.Session.from_json(s.to_json()) == s
    messages = c.fusion_messages("image", "t", ["a", "b"])
    assert "image generation model" in messages[0]["content"] and "- a\n- b" in messages[1]["content"]
    assert "Collab session" in c.panel_text(s) and "**1.** b · 1 vote" in c.panel_text(s)


async def test_natty_check_text_matches_results_off_the_event_loop(tmp_path, monkeypatch):
    import threading

    from bot.jobs.job import Job, JobState

    storage = Storage(tmp_path / "db.sqlite", tmp_path / "data")
    await storage.open()
    try:
        for i in range(30):
            await storage.insert_job(Job(user_id=1, guild_id=5, task="chat", model="m", state=JobState.DONE,
                                         result={"kind": "text", "text": f"answer number {i}"}))
        hashed_in: set[int] = set()
        real = check.text_sha256

        def spy(text: str) -> str:
            hashed_in.add(threading.get_ident())
            return real(text)

        monkeypatch.setattr(check, "text_sha256", spy)
        found = await check.natty_text_job(storage, "answer  number 3", 5)
        assert found is not None and found["model"] == "m"
        assert await check.natty_text_job(storage, "answer number 3", 6) is None  # another server's records
        assert hashed_in - {threading.get_ident()}, "the result JSONs were parsed on the event loop"
    finally:
        await storage.close()


def test_the_collab_panel_fits_one_message_whatever_the_ideas():
    s = c.Session(id="s1", guild_id=1, channel_id=2, host_id=10, task="image", theme="t" * 300, deadline=0.0,
                  minutes=5.0)
    for k in range(c.MAX_IDEAS):
        c.add_idea(s, 100 + k, f"{k} " + "very long idea " * 20)
    text = c.panel_text(s)
    assert len(text) <= c.PANEL_CHARS and "**1.**" in text and "more" in text.splitlines()[-1]
    s.ideas[-1].voters = [1, 2, 3]  # the most voted idea leads the panel
    assert f"**1.** {c.MAX_IDEAS - 1} very long idea" in c.panel_text(s)


def test_against_the_shakespeare_models_the_persons_side_is_shakespeare_they_never_read():
    from models.catalog import load_catalog
    from models.own.texts import TEST_WORKS

    catalog = load_catalog()
    passages = g.shakespeare_passages()
    assert len(passages) > 400 and {work for work, _ in passages} == set(TEST_WORKS)  # held-out works only
    for name in ("natty-gpt", "natty-rnn"):
        text, source = g.offline_real_text(catalog.get(name), random.Random(1), None)
        assert source.startswith("Shakespeare, ") and any(title in source for title in g.WORK_TITLES.values())
        assert "\n" not in text and 100 < len(text) <= 280
        assert any(" ".join(p.split()).startswith(text[:60]) for _, p in passages)
    text, source = g.offline_real_text(catalog.get("llama-3.3-70b"), random.Random(1), "pt-BR")
    assert "corpus" in source and text[:40] in " ".join(" ".join(p.split()) for p in g.hand_written_passages())
    assert g.offline_real_text(None, random.Random(1), None)[1] == g.t("game.source_corpus_text", None)


def test_a_continuation_that_starts_with_punctuation_keeps_it_against_the_opening():
    joined = g.clean_generated_text(", my lord, and so farewell.", "Good night")
    assert joined == "Good night, my lord, and so farewell."
    assert g.clean_generated_text(" sweet prince.", "Good night") == "Good night sweet prince."
    assert g.clean_generated_text("Good night, sweet prince.", "Good night") == "Good night, sweet prince."
