"""The fair queue: round-robin between users, concurrency per backend key."""

from bot.scheduler import FairScheduler


def drain(s: FairScheduler) -> list[str]:
    order = []
    while s.queued():
        for key, job in s.pop_ready():
            order.append(job)
            s.finished(key)
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
    s.finished("local")
    assert [k for k, _ in s.pop_ready()] == ["local"]


def test_position_matches_the_order_jobs_start_in():
    s = FairScheduler()
    for i in range(4):
        s.push("k", 1, 1, f"a{i}")
    for i in range(2):
        s.push("k", 1, 2, f"b{i}")
    positions = {j: s.position(j) for j in ["a0", "a1", "a2", "a3", "b0", "b1"]}
    order = drain(s)
    assert sorted(positions, key=positions.get) == order


def test_discarded_jobs_are_skipped_and_positions_close_up():
    s = FairScheduler()
    for i in range(3):
        s.push("k", 1, 1, f"a{i}")
    assert s.discard("a1")
    assert not s.discard("a1")
    assert s.position("a2") == 2
    assert drain(s) == ["a0", "a2"]
