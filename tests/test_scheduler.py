"""The fair queue: the fewest-running rule, concurrency per lane, and forecasts that match what really starts."""

import random

from bot.jobs.scheduler import FairScheduler


def drain(s: FairScheduler) -> list[str]:
    """Start everything, ending each job right after it starts (one slot at a time per lane)."""
    order = []
    while s.queued():
        for _, job in s.pop_ready():
            order.append(job)
            s.finished(job)
    return order


def test_a_user_with_many_jobs_never_delays_another_users_first_job():
    s = FairScheduler()
    for i in range(10):
        s.push("gpu", 1, user_id=1, job_id=f"a{i}")
    s.push("gpu", 1, user_id=2, job_id="b0")
    order = drain(s)
    assert order.index("b0") <= 1


def test_turns_rotate_between_users():
    s = FairScheduler()
    for u in (1, 2, 3):
        for i in range(3):
            s.push("k", 1, u, f"{u}-{i}")
    assert drain(s) == ["1-0", "2-0", "3-0", "1-1", "2-1", "3-1", "1-2", "2-2", "3-2"]


def test_concurrency_limit_per_backend_key():
    s = FairScheduler()
    for i in range(5):
        s.push("local", 2, 1, f"l{i}")
        s.push("hf", 4, 2, f"h{i}")
    ready = s.pop_ready()
    assert sum(1 for k, _ in ready if k == "local") == 2
    assert sum(1 for k, _ in ready if k == "hf") == 4
    assert s.pop_ready() == []
    s.finished(next(j for k, j in ready if k == "local"))
    assert [k for k, _ in s.pop_ready()] == ["local"]


def test_a_user_whose_jobs_all_run_does_not_jump_ahead_of_a_newcomer():
    # the case: concurrency 4, alice sends five, four run; bob sends one; a slot frees
    s = FairScheduler()
    for i in range(5):
        s.push("k", 4, 1, f"a{i}")
    assert [j for _, j in s.pop_ready()] == ["a0", "a1", "a2", "a3"]
    s.push("k", 4, 2, "b0")
    s.finished("a0")
    assert [j for _, j in s.pop_ready()] == ["b0"]
    # carol arrives while alice holds three running and bob one: carol's first goes next
    s.push("k", 4, 2, "b1")
    s.push("k", 4, 3, "c0")
    s.finished("a1")
    assert [j for _, j in s.pop_ready()] == ["c0"]
    s.finished("a2")  # alice 1 running (a3), bob 1, carol 1: alice's fifth was queued longest ago
    assert [j for _, j in s.pop_ready()] == ["a4"]


def test_the_user_holding_fewer_slots_goes_first_even_when_served_more_recently():
    s = FairScheduler()
    for i in range(4):
        s.push("k", 3, 1, f"a{i}")
    s.pop_ready()  # alice runs three
    for i in range(2):
        s.push("k", 3, 2, f"b{i}")
    s.finished("a0")
    assert [j for _, j in s.pop_ready()] == ["b0"]  # bob holds none
    s.finished("a1")  # alice holds one (a2), bob one (b0): a tie, and alice was served longer ago
    assert [j for _, j in s.pop_ready()] == ["a3"]
    s.finished("a2")
    assert [j for _, j in s.pop_ready()] == ["b1"]


def test_discarded_jobs_are_skipped_and_positions_close_up():
    s = FairScheduler()
    for i in range(3):
        s.push("k", 1, 1, f"a{i}")
    assert s.discard("a1")
    assert not s.discard("a1")
    assert s.position("a2").position == 2
    assert drain(s) == ["a0", "a2"]
    assert s.queued() == 0 and s.running("k") == 0


class Oracle:
    """The rule written the slow, obvious way: scan every user."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queues: dict[int, list[str]] = {}
        self.running: dict[int, int] = {}
        self.served: dict[int, tuple[int, int]] = {}  # (0, arrival) if not being served, (1, start seq)
        self.owner: dict[str, int] = {}
        self.seq = 0
        self.jobs_running = 0

    def push(self, uid: int, job: str) -> None:
        self.seq += 1
        if not self.queues.get(uid) and not self.running.get(uid):
            self.served[uid] = (0, self.seq)
        self.queues.setdefault(uid, []).append(job)
        self.owner[job] = uid

    def pop(self) -> list[str]:
        out = []
        while self.jobs_running < self.limit:
            users = [u for u, q in self.queues.items() if q]
            if not users:
                break
            u = min(users, key=lambda u: (self.running.get(u, 0), self.served[u], u))
            out.append(self.queues[u].pop(0))
            self.seq += 1
            self.served[u] = (1, self.seq)
            self.running[u] = self.running.get(u, 0) + 1
            self.jobs_running += 1
        return out

    def finish(self, job: str) -> None:
        u = self.owner[job]
        self.running[u] -= 1
        self.jobs_running -= 1


def test_every_start_follows_the_rule_under_random_arrivals_and_endings():
    rng = random.Random(7)
    for trial in range(30):
        limit = rng.randint(1, 5)
        s, oracle = FairScheduler(), Oracle(limit)
        running: list[str] = []
        n = 0
        for _ in range(300):
            if rng.random() < 0.55:
                uid = rng.choice([1, 2, 3, 4, 5, 6])
                n += 1
                s.push("k", limit, uid, f"j{n}")
                oracle.push(uid, f"j{n}")
            elif running:
                job = running.pop(rng.randrange(len(running)))
                s.finished(job)
                oracle.finish(job)
            got = [j for _, j in s.pop_ready()]
            assert got == oracle.pop(), f"trial {trial}"
            running += got


def test_shown_positions_are_the_order_jobs_really_start_in():
    # several users and two lanes; jobs end in the order they started, as the forecast assumes
    rng = random.Random(3)
    for trial in range(20):
        s = FairScheduler()
        limits = {"gpu": rng.randint(1, 3), "api": rng.randint(2, 4)}
        n = 0
        for _ in range(rng.randint(5, 40)):
            n += 1
            lane = rng.choice(list(limits))
            s.push(lane, limits[lane], rng.choice([1, 2, 3, 4]), f"{lane}{n}")
        running = {lane: [] for lane in limits}
        for lane, job in s.pop_ready():
            running[lane].append(job)
        # a few more arrive while some run
        for _ in range(rng.randint(0, 10)):
            n += 1
            lane = rng.choice(list(limits))
            s.push(lane, limits[lane], rng.choice([1, 2, 3, 4, 5]), f"{lane}{n}")
        shown = {lane: [j for j, _ in s.forecast(lane, 10_000)] for lane in limits}
        for lane in limits:
            for i, job in enumerate(shown[lane]):
                assert s.position(job).position == i + 1
        started = {lane: [] for lane in limits}
        while s.queued():
            for lane in limits:
                if running[lane]:
                    s.finished(running[lane].pop(0))  # the oldest running job ends first
            for lane, job in s.pop_ready():
                running[lane].append(job)
                started[lane].append(job)
        assert started == shown, f"trial {trial}"


def test_forecast_with_durations_gives_start_times_and_follows_which_job_ends_first():
    s = FairScheduler()
    s.push("k", 2, 1, "long")
    s.push("k", 2, 2, "short")
    s.pop_ready()
    s.push("k", 2, 1, "a2")
    s.push("k", 2, 2, "b2")
    starts = {"long": 0.0, "short": 0.0}
    lengths = {"long": 10.0, "short": 2.0, "a2": 3.0, "b2": 3.0}
    order = s.forecast("k", 10, now=1.0, started_at=starts.get, duration=lengths.get)
    # "short" ends at 2 and frees bob's slot: bob holds none, alice one, so b2 starts at 2; then a2 at 5 (b2 ends)
    assert order == [("b2", 2.0), ("a2", 5.0)]
    assert s.position("a2", now=1.0, started_at=starts.get, duration=lengths.get).starts_in == 4.0


def test_a_position_past_the_horizon_is_a_lower_bound():
    s = FairScheduler()
    for i in range(50):
        s.push("k", 1, 1, f"a{i}")
    far = s.position("a49", horizon=10)
    assert far.position == 11 and not far.exact
    near = s.position("a3", horizon=10)
    assert near.position == 4 and near.exact


def test_forgotten_users_are_forgotten():
    s = FairScheduler()
    s.push("k", 1, 1, "a")
    drain(s)
    assert s._lanes["k"].users == {} and not s._queued and not s._running and not s._dropped
