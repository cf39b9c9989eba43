"""The fair queue as users meet it, through the real bot: a newcomer's first job goes to the next free slot."""

from tests.harness import Natty

FAIR = """
[[model]]
name = "fair-image"
task = "text-to-image"
backend = "hf"
model = "{url}"
concurrency = 4
"""


def prompts_received(n: Natty) -> list[str]:
    return [str((rec.json or {}).get("inputs", "")) for rec, _ in n.hf.held]


async def test_the_next_free_slot_goes_to_whoever_holds_the_fewest(tmp_path):
    async with Natty.running(tmp_path) as n:
        await n.stop()
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text()
                                             + FAIR.format(url=n.hf.endpoint("text-to-image")))
        await n.start()
        carol = n.server.add_user("carol", guilds=[n.guild])
        n.hf.hold()
        alice = [await n.server.slash(n.alice, n.general, "imagine", prompt=f"alice {i}", model="fair-image")
                 for i in range(5)]
        await n.wait(lambda: len(n.hf.held) == 4)
        bob = [await n.server.slash(n.bob, n.general, "imagine", prompt="bob 0", model="fair-image")]
        await n.wait(lambda: len(n.bot.engine.active) == 6)
        # alice holds all four slots and has one more queued; bob's first job arrived after it but goes first,
        # and both messages say so
        await n.wait(lambda: alice[4].original and "Queued: position 2" in alice[4].original.content)
        await n.wait(lambda: bob[0].original and "Queued: position 1" in bob[0].original.content)
        n.hf.release(1)  # alice's first ends
        await n.wait(lambda: len(n.hf.held) == 5)
        assert prompts_received(n)[4] == "bob 0"
        # carol arrives while alice holds three and bob one, with both of them waiting with more
        bob.append(await n.server.slash(n.bob, n.general, "imagine", prompt="bob 1", model="fair-image"))
        await n.wait(lambda: n.bot.engine.scheduler.queued() == 2)  # alice's fifth and bob's second
        c = await n.server.slash(carol, n.general, "imagine", prompt="carol 0", model="fair-image")
        await n.wait(lambda: n.bot.engine.scheduler.queued() == 3)
        n.hf.release(1)
        await n.wait(lambda: len(n.hf.held) == 6)
        assert prompts_received(n)[5] == "carol 0"
        # then alice (one running, served longest ago among the tied) and bob's second
        n.hf.release(2)
        await n.wait(lambda: len(n.hf.held) == 8)
        assert prompts_received(n)[6:] == ["alice 4", "bob 1"]
        n.hf.hold(False)
        n.hf.release(100)
        for ix in [*alice, *bob, c]:
            msg = await n.final(ix)
            assert msg.attachments, msg.content
