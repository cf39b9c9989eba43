"""The fair queue: round-robin between users, one concurrency limit per backend key.

Every operation is O(1) (amortised) in the number of queued jobs: each backend key holds a rotation of
users, each user a FIFO of job ids. Cancelled jobs are dropped lazily when they reach the front.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class _Lane:
    """The queue of one backend key."""

    limit: int
    running: int = 0
    users: OrderedDict[int, deque[str]] = field(default_factory=OrderedDict)  # rotation order = dict order
    size: int = 0


class FairScheduler:
    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._dropped: set[str] = set()
        self._where: dict[str, tuple[str, int]] = {}  # job id -> (backend key, user)

    def _lane(self, key: str, limit: int) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(limit)
        lane.limit = limit
        return lane

    def push(self, key: str, limit: int, user_id: int, job_id: str) -> None:
        lane = self._lane(key, limit)
        queue = lane.users.get(user_id)
        if queue is None:
            queue = lane.users[user_id] = deque()  # a new user joins at the end of the rotation
        queue.append(job_id)
        lane.size += 1
        self._where[job_id] = (key, user_id)

    def discard(self, job_id: str) -> bool:
        """Drop a queued job (cancel). Returns False if it was not queued."""
        if job_id not in self._where or job_id in self._dropped:
            return False
        self._dropped.add(job_id)
        key, _ = self._where[job_id]
        self._lanes[key].size -= 1
        return True

    def pop_ready(self) -> list[tuple[str, str]]:
        """Every (backend key, job id) that may start now, one user at a time in rotation per lane."""
        ready: list[tuple[str, str]] = []
        for key, lane in self._lanes.items():
            while lane.running < lane.limit and lane.users:
                user_id, queue = next(iter(lane.users.items()))
                job_id = queue.popleft()
                if queue:
                    lane.users.move_to_end(user_id)  # this user's next job waits for everyone else's turn
                else:
                    del lane.users[user_id]
                del self._where[job_id]
                if job_id in self._dropped:
                    self._dropped.discard(job_id)
                    continue
                lane.size -= 1
                lane.running += 1
                ready.append((key, job_id))
        return ready

    def finished(self, key: str) -> None:
        lane = self._lanes[key]
        lane.running = max(0, lane.running - 1)

    def position(self, job_id: str) -> int | None:
        """1-based place in its lane: how many jobs start before it under round-robin, plus one. O(users)."""
        where = self._where.get(job_id)
        if where is None:
            return None
        key, user_id = where
        lane = self._lanes[key]
        mine = [j for j in lane.users[user_id] if j not in self._dropped]
        k = mine.index(job_id)  # this user's jobs ahead of it
        ahead = k
        seen_me = False
        for uid, queue in lane.users.items():
            if uid == user_id:
                seen_me = True
                continue
            alive = len(queue) if not self._dropped else sum(1 for j in queue if j not in self._dropped)
            # users before me in the rotation get k+1 turns before mine, users after me get k
            ahead += min(alive, k if seen_me else k + 1)
        return ahead + 1

    def queued(self, key: str | None = None) -> int:
        if key is not None:
            lane = self._lanes.get(key)
            return lane.size if lane else 0
        return sum(lane.size for lane in self._lanes.values())

    def running(self, key: str) -> int:
        lane = self._lanes.get(key)
        return lane.running if lane else 0
