"""Which models can run now, kept current while the bot runs.

Every catalog entry is checked at start-up (its backend's `check`: key present, files present, server reachable).
After that, a watcher re-checks on a schedule: an entry that can run every `interval` seconds; one that cannot
after a backoff that starts at `retry_min` seconds and doubles up to `interval`, so a backend that was down at
boot comes back within seconds of being up again, and one that stays down costs one probe every few minutes. A
job that fails because its backend is unreachable, refuses the key or is missing asks for an early re-check of
its model (`failed`): the next users are then told the model is down instead of waiting for a timeout each, and
the backoff brings it back. A change either way is logged once.

The table is the bot's one `dict` of name -> (can run, reason), which `bot.policy.Policy` reads; it is updated in
place. Reasons reach members, so they never carry credentials (the backends' `check` redacts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from models.catalog import Catalog, ModelEntry
from models.errors import BackendError, ErrorKind

log = logging.getLogger("natty.availability")

# failures that say something about the model's backend, not about one request
DOWN_KINDS = frozenset({ErrorKind.UNREACHABLE, ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.NOT_CONFIGURED})

Check = Callable[[ModelEntry], Awaitable[tuple[bool, str]]]


class Availability:
    def __init__(self, catalog: Catalog, check: Check, table: dict[str, tuple[bool, str]], *,
                 interval: float = 300.0, retry_min: float = 10.0) -> None:
        self.catalog = catalog
        self.check = check
        self.table = table
        self.interval = interval
        self.retry_min = min(retry_min, interval)
        self._due: dict[str, float] = {}  # monotonic time of each entry's next check
        self._backoff: dict[str, float] = {}  # the wait after the next failed check, per unavailable entry
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.checks = 0  # how many checks ran (start-up included), for tests and the log

    async def refresh(self, names: list[str] | None = None) -> None:
        """Check the named entries (all by default) now, side by side, and schedule each one's next check."""
        entries = [e for e in self.catalog.entries.values() if names is None or e.name in names]
        results = await asyncio.gather(*(self.check(e) for e in entries), return_exceptions=True)
        now = time.monotonic()
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                result = (False, f"check failed: {result}")
            self._record(entry.name, result, now)

    def _record(self, name: str, result: tuple[bool, str], now: float) -> None:
        self.checks += 1
        before = self.table.get(name)
        self.table[name] = result
        ok, reason = result
        if before is not None and before[0] != ok:
            if ok:
                log.info("model %s can run again (%s)", name, reason)
            else:
                log.warning("model %s cannot run now: %s; checking again in %.0f s", name, reason,
                            self._backoff.get(name, self.retry_min))
        if ok:
            self._backoff.pop(name, None)
            self._due[name] = now + self.interval
        else:
            wait = self._backoff.get(name, self.retry_min)
            self._due[name] = now + wait
            self._backoff[name] = min(wait * 2, self.interval)

    def failed(self, name: str, exc: BaseException) -> None:
        """A job on `name` failed: when the failure says its backend is down, check it again soon."""
        if not isinstance(exc, BackendError) or exc.kind not in DOWN_KINDS or name not in self.catalog.entries:
            return
        soon = time.monotonic() + 1.0  # a burst of failures makes one check, not one each
        if self._due.get(name, soon + 1) > soon:
            self._due[name] = soon
            self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="natty-availability")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            now = time.monotonic()
            due = [name for name, when in self._due.items() if when <= now]
            if due:
                try:
                    await self.refresh(due)
                except Exception:  # a check must never stop the watcher
                    log.exception("availability re-check failed")
                    for name in due:
                        self._due[name] = now + self.retry_min
                continue
            wait = min(self._due.values(), default=now + self.interval) - now
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.05))
