"""Bench: how fast does natty acknowledge slash commands while generation jobs run?

Sends slash commands through the Discord-compatible test server (tests/fakediscord.py) to the real bot,
at a steady 100 a second for 5 s and as one burst of 200 created at once (asyncio.gather), and prints p50
and p99 of the acknowledgement latency as the server saw it: from dispatching INTERACTION_CREATE to the
bot's first callback. The same load goes, in the same run and interleaved with ours, to a minimal
discord.py bot whose commands only defer: the peer baseline, the cost no bot avoids.

Goals: steady p99 under 50 ms; burst p99 under 500 ms (Discord allows 3000 ms; at about 1 ms per
interaction a burst of 200 cannot drain much faster than 200 ms).

The load is a mix that creates jobs and cheap commands, spread over 200 users (the per-user cap stays at
its default of 5; the per-guild cap is raised so one guild can hold the queue):
/imagine and /chat on the Hugging Face-compatible test server (tests/hf_server.py, chat streamed with a
delay per token so jobs keep running), /chat, /imagine and /music on natty's own local models (the CPU
stays busy; when models/own/checkpoints/ lacks a checkpoint, a random-weight stand-in with the default config
is built in a temporary folder: same code, same cost, noise for output), and /help and /jobs.

Each bot runs in its own process, as in production, so that the bot's event loop never delays the test
server's dispatches or its clock; the Hugging Face test server runs in a third process. Every scenario is
repeated (3 by default, fresh bot each time) and the medians are printed, with the ratio ours/minimal.

To tell where the time goes it also prints, per bot: its own event-loop lag (a 10 ms sleeper inside the bot
process), the CPU its event-loop thread and its whole process used per command, the REST requests it made
while acks were due, how many jobs were queued or refused, and how late the test server's own sends were
(the machine is shared: when that is high, every figure of that run is inflated). Then every platform rule
broken (`server.violations`, e.g. late acks); the exit status is 1 if there was any.

    .venv/bin/python bench/ack_latency.py [--repeats 3] [--rate 100] [--seconds 5] [--burst 200]
        [--no-local]       the local-model commands go to the HF test server's models (no CPU-bound jobs)
        [--profile [DIR]]  cProfile natty's event-loop thread in the measured windows, one file per repeat,
                           and print the functions where its time went
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
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import string  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.natty.test-token-0123456789abcdef"
LOCAL = {  # catalog name -> (bundled checkpoint folder, natty_model)
    "natty-rnn": ("charrnn", "charrnn"),
    "natty-pixelcnn": ("pixelcnn", "pixelcnn"),
    "natty-wavenet": ("wavenet", "wavenet"),
}
CHAT_PROMPT = "tell me a long story about the sea and the ships and the wind and the gulls at dawn"

# (command, options, creates a job). One cycle of ten; send i uses MIX[i % 10] from user i % USERS.
MIX: list[tuple[str, dict[str, Any], bool]] = [
    ("imagine", {"prompt": "a lighthouse at dusk"}, True),
    ("chat", {"prompt": CHAT_PROMPT}, True),
    ("help", {}, False),
    ("imagine", {"prompt": "a cat on a windowsill"}, True),
    ("chat", {"prompt": CHAT_PROMPT}, True),
    ("jobs", {}, False),
    ("chat", {"prompt": "The sea", "model": "natty-rnn"}, True),
    ("imagine", {"prompt": "a 7", "model": "natty-pixelcnn"}, True),
    ("music", {"prompt": "a chord in A minor", "seconds": 1.0, "model": "natty-wavenet"}, True),
    ("help", {}, False),
]
USERS = 200


# --------------------------------------------------------------------------------------------------
# Child processes: the Hugging Face test server, natty, the minimal bot


async def serve_hf(token_delay: float) -> None:
    from tests.hf_server import HFTestServer

    async with HFTestServer(token_delay=token_delay) as hf:
        print(json.dumps({"port": hf.port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent goes


async def serve_natty(cfg: dict[str, Any]) -> None:
    from bot.client import make_bot
    from bot.config import Settings, secrets_of
    from bot.logs import setup_logging
    from models.catalog import load_catalog

    tmp = Path(cfg["tmp"])
    settings = Settings(discord_token=TOKEN, database_url=f"sqlite:///{tmp}/natty.db", data_dir=tmp / "data",
                        models_file=Path(cfg["models"]), api_base=cfg["api_base"], gateway_url=cfg["gateway"],
                        guild_ready_timeout=0.05, max_jobs_per_guild=100_000)
    setup_logging(settings.log_level, secrets_of(settings))  # INFO to stderr (a file here), as `natty run` does
    bot = make_bot(settings, load_catalog(settings.models_file))
    if cfg.get("profile"):  # the measured windows only: the parent turns it on (SIGUSR1) and off (SIGUSR2)
        import cProfile

        prof = cProfile.Profile()

        def dump(*_: object) -> None:
            prof.disable()
            prof.dump_stats(cfg["profile"])
            os._exit(0)

        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
        signal.signal(signal.SIGUSR2, lambda *_: prof.disable())
        signal.signal(signal.SIGTERM, dump)
    if os.environ.get("NATTY_BENCH_SLOW_CALLBACKS"):  # asyncio names each callback that held the loop longer
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = float(os.environ["NATTY_BENCH_SLOW_CALLBACKS"])
    if os.environ.get("NATTY_BENCH_GC"):  # each garbage collection's generation and milliseconds, to gc.txt
        import gc

        gc_log = open(tmp / "gc.txt", "a", buffering=1)  # noqa: SIM115
        started: list[float] = [0.0]

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                took = (time.perf_counter() - started[0]) * 1000
                gc_log.write(f"{time.time():.4f} {info['generation']} {took:.2f}\n")

        gc.callbacks.append(on_gc)
    probe = asyncio.create_task(lag_probe(tmp / "lag.txt"))  # noqa: F841 (kept referenced until the end)
    await bot.start(TOKEN)


async def serve_minimal(cfg: dict[str, Any]) -> None:
    """The peer: plain discord.py, the same command names and options, every command only defers."""
    import discord
    import yarl
    from discord import app_commands

    discord.http.Route.BASE = cfg["api_base"]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(cfg["gateway"])
    client = discord.Client(intents=discord.Intents.default(), guild_ready_timeout=0.05)
    tree = app_commands.CommandTree(client)

    @tree.command(name="imagine", description="defer")
    async def imagine(interaction: discord.Interaction, prompt: str, model: str | None = None) -> None:
        await interaction.response.defer(thinking=True)

    @tree.command(name="chat", description="defer")
    async def chat(interaction: discord.Interaction, prompt: str, model: str | None = None) -> None:
        await interaction.response.defer(thinking=True)

    @tree.command(name="music", description="defer")
    async def music(interaction: discord.Interaction, prompt: str, seconds: float = 5.0,
                    model: str | None = None) -> None:
        await interaction.response.defer(thinking=True)

    @tree.command(name="help", description="defer")
    async def help_(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)

    @tree.command(name="jobs", description="defer")
    async def jobs(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)

    async def setup_hook() -> None:
        await tree.sync()

    client.setup_hook = setup_hook  # type: ignore[method-assign]
    probe = asyncio.create_task(lag_probe(Path(cfg["tmp"]) / "lag.txt"))  # noqa: F841
    await client.start(TOKEN)


async def lag_probe(path: Path, period: float = 0.010) -> None:
    """The bot's own event-loop lag: how late a 10 ms sleep wakes, as `wall-clock-time lag-ms` lines."""
    with open(path, "a", buffering=1) as out:  # noqa: ASYNC230 (a few hundred bytes a second)
        lines: list[str] = []
        flushed = time.monotonic()
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(period)
            now = time.monotonic()
            lines.append(f"{time.time():.4f} {(now - t0 - period) * 1000:.2f}\n")
            if now - flushed > 0.25:
                out.write("".join(lines))
                lines, flushed = [], now


# --------------------------------------------------------------------------------------------------
# Measuring


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, min(len(s), math.ceil(q / 100 * len(s))) - 1)]


@dataclass
class Scenario:
    latencies: list[float] = field(default_factory=list)  # ms, acked interactions
    lateness: list[float] = field(default_factory=list)  # ms, dispatch time minus intended time
    unacked: int = 0
    failed: int = 0  # rejected callbacks (10062 late ack etc.)
    job_commands: int = 0
    queued: int = 0
    refused: int = 0
    unrecorded: int = 0
    active_before: int = 0  # jobs queued or running in the bot when the scenario began
    spread_ms: float = 0.0  # burst: first to last dispatch
    commands: int = 0
    requests: int = 0  # REST requests the bot made from the first dispatch to the last ack
    edits: int = 0  # of which PATCHes (progress and queue-position edits)
    own_edits: int = 0  # of those, the first edit of a message of this scenario's own commands
    bot_lag: list[float] = field(default_factory=list)  # ms, the bot's event-loop lag meanwhile
    loop_cpu: float = 0.0  # s of CPU the bot's event-loop thread used meanwhile
    process_cpu: float = 0.0  # s of CPU the whole bot process (model threads too) used meanwhile

    @property
    def p50(self) -> float:
        return pct(self.latencies, 50) if self.latencies else float("nan")

    @property
    def p99(self) -> float:
        return pct(self.latencies, 99) if self.latencies else float("nan")


class HFStub:
    """What tests.harness.catalog_for needs of the HF test server running in another process."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def endpoint(self, task: str) -> str:
        return f"{self.url}/{task}"


def local_models(folder: Path) -> tuple[str, str]:
    """Catalog TOML for the local models, and a note. Missing bundled checkpoints get random-weight stand-ins."""
    lines, stand_ins = [], []
    for name, (ckpt, kind) in LOCAL.items():
        path = ROOT / "models" / "own" / "checkpoints" / ckpt
        if not ((path / "config.json").is_file() and (path / "model.safetensors").is_file()):
            path = folder / ckpt
            build_stand_in(kind, path)
            stand_ins.append(name)
        task = {"charrnn": "chat", "pixelcnn": "text-to-image", "wavenet": "text-to-audio"}[kind]
        params = {"charrnn": "max_new_tokens = 400\ntemperature = 0.8\ntop_k = 40",
                  "pixelcnn": "", "wavenet": "seconds = 1.0"}[kind]
        lines.append(f'\n[[model]]\nname = "{name}"\ntask = "{task}"\nbackend = "local"\nmodel = "{path}"\n'
                     + (f"[model.params]\n{params}\n" if params else ""))
    note = ("bundled checkpoints" if not stand_ins else
            f"random-weight stand-ins with the default configs for {', '.join(stand_ins)} "
            "(models/own/checkpoints/ lacks them)")
    return "".join(lines), note


def build_stand_in(kind: str, path: Path) -> None:
    import torch

    from models.own import save_checkpoint
    from models.own.charrnn import CharRNN, CharRNNConfig
    from models.own.pixelcnn import PixelCNN, PixelCNNConfig
    from models.own.wavenet import WaveNet, WaveNetConfig

    torch.manual_seed(0)
    model = {"charrnn": lambda: CharRNN(CharRNNConfig(chars=string.printable[:95])),
             "pixelcnn": lambda: PixelCNN(PixelCNNConfig()),
             "wavenet": lambda: WaveNet(WaveNetConfig())}[kind]()
    save_checkpoint(model, path)


class Phase:
    """One bot process connected to a fresh test server, with a guild, a channel and USERS users."""

    def __init__(self, kind: str, tmp: Path, models: Path, no_local: bool = False, profile: Path | None = None) -> None:
        self.kind, self.tmp, self.models, self.no_local, self.profile = kind, tmp, models, no_local, profile
        self.proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Phase:
        from tests.fakediscord import FakeDiscord

        self.server = await FakeDiscord(token=TOKEN).start()
        s = self.server
        self.guild = s.add_guild(name="Bench")
        self.channel = s.add_channel(self.guild, name="general")
        self.users = [s.add_user(f"user{i}", guilds=[self.guild]) for i in range(USERS)]
        self.warm_users = [s.add_user(f"warm{i}", guilds=[self.guild]) for i in range(len(MIX))]
        self.tmp.mkdir(parents=True, exist_ok=True)
        cfg = {"tmp": str(self.tmp), "models": str(self.models), "api_base": s.api_base, "gateway": s.gateway_url,
               "profile": str(self.profile) if self.profile else None}
        self.log = open(self.tmp / f"{self.kind}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", self.kind, json.dumps(cfg)],
                                     stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        proc = self.proc
        try:  # until the bot has identified on the gateway (or died)
            await s.wait_for(lambda: proc.poll() is not None or any(x.open for x in s.sessions), timeout=90)
        except TimeoutError:
            pass
        if proc.poll() is not None or not any(x.open for x in s.sessions):
            self.log.flush()
            tail = (self.tmp / f"{self.kind}.log").read_text(errors="replace")[-3000:]
            await self.__aexit__()
            raise RuntimeError(f"{self.kind} bot did not connect:\n{tail}") from None
        await asyncio.sleep(0.3)  # READY, then on_ready after guild_ready_timeout
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # A throwaway bot: no need to let its jobs finish. SIGTERM makes a profiled one write its profile.
            self.proc.send_signal(signal.SIGTERM if self.profile else signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        await self.server.stop()

    # ---- load ----

    async def send(self, i: int, user: Any) -> Any:
        command, options, _ = MIX[i % len(MIX)]
        if self.no_local and options.get("model", "").startswith("natty-"):
            options = {k: v for k, v in options.items() if k != "model"}
        return await self.server.slash(user, self.channel, command, **options)

    async def warm_up(self) -> None:
        """One of each command, until their results are delivered: first-use costs (imports, model loads,
        connections) land here, not in the measurement. The local jobs queued meanwhile keep the CPU busy."""
        ixs = await asyncio.gather(*(self.send(i, u) for i, u in enumerate(self.warm_users)))

        def final(ix: Any) -> bool:
            msg = ix.original
            return bool(msg and msg.has_body and not msg.loading and not any(b.label == "Cancel" for b in msg.buttons)
                        and not msg.content.startswith(("⏳", "⚙️")))

        try:
            if self.kind == "natty":
                await self.server.wait_for(lambda: all(final(ix) for ix in ixs), timeout=30)
            else:  # the peer only defers: nothing to deliver
                await self.server.wait_for(lambda: all(ix.ack_type is not None for ix in ixs), timeout=10)
        except TimeoutError:
            print(f"  ({self.kind}: warm-up not all answered in time; going on)", flush=True)
        if self.kind == "natty":  # jobs that run through the measurement (the CPU-bound ones are local)
            busy = [MIX[1], MIX[4]] + ([] if self.no_local else [MIX[6], MIX[8]])
            ixs = await asyncio.gather(*(self.server.slash(u, self.channel, c, **o)
                                         for u, (c, o, _) in zip(self.warm_users, busy, strict=False)))
            await self.wait_acked(list(ixs), timeout=10)
        await asyncio.sleep(0.5)

    async def wait_acked(self, ixs: list[Any], timeout: float) -> None:
        def done() -> bool:
            return all(ix.ack_type is not None or ix.error is not None for ix in ixs)

        try:
            await self.server.wait_for(done, timeout=timeout)
        except TimeoutError:
            pass

    async def steady(self, rate: float, seconds: float, offset: int) -> Scenario:
        loop = asyncio.get_running_loop()
        n = int(rate * seconds)
        interval = 1 / rate
        sc = Scenario(active_before=self.active_jobs())
        window = self.begin()
        tasks: list[asyncio.Task[Any]] = []
        targets: list[float] = []
        t0 = loop.time() + 0.05
        for k in range(n):
            target = t0 + k * interval
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            i = offset + k
            targets.append(target)
            tasks.append(asyncio.create_task(self.send(i, self.users[i % USERS])))
        ixs = await asyncio.gather(*tasks)
        sc.lateness = [(ix.dispatched_at - t) * 1000 for ix, t in zip(ixs, targets, strict=True)]
        await self.collect(sc, ixs, offset, window)
        return sc

    async def burst(self, size: int, offset: int) -> Scenario:
        sc = Scenario(active_before=self.active_jobs())
        window = self.begin()
        ixs = await asyncio.gather(*(self.send(offset + k, self.users[(offset + k) % USERS]) for k in range(size)))
        sc.spread_ms = (max(ix.dispatched_at for ix in ixs) - min(ix.dispatched_at for ix in ixs)) * 1000
        await self.collect(sc, ixs, offset, window)
        return sc

    def begin(self) -> tuple[float, float, int, tuple[float, float]]:
        """Where a scenario starts: wall-clock time, the server's loop time, requests so far, the bot's CPU."""
        if self.profile and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)
        return time.time(), self.server.loop_time(), len(self.server.requests), self.cpu()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the bot's main (event-loop) thread and of its whole process."""
        assert self.proc is not None
        tick = os.sysconf("SC_CLK_TCK")

        def read(path: str) -> float:
            with open(path) as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

        pid = self.proc.pid
        return read(f"/proc/{pid}/task/{pid}/stat"), read(f"/proc/{pid}/stat")

    async def collect(self, sc: Scenario, ixs: list[Any], offset: int,
                      window: tuple[float, float, int, tuple[float, float]]) -> None:
        await self.wait_acked(ixs, timeout=self.server.ack_deadline + 1)
        wall0, _, seen, cpu0 = window
        cpu1 = self.cpu()
        if self.profile and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR2)
        sc.loop_cpu, sc.process_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        end = max((ix.acked_at for ix in ixs if ix.acked_at is not None), default=self.server.loop_time())
        sc.commands = len(ixs)
        made = [r for r in self.server.requests[seen:] if r.time <= end]
        sc.requests, sc.edits = len(made), sum(1 for r in made if r.method == "PATCH")
        tokens_here = {ix.token for ix in ixs}
        edited: set[str] = set()
        for r in made:  # /webhooks/{application}/{token}/messages/{id}
            parts = r.path.split("?")[0].split("/")
            token = parts[parts.index("webhooks") + 2] if r.method == "PATCH" and "webhooks" in parts else None
            if token in tokens_here and token not in edited:
                edited.add(token)
                sc.own_edits += 1
        wall1 = time.time() - (self.server.loop_time() - end)
        await asyncio.sleep(0.4)  # the probe writes its samples four times a second
        sc.bot_lag = self.bot_lag(wall0, wall1)
        for ix in ixs:
            if ix.ack_latency is not None:
                sc.latencies.append(ix.ack_latency * 1000)
            elif ix.error is not None:
                sc.failed += 1
            else:
                sc.unacked += 1
        if self.kind != "natty":
            return
        tokens = [ix.token for k, ix in enumerate(ixs) if MIX[(offset + k) % len(MIX)][2]]
        sc.job_commands = len(tokens)
        deadline = time.monotonic() + 15
        while True:  # the bot records each job (queued or refused) just after its ack
            rows = self.job_rows(tokens)
            if len(rows) >= len(tokens) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        sc.refused = sum(1 for state, started in rows if state == "failed" and started is None)
        sc.queued = len(rows) - sc.refused
        sc.unrecorded = len(tokens) - len(rows)

    async def jobs_only(self, seconds: float) -> tuple[list[float], int]:
        """The bot's loop lag over `seconds` with no command arriving, while the jobs the scenarios queued run
        (natty: local models in the worker, hosted chat streaming); and how many were queued or running."""
        active = self.active_jobs()
        if self.profile and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR1)
        start = time.time()
        await asyncio.sleep(seconds)
        end = time.time()
        if self.profile and self.proc is not None:
            self.proc.send_signal(signal.SIGUSR2)
        await asyncio.sleep(0.4)  # the probe writes its samples four times a second
        return self.bot_lag(start, end), active

    def bot_lag(self, start: float, end: float) -> list[float]:
        lags = []
        for line in (self.tmp / "lag.txt").read_text().splitlines():
            t, _, lag = line.partition(" ")
            if lag and float(t) >= start and float(t) - float(lag) / 1000 - 0.010 <= end:  # overlaps the window
                lags.append(float(lag))
        return lags

    # ---- the bot's database (read-only, WAL) ----

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.tmp / 'natty.db'}?mode=ro", uri=True, timeout=5)

    def job_rows(self, tokens: list[str]) -> list[tuple[str, float | None]]:
        with self._db() as db:
            rows: list[tuple[str, float | None]] = []
            for k in range(0, len(tokens), 500):
                chunk = tokens[k:k + 500]
                rows += db.execute(f"SELECT state, started_at FROM jobs WHERE interaction_token IN "
                                   f"({','.join('?' * len(chunk))})", chunk).fetchall()
            return rows

    def active_jobs(self) -> int:
        if self.kind != "natty":
            return 0
        with self._db() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')").fetchone()[0]


# --------------------------------------------------------------------------------------------------
# The run


async def run(args: argparse.Namespace) -> int:
    from tests.harness import catalog_for

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="natty-ack-"))
    if args.profile is True:  # --profile without a folder
        args.profile = work / "profile"
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    local_toml, local_note = local_models(work / "stand-ins")
    hf_proc = subprocess.Popen([sys.executable, __file__, "--serve", "hf", str(args.token_delay)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert hf_proc.stdout is not None
    port = json.loads(hf_proc.stdout.readline())["port"]
    models = work / "models.toml"
    models.write_text(catalog_for(HFStub(port), local_toml))  # type: ignore[arg-type]

    results: dict[str, dict[str, list[Scenario]]] = {k: {"steady": [], "burst": []} for k in ("natty", "minimal")}
    quiet: dict[str, list[tuple[list[float], int]]] = {"natty": [], "minimal": []}  # lag samples, jobs active
    violations: list[str] = []
    try:
        for r in range(args.repeats):
            for kind in ("natty", "minimal"):
                profile = args.profile / f"natty-{r + 1}.prof" if args.profile and kind == "natty" else None
                async with Phase(kind, work / f"{kind}-{r}", models, args.no_local, profile) as ph:
                    await ph.warm_up()
                    steady = await ph.steady(args.rate, args.seconds, offset=0)
                    await asyncio.sleep(1.0)
                    burst = await ph.burst(args.burst, offset=int(args.rate * args.seconds))
                    results[kind]["steady"].append(steady)
                    results[kind]["burst"].append(burst)
                    quiet[kind].append(await ph.jobs_only(args.quiet_seconds))
                    violations += [f"{kind} #{r + 1}: {v}" for v in ph.server.violations]
                print(f"  repeat {r + 1} {kind:>7}: steady p50 {steady.p50:6.1f} p99 {steady.p99:6.1f} ms | "
                      f"burst p50 {burst.p50:6.1f} p99 {burst.p99:6.1f} ms"
                      + (f" | jobs queued {steady.queued}+{burst.queued}, refused {steady.refused}+{burst.refused}"
                         if kind == "natty" else ""), flush=True)
    finally:
        if hf_proc.stdin:
            hf_proc.stdin.close()
        try:
            hf_proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            hf_proc.kill()

    report(args, results, violations, local_note)
    report_quiet(args, quiet)
    if args.profile:
        profile_summary(sorted(args.profile.glob("natty-*.prof")))
    print(f"total time {time.monotonic() - started:.0f} s; bot logs, lag samples and databases in {work}")
    return 1 if violations else 0


def report(args: argparse.Namespace, results: dict[str, dict[str, list[Scenario]]], violations: list[str],
           local_note: str) -> None:
    med = statistics.median
    print()
    print(f"ack latency, dispatch -> first callback, as the test server saw it; medians of {args.repeats} repeats")
    print(f"load: {args.rate:g}/s for {args.seconds:g} s, then one burst of {args.burst}; {len(MIX)}-command mix "
          f"with {sum(1 for m in MIX if m[2])} job commands, over {USERS} users")
    print(f"local models: {'not used (--no-local)' if args.no_local else local_note}; "
          f"HF chat token delay {args.token_delay:g} s; machine load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs at the end")
    print()
    print(f"{'scenario':<8} {'bot':<8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'acked':>9}   "
          f"{'bot loop lag p99/max ms':>23}  goal")
    goals = {"steady": 50.0, "burst": 500.0}
    for name in ("steady", "burst"):
        for kind in ("natty", "minimal"):
            scs = results[kind][name]
            p50, p99 = med(s.p50 for s in scs), med(s.p99 for s in scs)
            mx = med(max(s.latencies, default=float("nan")) for s in scs)
            acked = sum(len(s.latencies) for s in scs)
            total = sum(s.commands for s in scs)
            lag99 = med(pct(s.bot_lag, 99) if s.bot_lag else float("nan") for s in scs)
            lagmax = med(max(s.bot_lag, default=float("nan")) for s in scs)
            goal = (f"p99 < {goals[name]:g} ms: {'met' if p99 < goals[name] else 'MISSED'}"
                    if kind == "natty" else "")
            print(f"{name:<8} {kind:<8} {p50:8.1f} {p99:8.1f} {mx:8.1f} {acked:>4}/{total:<4}   "
                  f"{lag99:11.1f} /{lagmax:8.1f}    {goal}")
        ours, peer = results["natty"][name], results["minimal"][name]
        ratio = med(s.p99 for s in ours) / med(s.p99 for s in peer)
        most = {"steady": 3.0, "burst": 2.0}[name]
        print(f"{name:<8} {'ratio':<8} {med(s.p50 for s in ours) / med(s.p50 for s in peer):7.1f}x "
              f"{ratio:7.1f}x   (ours / minimal; goal p99 at most {most:g}x: {'met' if ratio <= most else 'MISSED'})")
    print()
    for name in ("steady", "burst"):
        scs = results["natty"][name]
        print(f"natty {name}: {scs[0].job_commands} job commands a repeat: queued {[s.queued for s in scs]}, "
              f"refused {[s.refused for s in scs]}, not recorded {[s.unrecorded for s in scs]}; "
              f"jobs already queued or running {[s.active_before for s in scs]}")
    for kind in ("natty", "minimal"):
        st = results[kind]["steady"]
        loop_ms = med(s.loop_cpu / s.commands * 1000 for s in st)
        proc_ms = med(s.process_cpu / s.commands * 1000 for s in st)
        print(f"{kind} steady: the bot's event-loop thread used {loop_ms:.2f} ms of CPU per command, "
              f"its whole process {proc_ms:.2f} ms (from dispatch of the first command to ack of the last)")
    for kind in ("natty", "minimal"):
        scs = results[kind]["steady"] + results[kind]["burst"]
        per = sum(s.requests for s in scs) / max(1, sum(s.commands for s in scs))
        edits = sum(s.edits for s in scs) / max(1, sum(s.commands for s in scs))
        st, bu = results[kind]["steady"], results[kind]["burst"]
        late = [x for s in st for x in s.lateness]
        own = sum(s.own_edits for s in scs) / max(1, sum(s.commands for s in scs))
        goal = f" (goal at most 1.1: {'met' if per <= 1.1 else 'MISSED'})" if kind == "natty" else ""
        print(f"{kind} runs: {per:.2f} REST requests per command while acks were due{goal} ({edits:.2f} edits, "
              f"{own:.2f} of them a command's first edit of its own message); "
              f"test server's steady sends late by p50 {pct(late, 50):.1f} ms, p99 {pct(late, 99):.1f} ms, "
              f"max {max(late):.1f} ms; burst dispatched within {med(s.spread_ms for s in bu):.1f} ms")
    print()
    print(f"violations: {len(violations)}")
    by_kind = Counter(v.split(": ", 2)[0] + ": " + v.split(": ", 2)[1] for v in violations)
    for what, n in sorted(by_kind.items()):
        print(f"  {n:4d} x {what}")
    for v in violations[:5]:
        print("  e.g. " + v)


def report_quiet(args: argparse.Namespace, quiet: dict[str, list[tuple[list[float], int]]]) -> None:
    med = statistics.median
    for kind in ("natty", "minimal"):
        runs = quiet[kind]
        p99 = med(pct(lags, 99) if lags else float("nan") for lags, _ in runs)
        mx = med(max(lags, default=float("nan")) for lags, _ in runs)
        goal = f"; goal p99 < 10 ms: {'met' if p99 < 10 else 'MISSED'}" if kind == "natty" else ""
        print(f"{kind} with no commands for {args.quiet_seconds:g} s after the burst, jobs queued or running "
              f"{[a for _, a in runs]}: the bot's loop lag p99 {p99:.1f} ms, max {mx:.1f} ms{goal}")


def profile_summary(files: list[Path], top: int = 12) -> None:
    """Where natty's event-loop thread spent the measured windows, all repeats together: the functions with
    the most own time, and natty's own functions (bot/, cogs/, models/) with the most cumulative time."""
    import pstats

    if not files:
        print("profile: no profile was written")
        return
    stats = pstats.Stats(*map(str, files))
    rows = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, nc, tt, ct, callers)}
    total = sum(tt for _, _, tt, _, _ in rows.values())

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        if file == "~":
            return func
        path = Path(file)
        short = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else "/".join(path.parts[-2:])
        return f"{short}:{line}({func})"

    def table(title: str, keys: list[tuple[str, int, str]]) -> None:
        print(title)
        print(f"  {'calls':>8} {'own s':>7} {'cum s':>7}  function")
        for key in keys[:top]:
            _, nc, tt, ct, _ = rows[key]
            print(f"  {nc:8d} {tt:7.3f} {ct:7.3f}  {name(key)}")

    print()
    print(f"profile of natty's event-loop thread in the measured windows ({len(files)} repeat(s), "
          f"{total:.2f} s of profiled time, profiling overhead included; files in {files[0].parent})")
    table("by own time:", sorted(rows, key=lambda k: -rows[k][2]))
    ours = [k for k in rows if Path(k[0]).is_relative_to(ROOT) and Path(k[0]).relative_to(ROOT).parts[0]
            in ("bot", "cogs", "models")]
    table("natty's own functions by cumulative time:", sorted(ours, key=lambda k: -rows[k][3]))


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        kind, arg = sys.argv[2], sys.argv[3]
        with_cfg = {"natty": serve_natty, "minimal": serve_minimal}
        try:
            if kind == "hf":
                asyncio.run(serve_hf(float(arg)))
            else:
                asyncio.run(with_cfg[kind](json.loads(arg)))
        except KeyboardInterrupt:
            pass
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="steady commands per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="steady duration")
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--no-local", action="store_true",
                        help="send the local-model commands to the HF test server's models instead")
    parser.add_argument("--profile", type=Path, metavar="DIR", nargs="?", const=True,
                        help="cProfile natty's event-loop thread in the measured windows into DIR/natty-N.prof "
                             "(default: the run's temporary folder) and print a summary (slows the bot down)")
    parser.add_argument("--token-delay", type=float, default=0.1, help="seconds between HF chat tokens")
    parser.add_argument("--quiet-seconds", type=float, default=3.0,
                        help="after the burst, how long to measure the loop lag with jobs running and no commands")
    args = parser.parse_args()
    os.environ.pop("HF_TOKEN", None)  # the test catalog needs no key; never send a real one to the test server
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
