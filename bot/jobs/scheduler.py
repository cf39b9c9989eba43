"""The fair queue: which queued job starts next in each lane, and where every waiting job stands.

The rule. A lane is one backend key (one local model, one provider, one server) with its concurrency limit.
Each user has a first-in-first-out queue of jobs in each lane. Whenever a slot is free, the job that starts is
the oldest queued job of the user who has the fewest jobs *running* in that lane at that moment; among users
with equally few, the one served least recently goes first, and a user who is not being served at all (no
job of theirs running or queued in the lane since they last ran out) counts as never served, behind no one,
with never-served users in the order they arrived. So a user's first job starts at the first free slot, however
many jobs others hold or have queued, and the more slots a user already holds, the later their next job goes.

Positions and ETAs run the same rule forward (`forecast`): each running job is assumed to end at its start
plus its model's typical duration (the earliest first, ties in start order), nothing new arrives, and the
freed slot goes to whoever the rule picks then. A job's position is the number of jobs that will start
before it, plus one; while jobs end in the order they started it is exactly the order jobs then start in.

Cost: push, start, finish and cancel are O(log u) for u users with jobs in the lane (a sorted list of the
users who have queued jobs, keyed by (running, last served)); a forecast of the first h jobs is O(h log h).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sortedcontainers import SortedList

_NEVER = -(1 << 62)  # "last served" of a user not being served: before anyone served, in order of arrival


@dataclass
class _User:
    uid: int
    served: int  # sequence number of this user's last start in the lane (or _NEVER + arrival)
    queue: deque[str] = field(default_factory=deque)  # queued job ids, oldest first (cancelled ones lazily)
    alive: int = 0  # queued jobs not cancelled
    running: int = 0

    @property
    def rank(self) -> tuple[int, int, int]:
        return (self.running, self.served, self.uid)


@dataclass
class _Lane:
    limit: int
    users: dict[int, _User] = field(default_factory=dict)  # users with jobs queued or running here
    ready: SortedList = field(default_factory=SortedList)  # rank of every user with a live queued job
    running: dict[str, tuple[int, int]] = field(default_factory=dict)  # job id -> (user, start sequence)
    size: int = 0  # live queued jobs


@dataclass
class Forecast:
    """Where a queued job stands: `position` 1 starts next; `exact` is False past the forecast's horizon,
    where `position` is a lower bound; `starts_in` is seconds from now, when durations are known."""

    position: int
    exact: bool = True
    starts_in: float | None = None


class FairScheduler:
    """The queues of every lane. The engine pushes jobs, starts what `pop_ready` returns and reports each
    started job's end with `finished`."""

    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._queued: dict[str, tuple[str, int]] = {}  # queued job id -> (lane key, user)
        self._dropped: set[str] = set()  # cancelled while queued; skipped when reached
        self._running: dict[str, str] = {}  # running job id -> lane key
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _lane(self, key: str, limit: int) -> _Lane:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(limit)
        lane.limit = limit
        return lane

    def _rerank(self, lane: _Lane, user: _User, change: Callable[[], None]) -> None:
        """Apply `change` to a user and keep the sorted list of users with queued jobs in step."""
        was_ready = user.alive > 0
        if was_ready:
            lane.ready.remove(user.rank)
        change()
        if user.alive > 0:
            lane.ready.add(user.rank)
        elif user.running == 0:
            del lane.users[user.uid]  # nothing here any more: forget when they were served

    # --- the queue -----------------------------------------------------------------------------------

    def push(self, key: str, limit: int, user_id: int, job_id: str) -> None:
        """Queue a job at the end of its user's queue in the lane `key` (concurrency `limit`)."""
        lane = self._lane(key, limit)
        user = lane.users.get(user_id)
        if user is None:
            user = lane.users[user_id] = _User(user_id, served=_NEVER + self._next())

        def add() -> None:
            user.queue.append(job_id)
            user.alive += 1

        self._rerank(lane, user, add)
        lane.size += 1
        self._queued[job_id] = (key, user_id)

    def discard(self, job_id: str) -> bool:
        """Drop a queued job (cancel). Returns False if it was not queued."""
        where = self._queued.pop(job_id, None)
        if where is None:
            return False
        key, uid = where
        lane = self._lanes[key]
        user = lane.users[uid]
        self._dropped.add(job_id)
        lane.size -= 1

        def drop() -> None:
            user.alive -= 1
            if user.alive == 0:  # nothing live left: let the cancelled ids go now
                for j in user.queue:
                    self._dropped.discard(j)
                user.queue.clear()

        self._rerank(lane, user, drop)
        return True

    def pop_ready(self) -> list[tuple[str, str]]:
        """Every (lane key, job id) that may start now, chosen by the rule, marked as running."""
        ready: list[tuple[str, str]] = []
        for key, lane in self._lanes.items():
            while len(lane.running) < lane.limit and lane.ready:
                user = lane.users[lane.ready[0][2]]
                job_id = self._take(user)
                seq = self._next()

                def start(user: _User = user, seq: int = seq) -> None:
                    user.alive -= 1
                    user.running += 1
                    user.served = seq

                self._rerank(lane, user, start)
                lane.size -= 1
                lane.running[job_id] = (user.uid, seq)
                del self._queued[job_id]
                self._running[job_id] = key
                ready.append((key, job_id))
        return ready

    def _take(self, user: _User) -> str:
        while True:
            job_id = user.queue.popleft()
            if job_id in self._dropped:
                self._dropped.discard(job_id)
                continue
            return job_id

    def finished(self, job_id: str) -> None:
        """A started job ended (done, failed, cancelled or interrupted): its slot is free."""
        key = self._running.pop(job_id, None)
        if key is None:
            return
        lane = self._lanes[key]
        uid, _ = lane.running.pop(job_id)
        user = lane.users[uid]

        def end() -> None:
            user.running -= 1

        self._rerank(lane, user, end)

    # --- reading it ----------------------------------------------------------------------------------

    def lane_of(self, job_id: str) -> str | None:
        where = self._queued.get(job_id)
        return where[0] if where else self._running.get(job_id)

    def queued(self, key: str | None = None) -> int:
        if key is not None:
            lane = self._lanes.get(key)
            return lane.size if lane else 0
        return sum(lane.size for lane in self._lanes.values())

    def running(self, key: str) -> int:
        lane = self._lanes.get(key)
        return len(lane.running) if lane else 0

    def lanes(self) -> list[str]:
        return list(self._lanes)

    def forecast(self, key: str, horizon: int, *, now: float = 0.0,
                 started_at: Callable[[str], float | None] | None = None,
                 duration: Callable[[str], float | None] | None = None) -> list[tuple[str, float | None]]:
        """The next `horizon` queued jobs of a lane in the order the rule will start them, each with the
        time it starts (None when a duration it depends on is unknown).

        `started_at(job)` and `duration(job)` give a running job's start and a job's typical run time; without
        them every job is taken to last the same, so jobs end in the order they started.
        """
        lane = self._lanes.get(key)
        if lane is None or horizon <= 0:
            return []
        known = duration is not None

        def length(job_id: str) -> float:
            d = duration(job_id) if duration else None
            return 1.0 if d is None else d

        # running jobs as (estimated end, start sequence, user)
        ends: list[tuple[float, int, int]] = []
        for job_id, (uid, seq) in lane.running.items():
            start = started_at(job_id) if started_at else None
            ends.append((max(now, (now if start is None else start) + length(job_id)) if known else seq, seq, uid))
        heapq.heapify(ends)
        free = lane.limit - len(lane.running)
        sim: dict[int, list[int]] = {}  # touched user -> [running, served, live queued left]
        queues: dict[int, Iterator[str]] = {}
        overlay: list[tuple[int, int, int]] = []  # ranks of touched users that still have queued jobs
        index = 0  # next untouched user in lane.ready
        seq = self._seq
        clock = now
        out: list[tuple[str, float | None]] = []

        def touch(uid: int) -> list[int]:
            state = sim.get(uid)
            if state is None:
                user = lane.users[uid]
                state = sim[uid] = [user.running, user.served, user.alive]
            return state

        while len(out) < horizon:
            if free == 0:
                if not ends:
                    break
                end, _, uid = heapq.heappop(ends)
                clock = max(clock, end) if known else clock
                state = touch(uid)
                state[0] -= 1
                if state[2] > 0:
                    heapq.heappush(overlay, (state[0], state[1], uid))
                free += 1
                continue
            while index < len(lane.ready) and lane.ready[index][2] in sim:
                index += 1
            while overlay and (overlay[0][2] not in sim or tuple(sim[overlay[0][2]][:2]) != overlay[0][:2]
                               or sim[overlay[0][2]][2] == 0):
                heapq.heappop(overlay)  # stale: this user's rank changed since
            first = lane.ready[index] if index < len(lane.ready) else None
            best = overlay[0] if overlay else None
            if first is None and best is None:
                break
            pick = best if first is None or (best is not None and best < first) else first
            assert pick is not None  # both None ended the loop above
            uid = pick[2]
            state = touch(uid)
            queue = queues.get(uid)
            if queue is None:
                queue = queues[uid] = (j for j in lane.users[uid].queue if j not in self._dropped)
            job_id = next(queue)
            out.append((job_id, clock if known else None))
            seq += 1
            state[0] += 1
            state[1] = seq
            state[2] -= 1
            if state[2] > 0:
                heapq.heappush(overlay, (state[0], state[1], uid))
            heapq.heappush(ends, ((clock + length(job_id)) if known else seq, seq, uid))
            free -= 1
        return out

    def position(self, job_id: str, horizon: int = 1000, *, now: float = 0.0,
                 started_at: Callable[[str], float | None] | None = None,
                 duration: Callable[[str], float | None] | None = None) -> Forecast | None:
        """Where a queued job stands (None when it is not queued). Past `horizon` jobs the position is a
        lower bound, so asking stays cheap in a very long queue."""
        where = self._queued.get(job_id)
        if where is None:
            return None
        order = self.forecast(where[0], horizon, now=now, started_at=started_at, duration=duration)
        for i, (j, at) in enumerate(order):
            if j == job_id:
                return Forecast(i + 1, True, None if at is None else max(0.0, at - now))
        return Forecast(len(order) + 1, False, None)
