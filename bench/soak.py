"""Soak: 50 users send 1,000 mixed jobs to the real bot while the model server fails at random and the bot is
killed with SIGKILL twice; nothing may be lost, nothing delivered twice, no interaction left unanswered.

The bot is a real `python -m bot` process (as tests/test_e2e_restart.py starts it) against the Discord-compatible
test server (tests/fakediscord.py, with its rate limits and rules) and the Hugging Face-compatible one
(tests/hf_server.py), both in this process on 127.0.0.1. Each of 50 users keeps one job in flight at a time, a
mix of /chat (streamed), /imagine, /speak and /music over two channels; one model request in ten fails at
random: 429 with Retry-After, 503 "loading", 500, a dropped connection or a stalled stream (models time out
after a few seconds so a stall costs seconds, not minutes). Within the first 1,000 jobs, at one third and at
two thirds, sending pauses until every interaction is acknowledged, the bot is SIGKILLed with jobs running and
queued, and a new process starts on the same database.

Printed:
- jobs lost (goal 0): acknowledged, and no final message (a result or a short error) when the run ends;
- jobs delivered twice (goal 0): more than one message carries the result of one interaction;
- interactions unanswered (goal 0): never acknowledged, or acknowledged too late (10062);
- jobs that ended in an error message (the model server's failures that outlasted the retries), and the
  rule violations and 429s the test server counted;
- the bot's RSS (its process and children) after 1,000 jobs and at the end (`--jobs 10000`: goal flat within
  10%; both are read in the process that started after the second kill);
- the total time, then the fairness figures of bench/fairness.py (the scheduler on a skewed load).

A kill lands while jobs run and wait, never between a dispatch and its acknowledgement: an interaction whose
process dies before it answers cannot be answered by anyone, and is not what this measures.

    .venv/bin/python bench/soak.py [--jobs 1000] [--users 50] [--failure-rate 0.1] [--seed 1]
        [--max-seconds 3600]   the run stops by itself after this long, whatever is left is counted as lost
        [--stuck-after 60]     a user whose job has not ended after this long sends the next one anyway
        [--keep-log FILE]      keep the bot's log (both processes after the kills append to it)
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder leads sys.path, where bench/queue.py would shadow the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

from tests.fakediscord import FakeDiscord, FakeInteraction, FakeMessage  # noqa: E402
from tests.harness import TOKEN, catalog_for  # noqa: E402
from tests.hf_server import HFTestServer  # noqa: E402

AI_LABEL = "AI-generated"
COMMANDS = (("chat", 0.5), ("imagine", 0.25), ("speak", 0.15), ("music", 0.1))


def options(command: str, i: int) -> dict[str, object]:
    """Each command on the test server's model for its task (tests/harness.py's catalog_for names)."""
    if command == "chat":
        return {"prompt": f"job {i}: tell me about the sea " + "and waves " * (i % 5), "model": "test-chat"}
    if command == "imagine":
        return {"prompt": f"job {i}: a lighthouse at dusk", "aspect": "portrait" if i % 2 else "square",
                "model": "test-text-to-image"}
    if command == "speak":
        return {"text": f"job {i}: hello from the soak test", "model": "test-text-to-speech"}
    return {"prompt": f"job {i}: a calm piano", "seconds": 1.0, "model": "test-music"}


def is_final(ix: FakeInteraction) -> bool:
    """What tests/harness.py's Natty.final waits for: a body, no longer loading, no Cancel, no queue/progress."""
    msg = ix.original
    return bool(msg and msg.has_body and not msg.loading and not any(b.label == "Cancel" for b in msg.buttons)
                and not msg.content.startswith(("⏳", "⚙️")))


def result_messages(ix: FakeInteraction) -> list[FakeMessage]:
    return [m for m in ix.messages if not m.deleted and (AI_LABEL in m.content or m.attachments)]


def rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (0 when it is gone)."""
    total = 0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += rss_kib(int(child))
    except (OSError, AttributeError):
        pass
    return total


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.rng = random.Random(args.seed)
        self.proc: asyncio.subprocess.Process | None = None
        self.ixs: list[FakeInteraction] = []
        self.kills = 0
        self.rss: dict[str, int] = {}
        self.injected: Counter[str] = Counter()

    def env(self, server: FakeDiscord, models: Path) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_KEY"))}
        return {**keep, "DISCORD_TOKEN": TOKEN, "HF_TOKEN": "hf_soak" + "0" * 30,
                "DISCORD_API_BASE": server.api_base, "DISCORD_GATEWAY_URL": server.gateway_url,
                "DATABASE_URL": f"sqlite:///{self.tmp}/natty.db", "NATTY_DATA_DIR": str(self.tmp / "data"),
                "NATTY_MODELS": str(models), "NATTY_GUILD_READY_TIMEOUT": "0.05", "NATTY_LOG_LEVEL": "INFO",
                "NATTY_MAX_JOBS_PER_USER": "1000", "NATTY_MAX_JOBS_PER_GUILD": "100000",
                "NATTY_COOLDOWN_SECONDS": "0", "PYTHONUNBUFFERED": "1"}

    async def start_bot(self, server: FakeDiscord, env: dict[str, str]) -> None:
        log = (self.tmp / "bot.log").open("ab")
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", cwd=ROOT, env=env,
                                                         stdout=log, stderr=asyncio.subprocess.STDOUT)
        known = {s for s in server.sessions if s.open}
        await server.wait_for(lambda: any(s.open and s not in known for s in server.sessions), timeout=120)

    def job_states(self) -> dict[str, str]:
        """Interaction token -> job state, from the bot's database (WAL: readable while the bot writes)."""
        path = self.tmp / "natty.db"
        if not path.exists():
            return {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            try:
                return dict(db.execute("SELECT interaction_token, state FROM jobs WHERE interaction_token IS NOT NULL"))
            except sqlite3.OperationalError:
                return {}

    async def kill(self, server: FakeDiscord, env: dict[str, str]) -> None:
        """Wait (bounded) until every interaction is answered and its job recorded, then SIGKILL the bot and start
        a new one: the kill lands on running and queued jobs, not between an acknowledgement and the job's row."""
        try:
            await server.wait_for(lambda: all(ix.ack_type is not None or ix.error for ix in self.ixs), timeout=30)
            await server.wait_for(lambda: {ix.token for ix in self.ixs if ix.ack_type} <= set(self.job_states()),
                                  timeout=30)
        except TimeoutError:
            pass
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.kills += 1
        await self.start_bot(server, env)

    def fail_some(self, hf: HFTestServer) -> None:
        """Queue one random failure for the model server's next matching request."""
        kind = self.rng.choice(["429", "503", "500", "drop", "stall"])
        self.injected[kind] += 1
        if kind == "429":
            hf.rate_limited(retry_after=0.3)
        elif kind == "503":
            hf.loading(estimated_time=0.5)
        elif kind == "500":
            hf.fail_next(500)
        elif kind == "drop":
            hf.fail_next(mode="drop")
        else:
            hf.stall(after_chunks=2, path="chat/completions")

    async def run(self) -> int:
        args = self.args
        t0 = time.monotonic()
        deadline = t0 + args.max_seconds
        async with FakeDiscord(token=TOKEN) as server, HFTestServer() as hf:
            models = self.tmp / "models.toml"
            # short model timeouts: a stalled request costs seconds, then the backend's retries take over
            models.write_text(re.sub(r"(default = true\n)", r"\1timeout = 5\n", catalog_for(hf, f"""
[[model]]
name = "nsfw-detector"
task = "image-classification"
backend = "hf"
model = "{hf.endpoint('image-classification')}"
timeout = 5
""")))
            guild = server.add_guild(name="Soak")
            channels = [server.add_channel(guild, name=f"soak-{i}") for i in range(2)]
            users = [server.add_user(f"user{i}", guilds=[guild]) for i in range(args.users)]
            env = self.env(server, models)
            await self.start_bot(server, env)
            try:
                await self.drive(server, hf, env, users, channels, deadline)
            finally:
                if self.proc is not None and self.proc.returncode is None:
                    self.proc.terminate()
                    await self.proc.wait()
            self.print_report(server, time.monotonic() - t0)
        lost, twice, unanswered = self.outcome()
        return 0 if lost == twice == unanswered == 0 else 1

    async def drive(self, server: FakeDiscord, hf: HFTestServer, env: dict[str, str], users: list,
                    channels: list, deadline: float) -> None:
        args = self.args
        weights = [w for _, w in COMMANDS]
        first = min(args.jobs, 1000)
        kills_at = {first // 3, 2 * first // 3}
        busy: dict[int, FakeInteraction] = {}  # user id -> their job in flight
        sent = 0
        while sent < args.jobs and time.monotonic() < deadline:
            if sent in kills_at:
                kills_at.discard(sent)
                await self.kill(server, env)
            if sent == first and "after 1000" not in self.rss:
                await self.wait_all(server, deadline)
                assert self.proc is not None
                self.rss["after 1000"] = rss_kib(self.proc.pid)
            now = server.loop_time()
            free = [u for u in users if u.id not in busy or is_final(busy[u.id]) or busy[u.id].error
                    or now - busy[u.id].dispatched_at > args.stuck_after]  # a stuck job does not stop its user
            if not free:
                try:
                    await server.wait_for(lambda: any(is_final(ix) or ix.error for ix in busy.values()),
                                          timeout=min(max(deadline - time.monotonic(), 0.1), 1.0))
                except TimeoutError:
                    pass
                continue
            user = self.rng.choice(free)
            command = self.rng.choices([c for c, _ in COMMANDS], weights)[0]
            if self.rng.random() < args.failure_rate:
                self.fail_some(hf)
            ix = await server.slash(user, channels[sent % len(channels)], command, **options(command, sent))
            self.ixs.append(ix)
            busy[user.id] = ix
            sent += 1
        await self.wait_all(server, deadline)
        assert self.proc is not None
        self.rss["at the end"] = rss_kib(self.proc.pid)

    async def wait_all(self, server: FakeDiscord, deadline: float) -> None:
        try:
            await server.wait_for(lambda: all(is_final(ix) or ix.error for ix in self.ixs),
                                  timeout=max(deadline - time.monotonic(), 0.1))
        except TimeoutError:
            pass

    def outcome(self) -> tuple[int, int, int]:
        acked = [ix for ix in self.ixs if ix.ack_type is not None]
        lost = sum(1 for ix in acked if not is_final(ix))  # with a job row or without one (see print_report)
        twice = sum(1 for ix in acked if len(result_messages(ix)) > 1)
        unanswered = sum(1 for ix in self.ixs if ix.ack_type is None or ix.error)
        return lost, twice, unanswered

    def print_report(self, server: FakeDiscord, seconds: float) -> None:
        lost, twice, unanswered = self.outcome()
        errors = sum(1 for ix in self.ixs if is_final(ix) and ix.original and ix.original.content.startswith("⚠️"))
        kinds = Counter(ix.payload["data"]["name"] for ix in self.ixs)
        print(f"jobs sent:                {len(self.ixs)} ({', '.join(f'{k} {v}' for k, v in kinds.items())}) "
              f"by {self.args.users} users; bot SIGKILLed {self.kills} times")
        print(f"model failures injected:  {sum(self.injected.values())} ({dict(self.injected)})")
        print(f"jobs lost:                {lost}  (goal 0)")
        print(f"jobs delivered twice:     {twice}  (goal 0)")
        print(f"interactions unanswered:  {unanswered}  (goal 0)")
        print(f"jobs ended in an error:   {errors}  (a short message to the user)")
        print(f"rule violations:          {len(server.violations)} {dict(Counter(v.kind for v in server.violations))}")
        print(f"429s the bot earned:      {len(server.rate_limit_hits)} "
              f"{dict(Counter((h.scope, h.bucket) for h in server.rate_limit_hits))}")
        for when in ("after 1000", "at the end"):
            if when in self.rss:
                print(f"bot RSS {when + ':':<17}{self.rss[when] / 1024:.1f} MiB")
        if len(self.rss) == 2 and self.rss["after 1000"]:
            print(f"RSS growth:               {100 * (self.rss['at the end'] / self.rss['after 1000'] - 1):+.1f}%  "
                  "(goal within 10%)")
        print(f"total time:               {seconds:.1f} s")
        states = self.job_states()
        stuck = [ix for ix in self.ixs if ix.ack_type is not None and not is_final(ix)]
        if stuck:
            by_state = Counter(states.get(ix.token, "no job row") for ix in stuck)
            print(f"  lost jobs by state in the database: {dict(by_state)}")
        for ix in stuck[:5]:
            shown = ix.original.content[:70] if ix.original and ix.original.has_body else "(still thinking…)"
            print(f"  lost: /{ix.payload['data']['name']} by {ix.user.name} ({states.get(ix.token, 'no job row')}): "
                  f"{shown!r}")


def main() -> int:
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ.get("SOAK_DUMP_AFTER", "1e9")), exit=False)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--failure-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--stuck-after", type=float, default=60,
                        help="seconds after which a user whose job has not ended sends the next one anyway")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the bot's log here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="natty-soak-") as tmp:
        code = asyncio.run(Soak(args, Path(tmp)).run())
        if args.keep_log:
            Path(args.keep_log).write_bytes((Path(tmp) / "bot.log").read_bytes())
    print("\nthe scheduler's fairness on the skewed load of bench/fairness.py (the same rule the bot ran):")
    fairness_bench().main()
    return code


def fairness_bench():  # noqa: ANN201 - the module bench/fairness.py
    """bench/fairness.py, loaded by path (this folder is not on sys.path: see the top of this file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("natty_bench_fairness", Path(__file__).with_name("fairness.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(main())
