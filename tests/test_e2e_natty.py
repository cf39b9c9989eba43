"""Natty or Not and /natty check as members meet them: rounds, votes, the timer, reveals, scores that outlive
restarts, the pool of real items, and honest answers about what a file's metadata proves."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, PngImagePlugin

from bot.community import game as g
from bot.ui.provenance import read as read_provenance
from tests.harness import Natty
from tests.hf_server import draw_png


async def open_game(n: Natty) -> g.Game:
    ids = await g.SessionStore(n.bot.storage, "game").open_ids()
    assert len(ids) == 1
    game = await g.load_game(n.bot.storage, ids[0])
    assert game is not None
    return game


async def round_message(n: Natty, number: int, total: int):
    return await n.wait(lambda: next((m for m in n.general.messages
                                      if f"round {number}/{total}**" in m.content and m.buttons), None))


async def reveal_message(n: Natty, number: int, total: int):
    return await n.wait(lambda: next((m for m in n.general.messages
                                      if f"Round {number}/{total}: the reveal" in m.content), None))


async def current_round(n: Natty, number: int) -> g.Round:
    async def ready() -> g.Round | None:
        game = await open_game(n)
        rnd = game.rounds[number - 1] if len(game.rounds) >= number else None
        return rnd if rnd and rnd.message_id else None

    async with asyncio.timeout(30):  # a round that never opens fails the test instead of hanging it
        rnd = await ready()
        while rnd is None:
            await asyncio.sleep(0.02)
            rnd = await ready()
    return rnd


def label(rnd: g.Round, item: int, choice: str) -> str:
    word = "Natural" if choice == g.NATURAL else "AI"
    return word if len(rnd.items) == 1 else f"{item + 1}: {word}"


def other(choice: str) -> str:
    return g.AI if choice == g.NATURAL else g.NATURAL


async def vote(n: Natty, user, msg, rnd: g.Round, item: int, choice: str) -> str:
    reply = await (await n.server.press(user, msg, label=label(rnd, item, choice))).response()
    assert reply.ephemeral
    return reply.content


async def test_a_whole_game_with_votes_timer_reveal_and_scores_kept_across_restarts(tmp_path):
    async with Natty.running(tmp_path) as n:
        ix = await n.server.slash(n.alice, n.general, "natty play", rounds=2, kind="digits", seconds=8)
        intro = await ix.response()
        assert "Natty or Not" in intro.content and "2 rounds of handwritten digits" in intro.content
        assert not intro.would_ping
        busy = await (await n.server.slash(n.bob, n.general, "natty play")).response()
        assert busy.ephemeral and "already running in this channel" in busy.content

        # round 1: alice changes her mind and ends up right on every item, bob is wrong on every item
        msg = await round_message(n, 1, 2)
        rnd = await current_round(n, 1)
        assert len(msg.attachments) == len(rnd.items) and all(a.filename.startswith("item") for a in msg.attachments)
        for att in msg.attachments:  # nothing in the file gives the answer away
            image = Image.open(io.BytesIO(att.data))
            assert max(image.size) == g.ITEM_SIDE
            found = read_provenance(att.data)
            assert found["natty"] is None and not found["text_chunks"] and not found["generator_hints"]
        labels = [b.label for b in msg.buttons]
        assert labels[-1] == "End round" and len(labels) == 2 * len(rnd.items) + 1
        first = rnd.items[0].truth
        await vote(n, n.alice, msg, rnd, 0, other(first))
        changed = await vote(n, n.alice, msg, rnd, 0, first)
        assert "changed from" in changed
        for i, item in enumerate(rnd.items[1:], start=1):
            await vote(n, n.alice, msg, rnd, i, item.truth)
        for i, item in enumerate(rnd.items):
            assert "Your call" in await vote(n, n.bob, msg, rnd, i, other(item.truth))
        refused = await (await n.server.press(n.bob, msg, label="End round")).response()
        assert refused.ephemeral and "Only the host" in refused.content
        await (await n.server.press(n.alice, msg, label="End round")).response()
        reveal = await reveal_message(n, 1, 2)
        assert f"Right: <@{n.alice.id}>" in reveal.content and f"Wrong: <@{n.bob.id}>" in reveal.content
        assert ("natural" in reveal.content) or ("AI-generated" in reveal.content)
        assert not reveal.would_ping
        await n.wait(lambda: not msg.buttons)  # voting closed: the buttons are gone
        round1_items = len(rnd.items)

        # round 2: votes, then a restart before the timer ends; the resumed timer reveals and ends the game
        msg2 = await round_message(n, 2, 2)
        rnd2 = await current_round(n, 2)
        for i, item in enumerate(rnd2.items):
            await vote(n, n.alice, msg2, rnd2, i, item.truth)
        await n.restart()
        reveal2 = await reveal_message(n, 2, 2)
        assert f"Right: <@{n.alice.id}>" in reveal2.content
        final = await n.wait(lambda: next((m for m in n.general.messages if "Natty or Not is over" in m.content),
                                          None))
        total = round1_items + len(rnd2.items)
        assert f"🥇 <@{n.alice.id}>: {total} point" in final.content and f"<@{n.bob.id}>: 0 points" in final.content
        assert await g.SessionStore(n.bot.storage, "game").open_ids() == []

        await n.restart()
        board = await (await n.server.slash(n.bob, n.general, "natty leaderboard")).response()
        text = board.embeds[0]["description"]
        assert text.index(f"<@{n.alice.id}>") < text.index(f"<@{n.bob.id}>")
        assert f"<@{n.alice.id}>: **{total}** points ({total} right, 0 wrong" in text
        assert f"<@{n.bob.id}>: **0** points (0 right, {round1_items} wrong" in text
        assert "2 games" not in text and "1 game)" in text
        assert not board.would_ping
        assert n.server.violations == []


async def test_the_pool_of_real_items_feeds_text_and_image_rounds(tmp_path):
    async with Natty.running(tmp_path) as n:
        empty = await (await n.server.slash(n.alice, n.general, "natty play", kind="images")).response()
        assert "no real images in its pool" in empty.content
        passage = "The old ferryman knew every stone in the river by the sound the water made around it."
        denied = await (await n.server.slash(n.alice, n.general, "natty add-real", text=passage)).response()
        assert denied.ephemeral and "manage guild" in denied.content.lower()
        added = await (await n.server.slash(n.mod, n.general, "natty add-real", text=passage)).response()
        assert added.ephemeral and "1 text(s)" in added.content
        photo = draw_png("a real photo", 300, 200, 3)
        added = await (await n.server.slash(n.mod, n.general, "natty add-real",
                                            image=("photo.png", photo, "image/png"))).response()
        assert "1 image(s)" in added.content
        stamped = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="fake photo"))
        fake = await (await n.server.slash(n.mod, n.general, "natty add-real",
                                           image=("fake.png", stamped.attachments[0].data, "image/png"))).response()
        assert "cannot go into the pool" in fake.content

        await n.server.slash(n.alice, n.general, "natty play", rounds=1, kind="text", seconds=300)
        msg = await round_message(n, 1, 1)
        rnd = await current_round(n, 1)
        assert "short texts" in msg.content and not msg.attachments
        natural = [i for i, item in enumerate(rnd.items) if item.truth == g.NATURAL]
        for i in natural:
            assert passage in msg.content and rnd.items[i].text == passage
        for i, item in enumerate(rnd.items):
            await vote(n, n.bob, msg, rnd, i, item.truth)
        await (await n.server.press(n.alice, msg, label="End round")).response()
        reveal = await reveal_message(n, 1, 1)
        if natural:
            assert "added to this server's pool by an admin" in reveal.content
        if len(natural) < len(rnd.items):
            assert "written by **test-chat**" in reveal.content
        await n.wait(lambda: next((m for m in n.general.messages if "Natty or Not is over" in m.content), None))

        await n.server.slash(n.alice, n.general, "natty play", rounds=1, kind="images", seconds=300)
        msg = await round_message(n, 1, 1)
        rnd = await current_round(n, 1)
        assert len(msg.attachments) == len(rnd.items)
        for att in msg.attachments:
            assert Image.open(io.BytesIO(att.data)).size == (256, 171)  # both shown at the real image's shape
        await (await n.server.press(n.alice, msg, label="End round")).response()
        reveal = await n.wait(lambda: [m for m in n.general.messages if "Round 1/1: the reveal" in m.content][1:])
        assert "Nobody voted this round" in reveal[0].content
        if any(item.truth == g.AI for item in rnd.items):
            assert "from the caption" in reveal[0].content
        assert n.server.violations == []


DETECTOR = """
[[model]]
name = "ai-image-detector"
task = "image-classification"
backend = "hf"
model = "{url}"
"""


def png_with_text(**chunks: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def c2pa_signed_png() -> bytes:
    """A PNG with real Content Credentials, signed by a throwaway (untrusted) certificate."""
    c2pa = pytest.importorskip("c2pa")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "natty tests")])

    now = datetime.datetime.now(datetime.UTC)
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("natty test CA")).issuer_name(name("natty test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("natty test signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    pkey = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=pkey, ta_url=None))
    manifest = {"claim_generator": "natty-tests/1.0", "title": "signed.png", "format": "image/png", "assertions": [
        {"label": "c2pa.actions", "data": {"actions": [{
            "action": "c2pa.created", "softwareAgent": {"name": "Example Diffusion 2"},
            "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}]}}]}
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(signer, "image/png", io.BytesIO(png_with_text()), out)
    return out.getvalue()


async def check(n: Natty, **options) -> dict:
    reply = await (await n.server.slash(n.alice, n.general, "natty check", **options)).response()
    (embed,) = reply.embeds
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "How much that proves" in fields and "What I found" in fields
    return {"title": embed["title"], **fields}


async def test_check_reads_credentials_and_metadata_and_says_what_they_prove(tmp_path):
    async with Natty.running(tmp_path) as n:
        await n.stop()
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text()
                                              + DETECTOR.format(url=n.hf.endpoint("image-classification")))
        await n.start()
        made = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a harbour", seed=3))
        ours = await check(n, file=("harbour.png", made.attachments[0].data, "image/png"))
        assert ours["title"] == "🔍 Made by natty"
        assert "natty's own label" in ours["What I found"] and "exactly these pixels" in ours["What I found"]
        assert "Detector **ai-image-detector**" in ours["What I found"]
        assert "statistical guesses" in ours["How much that proves"]

        a1111 = await check(n, file=("sd.png", png_with_text(parameters="a cat, Steps: 20, Sampler: Euler"),
                                     "image/png"))
        assert "Stable Diffusion web UI" in a1111["What I found"]
        assert "forge" in a1111["How much that proves"]

        bare = await check(n, file=("bare.png", draw_png("plain", 64, 64, 1), "image/png"))
        assert bare["title"] == "🔍 Nothing conclusive"
        assert "Absence proves nothing" in bare["How much that proves"]

        signed = await check(n, file=("signed.png", c2pa_signed_png(), "image/png"))
        assert "Content Credentials (C2PA)" in signed["What I found"]
        assert "natty test signer" in signed["What I found"]
        assert "made by a generative AI model" in signed["What I found"]
        assert "not on a trust list" in signed["How much that proves"]
        assert signed["title"] == "🔍 Content Credentials declare AI generation"
        assert n.server.violations == []


async def test_check_on_text_finds_natty_answers_and_proves_nothing_about_other_text(tmp_path):
    async with Natty.running(tmp_path) as n:
        await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="tell me about lighthouses"))
        job = (await n.bot.storage.recent_jobs(n.alice.id, 1))[0]
        found = await check(n, text="  " + job.result["text"].replace(" ", "  ") + "\n")
        assert found["title"] == "🔍 Made by natty" and job.id in found["What I found"]
        unknown = await check(n, text="I wrote this myself, honestly.")
        assert "nothing can be proven" in unknown["How much that proves"]
        nothing = await (await n.server.slash(n.alice, n.general, "natty check")).response()
        assert nothing.ephemeral and "Attach a `file`" in nothing.content
        assert n.server.violations == []


async def test_a_zip_bomb_png_gets_a_clear_refusal_and_nobody_waits_for_it(tmp_path):
    from tests.hostile import ztxt_bomb_png

    async with Natty.running(tmp_path) as n:
        bomb = ztxt_bomb_png()  # about 300 KB whose zTXt chunk inflates to 300 MiB
        checking = await n.server.slash(n.alice, n.general, "natty check", file=("bomb.png", bomb, "image/png"))
        helping = await n.server.slash(n.bob, n.general, "help")  # another member, while the file is read
        refusal = await n.final(checking)
        assert "did not read **bomb.png**" in refusal.content and "Nothing was checked" in refusal.content
        assert not refusal.embeds
        answer = await helping.response()
        assert answer.embeds or answer.content
        added = await (await n.server.slash(n.mod, n.general, "natty add-real",
                                            image=("bomb.png", bomb, "image/png"))).response()
        assert "did not read **bomb.png**" in added.content
        assert await g.RealPool(n.bot.storage).counts(n.guild.id) == {}
        assert n.server.violations == []  # among them: every interaction acknowledged within 3 seconds


async def test_a_finished_game_leaves_no_lock_wakeup_or_task_behind(tmp_path):
    async with Natty.running(tmp_path) as n:
        cog = n.bot.get_cog("NattyGame")
        await n.server.slash(n.alice, n.general, "natty play", rounds=1, kind="digits", seconds=300)
        msg = await round_message(n, 1, 1)
        await current_round(n, 1)
        assert cog.sessions.tasks and cog.sessions.locks  # a running game has its timer task and lock
        await (await n.server.press(n.alice, msg, label="End round")).response()
        await n.wait(lambda: next((m for m in n.general.messages if "Natty or Not is over" in m.content), None))
        async with asyncio.timeout(30):
            while cog.sessions.tasks or cog.sessions.locks or cog.sessions.wakeups:
                await asyncio.sleep(0.02)
        assert (cog.sessions.tasks, cog.sessions.locks, cog.sessions.wakeups) == ({}, {}, {})
        assert n.server.violations == []
