"""Acknowledgements first: every other REST request waits while interactions are still unanswered, and a wave of
commands is answered for the price of its acknowledgements plus a small share.

Discord gives an interaction three seconds to be acknowledged, and a busy channel's burst of commands shares one
event loop and one HTTP session with the edits and results of every job already running. `AckGate` knows which
interactions have arrived and not yet been answered (INTERACTION_CREATE seen, its callback not yet back), and it
stands in front of every request the bot's HTTP session makes (an aiohttp `on_request_start` hook, so neither
discord.py's HTTPClient nor its webhooks can go round it) except the callbacks themselves and reads (GET):

- while acknowledgements are due, a request waits for them (at most `limit` seconds, so it is late, never lost);
- in a wave of commands (an interaction arrived or was answered in the last `QUIET` seconds), requests take
  turns on a budget: `BURST` at the start of a wave, then `SHARE` more for each acknowledgement sent, so a wave
  of N commands costs at most about N * (1 + SHARE) requests; a request that has waited `HOLD` seconds goes
  anyway, and when the wave passes every waiting request goes, in the order they came;
- past the wait for due acknowledgements, requests made while some are still due go one at a time.

A job's message is edited inside `turn()`, which takes the same budget once for the edit (the message's coalescing
picks the newest render only after its turn, so a late edit shows the latest state, not a stale one). Interaction
callbacks never wait for anything here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")
DUE_FOR = 3.0  # an interaction unanswered this long has expired: it stops holding requests back
QUIET = 0.5  # seconds without an interaction arriving or being answered: the wave is over
SHARE = 0.08  # requests other than acknowledgements granted per acknowledgement during a wave
BURST = 2.0  # requests a wave may make before its acknowledgements have earned any (and the most saved up)
HOLD = 8.0  # the longest a request waits for the budget

_admitted: contextvars.ContextVar[bool] = contextvars.ContextVar("natty_ack_gate_admitted", default=False)


class AckGate:
    def __init__(self, limit: float = 0.5) -> None:
        self.limit = limit
        self.share, self.burst, self.hold, self.quiet = SHARE, BURST, HOLD, QUIET  # tests change these
        self.due: dict[int, float] = {}  # interaction id -> monotonic time it stops counting
        self._clear = asyncio.Event()
        self._clear.set()
        self._one = asyncio.Lock()  # requests made while acknowledgements are still due: one at a time
        self.waits = 0  # requests that waited for acknowledgements (for the bench)
        self.held = 0  # requests that waited for the wave's budget (for the bench)
        self.credit = BURST
        self.wave_until = 0.0  # monotonic time the current wave ends, unless something happens before
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()  # waiting for the budget
        self._timer: asyncio.TimerHandle | None = None

    # ---- interactions coming and going ----

    def _activity(self) -> None:
        now = time.monotonic()
        if now >= self.wave_until:  # a new wave: its budget starts full
            self.credit = self.burst
        self.wave_until = now + self.quiet
        self._arm()

    def _arm(self) -> None:
        """Look again when the wave would end (once: an armed timer re-arms itself while the wave goes on)."""
        if self._timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop (a unit test): nothing waits anyway
                self._timer = asyncio.get_running_loop().call_later(
                    max(0.0, self.wave_until - time.monotonic()), self._wave_check)

    def arrived(self, interaction_id: int) -> None:
        self.due[interaction_id] = time.monotonic() + DUE_FOR
        self._clear.clear()
        self._activity()

    def answered(self, interaction_id: int) -> None:
        if self.due.pop(interaction_id, None) is not None:
            self.credit = min(self.burst, self.credit + self.share)
        if not self.due:
            self._clear.set()
        self._activity()
        self._release()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, until in self.due.items() if until <= now]:
            del self.due[key]
        if not self.due:
            self._clear.set()

    def _wave_check(self) -> None:
        self._timer = None
        if self.in_wave() and (self._queue or self.due):
            self._arm()
            return
        self._release()

    def in_wave(self) -> bool:
        return time.monotonic() < self.wave_until

    def _release(self) -> None:
        """Let waiting requests go: as many as the budget allows, or all once the wave is over."""
        over = not self.in_wave()
        while self._queue:
            if self._queue[0].done():  # gave up (HOLD) or was cancelled
                self._queue.popleft()
                continue
            if over:
                self._queue.popleft().set_result(None)
            elif self.credit >= 1:
                self.credit -= 1
                self._queue.popleft().set_result(None)
            else:
                break

    # ---- a request's wait ----

    async def clear(self) -> None:
        """Return once no acknowledgement is due (or after `limit` seconds)."""
        self._expire()
        if not self.due:
            return
        self.waits += 1
        deadline = time.monotonic() + self.limit
        while self.due and (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._clear.wait(), min(left, DUE_FOR))
            self._expire()

    async def _budget(self) -> None:
        """Take one request's share of the wave's budget (nothing to take outside a wave)."""
        if not self.in_wave():
            return
        if not self._queue and self.credit >= 1:
            self.credit -= 1
            return
        self.held += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(future)
        self._arm()
        try:
            await asyncio.wait_for(asyncio.shield(future), self.hold)
        except TimeoutError:
            pass  # goes now, over budget: later still would be worse than one request too many
        finally:
            if not future.done():
                future.cancel()  # its place in the queue is given up

    async def admit(self) -> None:
        await self.clear()
        await self._budget()

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Around one edit: wait for the acknowledgements due (at most `limit`) and for the wave's budget; if some
        acknowledgements are still due then (a steady stream of commands), edits go one at a time rather than all
        at once. The request the edit makes is not held again."""
        await self.admit()
        token = _admitted.set(True)
        try:
            if not self.due:
                yield
                return
            async with self._one:
                yield
        finally:
            _admitted.reset(token)

    def watch(self, parsers: dict[str, Any], trace: aiohttp.TraceConfig) -> None:
        """Hear interactions arrive (the gateway's INTERACTION_CREATE parser) and their callbacks end, and stand in
        front of every other request of the HTTP session (the session's trace)."""
        original = parsers["INTERACTION_CREATE"]

        def interaction_create(data: dict[str, Any]) -> None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.arrived(int(data["id"]))
            original(data)

        parsers["INTERACTION_CREATE"] = interaction_create

        async def request_start(_session: aiohttp.ClientSession, _context: Any,
                                params: aiohttp.TraceRequestStartParams) -> None:
            if params.method in ("GET", "HEAD") or CALLBACK.search(params.url.path) or _admitted.get():
                return
            await self.admit()

        async def request_ended(_session: aiohttp.ClientSession, _context: Any,
                                params: aiohttp.TraceRequestEndParams) -> None:
            if params.method == "POST" and (match := CALLBACK.search(params.url.path)):
                self.answered(int(match.group(1)))

        trace.on_request_start.append(request_start)
        trace.on_request_end.append(request_ended)
        trace.on_request_exception.append(request_ended)  # type: ignore[arg-type]
