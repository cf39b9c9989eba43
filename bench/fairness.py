"""How fair the queue is: FIFO, the old round-robin and natty's fewest-running rule on the same skewed load.

    python bench/fairness.py

50 users (one with 500 jobs, four with 50, fifteen with 10, thirty with 1) all arrive within the first
seconds on one lane of concurrency 4; job durations are drawn from one fixed lognormal distribution (seeded,
the same draws for every policy). A discrete-event simulation, so the figures are exact for this load and
do not depend on the machine. Prints, side by side: p50 and p99 of light users' wait before their first job
starts (in mean job durations; goal p99 <= 1.0), Jain's fairness index of slots per user over windows where
all the heavy users (50 jobs or more) are backlogged (goal >= 0.99), total time (must equal FIFO's: the rule
never idles a slot), and the scheduler's cost per job at 10, 1,000 and 100,000 queued (median of repeats;
goal: grows no faster than log n).
"""

from __future__ import annotations

import heapq
import os
import random
import statistics
import sys
import time
from collections import OrderedDict, deque

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bot.jobs.scheduler import FairScheduler  # noqa: E402

LIMIT = 4
REPEATS = 5


class Fifo:
    def __init__(self) -> None:
        self.q: deque[tuple[int, str]] = deque()
        self.running = 0

    def push(self, user: int, job: str) -> None:
        self.q.append((user, job))

    def pop_ready(self) -> list[str]:
        out = []
        while self.running < LIMIT and self.q:
            out.append(self.q.popleft()[1])
            self.running += 1
        return out

    def finished(self, job: str) -> None:
        self.running -= 1


class RoundRobin:
    """natty's previous rule: rotate over users with jobs queued (a user whose jobs all run leaves it)."""

    def __init__(self) -> None:
        self.users: OrderedDict[int, deque[str]] = OrderedDict()
        self.running = 0

    def push(self, user: int, job: str) -> None:
        self.users.setdefault(user, deque()).append(job)

    def pop_ready(self) -> list[str]:
        out = []
        while self.running < LIMIT and self.users:
            user, q = next(iter(self.users.items()))
            out.append(q.popleft())
            if q:
                self.users.move_to_end(user)
            else:
                del self.users[user]
            self.running += 1
        return out

    def finished(self, job: str) -> None:
        self.running -= 1


class Fewest:
    def __init__(self) -> None:
        self.s = FairScheduler()

    def push(self, user: int, job: str) -> None:
        self.s.push("k", LIMIT, user, job)

    def pop_ready(self) -> list[str]:
        return [j for _, j in self.s.pop_ready()]

    def finished(self, job: str) -> None:
        self.s.finished(job)


def workload(seed: int = 1) -> tuple[list[tuple[float, int, str]], dict[str, float]]:
    rng = random.Random(seed)
    demand = [500] + [50] * 4 + [10] * 15 + [1] * 30
    arrivals, durations = [], {}
    for user, n in enumerate(demand):
        for i in range(n):
            job = f"u{user}-{i}"
            arrivals.append((rng.uniform(0, 3.0), user, job))
            durations[job] = rng.lognormvariate(0, 0.5)
    arrivals.sort()
    return arrivals, durations


def simulate(policy, arrivals, durations):  # noqa: ANN001
    """Returns {job: (user, arrival, start, end)}."""
    events: list[tuple[float, int, str, str, int]] = [(t, 0, "arrive", job, user) for t, user, job in arrivals]
    heapq.heapify(events)
    info: dict[str, list] = {}
    seq = len(events)
    while events:
        now, _, kind, job, user = heapq.heappop(events)
        if kind == "arrive":
            info[job] = [user, now, None, None]
            policy.push(user, job)
        else:
            info[job][3] = now
            policy.finished(job)
        for started in policy.pop_ready():
            info[started][2] = now
            seq += 1
            heapq.heappush(events, (now + durations[started], seq, "end", started, info[started][0]))
    return info


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs)) if xs and any(xs) else 1.0


def figures(info, mean: float) -> tuple[float, float, float, float]:  # noqa: ANN001
    by_user: dict[int, list] = {}
    for user, arrive, start, end in info.values():
        by_user.setdefault(user, []).append((arrive, start, end))
    light = [min(s for _, s, _ in jobs) - min(a for a, _, _ in jobs) for jobs in by_user.values() if len(jobs) <= 10]
    waits = sorted(w / mean for w in light)
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, round(0.99 * (len(waits) - 1)))]
    # windows of 5 mean durations in which every heavy user (50 jobs or more) is backlogged the whole time
    total = max(e for *_, e in info.values())
    heavy = [jobs for jobs in by_user.values() if len(jobs) >= 50]
    window, indices = 5 * mean, []
    t = 0.0
    while t + window <= total:
        if all(any(a <= t and s >= t + window for a, s, _ in jobs) for jobs in heavy):
            indices.append(jain([sum(1 for _, s, _ in jobs if t <= s < t + window)
                                 for jobs in heavy]))
        t += window
    return p50, p99, (statistics.median(indices) if indices else 1.0), total


def scheduler_cost(queued: int, users: int = 100, probe: int = 2000) -> float:
    samples = []
    for _ in range(REPEATS):
        s = FairScheduler()
        for i in range(queued):
            s.push("k", LIMIT, i % users, f"q{i}")
        started = [j for _, j in s.pop_ready()]
        t0 = time.perf_counter()
        for i in range(probe):
            s.push("k", LIMIT, i % users, f"p{i}")
            s.finished(started.pop(0))
            started += [j for _, j in s.pop_ready()]
        samples.append((time.perf_counter() - t0) / probe * 1e6)
    return statistics.median(samples)


def main() -> None:
    arrivals, durations = workload()
    mean = statistics.fmean(durations.values())
    print(f"{len(arrivals)} jobs from 50 users, concurrency {LIMIT}, mean duration {mean:.2f}")
    print(f"{'policy':<14}{'light p50':>10}{'light p99':>10}{'Jain':>8}{'total':>9}")
    rows = {}
    for name, policy in (("fifo", Fifo()), ("round-robin", RoundRobin()), ("fewest", Fewest())):
        rows[name] = figures(simulate(policy, arrivals, durations), mean)
        p50, p99, j, total = rows[name]
        print(f"{name:<14}{p50:>10.2f}{p99:>10.2f}{j:>8.3f}{total:>9.2f}")
    print(f"throughput fewest / fifo: {rows['fifo'][3] / rows['fewest'][3]:.3f}")
    costs = {n: scheduler_cost(n) for n in (10, 1_000, 100_000)}
    print("scheduler push+start+finish per job: " + ", ".join(f"{n:,} queued {c:.2f} us" for n, c in costs.items()))
    print(f"cost ratio 100,000 / 10 queued: {costs[100_000] / costs[10]:.2f} (log ratio {5 / 1:.1f})")


if __name__ == "__main__":
    main()
