"""Acknowledgements before everything else (bot.ui.acks): every request of the bot's HTTP session but callbacks and
reads waits for the interactions due, and a wave of commands costs its acknowledgements plus a small share.

The unit tests drive a real aiohttp session (with the gate's trace, as the bot's session has it) against a small
aiohttp server; the end-to-end test sends a stream of commands through the test Discord server to the real bot
while their jobs finish, and counts what the bot sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bot.ui.acks import AckGate
from tests.harness import Natty


class Server:
    def __init__(self) -> None:
        self.seen: list[str] = []  # "METHOD path" in the order the server got them

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(f"{request.method} {request.path}")
        return web.json_response({})


@pytest.fixture
async def wired() -> AsyncIterator[tuple[AckGate, aiohttp.ClientSession, Server, dict, str]]:
    server = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    gate = AckGate(limit=5.0)
    parsers: dict = {"INTERACTION_CREATE": lambda data: None}
    trace = aiohttp.TraceConfig()
    gate.watch(parsers, trace)
    session = aiohttp.ClientSession(trace_configs=[trace])
    try:
        yield gate, session, server, parsers, f"http://127.0.0.1:{port}/api/v10"
    finally:
        await session.close()
        await runner.cleanup()


async def call(session: aiohttp.ClientSession, method: str, url: str) -> None:
    async with session.request(method, url) as response:
        await response.read()


async def test_an_edit_waits_for_the_acknowledgement_due_and_a_read_does_not(wired) -> None:
    gate, session, server, parsers, api = wired
    parsers["INTERACTION_CREATE"]({"id": "11"})  # a command arrived; its ack is due
    edit = asyncio.create_task(call(session, "PATCH", f"{api}/webhooks/1/tok/messages/5"))
    await call(session, "GET", f"{api}/channels/3/messages")
    await asyncio.sleep(0.2)
    assert server.seen == ["GET /api/v10/channels/3/messages"]  # the edit is held, the read went
    await call(session, "POST", f"{api}/interactions/11/tok/callback")  # the ack is never held
    await asyncio.wait_for(edit, 2)
    assert server.seen[1:] == ["POST /api/v10/interactions/11/tok/callback", "PATCH /api/v10/webhooks/1/tok/messages/5"]


async def test_a_wave_of_commands_lets_other_requests_through_only_as_its_acks_earn_them(wired) -> None:
    gate, session, server, parsers, api = wired
    gate.burst, gate.share, gate.quiet, gate.hold = 1.0, 0.5, 0.4, 30.0

    async def command(i: int) -> None:
        parsers["INTERACTION_CREATE"]({"id": str(100 + i)})
        await call(session, "POST", f"{api}/interactions/{100 + i}/tok/callback")

    await command(0)
    sends = [asyncio.create_task(call(session, "POST", f"{api}/channels/3/messages")) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert server.seen.count("POST /api/v10/channels/3/messages") == 1  # the wave's first credit
    await command(1)
    await asyncio.sleep(0.05)
    assert server.seen.count("POST /api/v10/channels/3/messages") == 1  # half a credit earned: not yet
    await command(2)
    await asyncio.sleep(0.05)
    assert server.seen.count("POST /api/v10/channels/3/messages") == 2  # two acks, one more request
    await asyncio.wait_for(asyncio.gather(*sends), 2)  # the wave passes (0.4 s quiet): the last one goes
    assert gate.held == 2


async def test_a_request_held_past_hold_goes_anyway(wired) -> None:
    gate, session, server, parsers, api = wired
    gate.burst, gate.share, gate.quiet, gate.hold = 1.0, 0.0, 30.0, 0.3  # a wave that never ends, earning nothing
    parsers["INTERACTION_CREATE"]({"id": "7"})
    await call(session, "POST", f"{api}/interactions/7/tok/callback")
    await call(session, "PATCH", f"{api}/webhooks/1/tok/messages/1")  # the burst credit
    await asyncio.wait_for(call(session, "PATCH", f"{api}/webhooks/1/tok/messages/2"), 2)  # late, not lost
    assert server.seen[-1] == "PATCH /api/v10/webhooks/1/tok/messages/2"


async def test_a_stream_of_commands_costs_its_acks_and_a_small_share_and_every_result_arrives(tmp_path) -> None:
    async with Natty.running(tmp_path, max_jobs_per_guild=1000) as n:
        gate = n.bot.presenter.acks
        gate.hold = 120.0  # the bound below holds by construction; no machine is slow enough to need more
        users = [n.server.add_user(f"member{i}", guilds=[n.guild]) for i in range(30)]
        seen = len(n.server.requests)
        ixs = []
        for i, user in enumerate(users):  # a steady stream: gaps between acks, jobs finishing meanwhile
            ixs.append(await n.server.slash(user, n.general, "imagine", prompt=f"a lighthouse {i}"))
            await asyncio.sleep(0.03)
        await n.wait(lambda: all(ix.acked_at is not None for ix in ixs))
        start, end = min(ix.dispatched_at for ix in ixs), max(ix.acked_at for ix in ixs)
        during = [r for r in n.server.requests[seen:] if start <= r.time <= end and r.method not in ("GET", "HEAD")
                  and not r.path.split("?")[0].endswith("/callback")]
        assert len(during) <= gate.burst + gate.share * len(ixs), [f"{r.method} {r.path}" for r in during]
        for ix in ixs:  # and once the wave has passed, every result is there
            msg = await n.final(ix)
            assert msg.attachments, msg.content
