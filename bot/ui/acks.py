"""Acknowledgements first: progress and queue-position edits wait while interactions are still unanswered.

Discord gives an interaction three seconds to be acknowledged, and a busy channel's burst of commands shares one
event loop and one HTTP session with the edits of every job already running. `AckGate` knows which interactions
have arrived and not yet been answered (INTERACTION_CREATE seen, its callback not yet back), and a progress edit
asks it first: while acknowledgements are due it waits (at most `limit` seconds, so an edit is late, never lost;
the message's coalescing keeps only the newest render meanwhile), and past that, edits go one at a time while
acknowledgements are still due, so a steady stream of commands never meets a wave of edits. The results themselves
are not held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

CALLBACK = re.compile(r"/interactions/(\d+)/[^/]+/callback$")
DUE_FOR = 3.0  # an interaction unanswered this long has expired: it stops holding edits back


class AckGate:
    def __init__(self, limit: float = 0.5) -> None:
        self.limit = limit
        self.due: dict[int, float] = {}  # interaction id -> monotonic time it stops counting
        self._clear = asyncio.Event()
        self._clear.set()
        self._one = asyncio.Lock()  # edits made while acknowledgements are still due: one at a time
        self.waits = 0  # edits that waited for acknowledgements (for the bench)

    def arrived(self, interaction_id: int) -> None:
        self.due[interaction_id] = time.monotonic() + DUE_FOR
        self._clear.clear()

    def answered(self, interaction_id: int) -> None:
        self.due.pop(interaction_id, None)
        if not self.due:
            self._clear.set()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, until in self.due.items() if until <= now]:
            del self.due[key]
        if not self.due:
            self._clear.set()

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

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Around one edit: wait for the acknowledgements due (at most `limit`); if some are still due then (a
        steady stream of commands), edits go one at a time rather than all at once."""
        await self.clear()
        if not self.due:
            yield
            return
        async with self._one:
            yield

    def watch(self, parsers: dict[str, Any], trace: aiohttp.TraceConfig) -> None:
        """Hear interactions arrive (the gateway's INTERACTION_CREATE parser) and their callbacks end (the HTTP
        session's trace)."""
        original = parsers["INTERACTION_CREATE"]

        def interaction_create(data: dict[str, Any]) -> None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.arrived(int(data["id"]))
            original(data)

        parsers["INTERACTION_CREATE"] = interaction_create

        async def request_ended(_session: aiohttp.ClientSession, _context: Any,
                                params: aiohttp.TraceRequestEndParams) -> None:
            if params.method == "POST" and (match := CALLBACK.search(params.url.path)):
                self.answered(int(match.group(1)))

        trace.on_request_end.append(request_ended)
        trace.on_request_exception.append(request_ended)  # type: ignore[arg-type]
