"""Timed sessions: what a Natty or Not game and a collab session share.

Each session has a deadline kept in the database (so a restart resumes it), one task that drives it, a lock
that serialises changes to it, and a wakeup that ends its wait early (a host's Generate, the last vote). This
class holds those three per session id, and forgets them when the session ends, so they never accumulate.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any


class Sessions:
    def __init__(self, name: str) -> None:
        self.name = name  # names the tasks: "collab-<id>", "game-<id>"
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.wakeups: dict[str, asyncio.Event] = {}

    def spawn(self, sid: str, drive: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        """Drive the session in a task of its own, unless one already does."""
        if sid not in self.tasks or self.tasks[sid].done():
            self.tasks[sid] = asyncio.create_task(drive(sid), name=f"{self.name}-{sid}")

    def lock(self, sid: str) -> asyncio.Lock:
        return self.locks.setdefault(sid, asyncio.Lock())

    def wake(self, sid: str) -> None:
        """End the session's current wait now."""
        self.wakeups.setdefault(sid, asyncio.Event()).set()

    async def wait_until(self, sid: str, deadline: float) -> None:
        """Wait for the wall-clock `deadline` (a time.time() value) or a `wake`, whichever comes first."""
        event = self.wakeups.setdefault(sid, asyncio.Event())
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, deadline - time.time()))

    def forget(self, sid: str) -> None:
        """Drop a session's task, lock and wakeup once nothing drives it any more (it ended, failed or was
        stopped), so the dicts hold running sessions only. Called by the driving task as it ends, and by presses
        on an ended session's buttons; a session still driven by another task, or whose lock is held, stays."""
        task = self.tasks.get(sid)
        if task is not None and not task.done() and task is not asyncio.current_task():
            return
        lock = self.locks.get(sid)
        if lock is not None and lock.locked():
            return
        self.tasks.pop(sid, None)
        self.locks.pop(sid, None)
        self.wakeups.pop(sid, None)

    def cancel_all(self) -> None:
        for task in self.tasks.values():
            task.cancel()
