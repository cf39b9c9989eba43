"""Bench: does continuous batching let many users of one local chat model share forward passes?

Builds a GPT-2-small-shaped model (12 layers, 768 wide, 12 heads, random weights, a small trained vocabulary)
in a temporary folder, then for N = 1, 4 and 8 concurrent chat requests of exactly `--tokens` new tokens each
(EOS ignored) measures, as medians over `--repeats` rounds:

- ours: aggregate tokens/s through `PipelinesBackend` (the path users take), against serving the same
  requests one by one, and p50 latency against a lone request;
- `transformers serve --continuous-batching` on the same folder (a subprocess on 127.0.0.1), the same load
  sent concurrently to its /v1/chat/completions.

Goals: at least 3x the one-by-one throughput at N=8, p50 at most 2x a lone request, and at least 1.0x
`transformers serve`'s throughput.  Run: `.venv/bin/python bench/local_batching.py [--repeats 3]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder leads sys.path, where bench/queue.py would shadow the standard library's queue.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from models.backends.pipelines import PipelinesBackend  # noqa: E402
from models.base import Request, RunContext  # noqa: E402
from models.catalog import ModelEntry  # noqa: E402

TOPICS = ["a cat", "the sea at night", "a discord bot that draws", "why the sky is blue on a quiet morning",
          "hello", "a long story about a fox who jumps over a lazy dog and then runs home", "numbers", "a song"]


def prompts(n: int) -> list[str]:
    return [f"Tell me about {TOPICS[i % len(TOPICS)]}." for i in range(n)]


def build_model(folder: Path) -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_pipelines import build_gpt2_small_shaped

    return build_gpt2_small_shaped(folder)


# ---- ours ----


class Ours:
    """Chat requests through `PipelinesBackend`, the path a catalog entry with a local folder takes."""

    def __init__(self, folder: str, dtype: str, tokens: int) -> None:
        self.backend = PipelinesBackend()
        self.entry = ModelEntry(name="bench", task="chat", backend="local", model=folder, params={"dtype": dtype})
        self.tokens = tokens

    async def one(self, prompt: str) -> float:
        started = time.monotonic()
        request = Request(task="chat", prompt=prompt,
                          params={"max_new_tokens": self.tokens, "temperature": 0, "ignore_eos": True})
        result = await self.backend.run(self.entry, request, RunContext())
        assert result.meta["tokens"] == self.tokens, result.meta
        return time.monotonic() - started

    async def close(self) -> None:
        await self.backend.aclose()


# ---- transformers serve ----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict, timeout: float = 600) -> dict:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Serve:
    """`transformers serve --continuous-batching` on the same folder, as a subprocess on 127.0.0.1."""

    def __init__(self, folder: str, dtype: str, tokens: int, log_path: Path) -> None:
        self.folder, self.tokens, self.log_path = folder, tokens, log_path
        self.base = f"http://127.0.0.1:{free_port()}"
        cmd = [str(Path(sys.executable).with_name("transformers")), "serve", folder, "--continuous-batching",
               "--host", "127.0.0.1", "--port", self.base.rsplit(":", 1)[1], "--device", "cpu", "--dtype", dtype,
               "--log-level", "warning"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self._log = log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    async def start(self) -> None:
        for _ in range(480):
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}")
            if await asyncio.to_thread(healthy, f"{self.base}/health"):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError("transformers serve did not come up in 4 minutes")

    async def one(self, prompt: str) -> float:
        # The generation config pins greedy decoding, the token count and no EOS, as for ours.
        gen = json.dumps({"max_new_tokens": self.tokens, "do_sample": False, "eos_token_id": -1})
        body = {"model": self.folder, "messages": [{"role": "user", "content": prompt}], "stream": False,
                "max_tokens": self.tokens, "temperature": 0, "generation_config": gen}
        started = time.monotonic()
        answer = await asyncio.to_thread(post_json, f"{self.base}/v1/chat/completions", body)
        got = answer.get("usage", {}).get("completion_tokens")
        if got is not None and got != self.tokens:
            raise RuntimeError(f"serve generated {got} tokens, not {self.tokens}")
        return time.monotonic() - started

    async def close(self) -> None:
        self.proc.terminate()
        try:
            await asyncio.to_thread(self.proc.wait, 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


async def concurrent(server: Ours | Serve, n: int, tokens: int) -> tuple[float, float]:
    """Aggregate tokens/s and p50 latency of n requests sent at once."""
    started = time.monotonic()
    latencies = await asyncio.gather(*(server.one(p) for p in prompts(n)))
    return n * tokens / (time.monotonic() - started), statistics.median(latencies)


async def bench(folder: str, dtype: str, tokens: int, sizes: list[int], repeats: int, serve_log: Path | None
                ) -> tuple[dict, dict | None, str]:
    """Rounds alternate between ours and serve, so background load on a shared machine hits both alike."""
    ours = Ours(folder, dtype, tokens)
    serve: Serve | None = None
    serve_error = ""
    if serve_log is not None:
        serve = Serve(folder, dtype, tokens, serve_log)
        try:
            await serve.start()
            await serve.one("warm up")
        except Exception as exc:
            serve_error = f"{type(exc).__name__}: {exc}"
            await serve.close()
            serve = None
    await ours.one("warm up")

    def empty() -> dict:
        return {"sequential_tps": [], "lone_s": [], "concurrent": {n: {"tps": [], "p50": []} for n in sizes}}

    got, theirs = empty(), empty()
    try:
        for _ in range(repeats):
            # One by one: every request alone on the model.
            started = time.monotonic()
            lone = [await ours.one(p) for p in prompts(max(sizes))]
            got["sequential_tps"].append(len(lone) * tokens / (time.monotonic() - started))
            got["lone_s"].append(statistics.median(lone))
            if serve:
                theirs["lone_s"].append(await serve.one(prompts(1)[0]))
            for n in sizes:
                for server, out in ((ours, got), (serve, theirs)):
                    if server is None:
                        continue
                    tps, p50 = await concurrent(server, n, tokens)
                    out["concurrent"][n]["tps"].append(tps)
                    out["concurrent"][n]["p50"].append(p50)
    finally:
        await ours.close()
        if serve:
            await serve.close()
    return got, (theirs if serve else None), serve_error


def step_times(folder: str, dtype: str, sizes: list[int], repeats: int) -> dict[str, dict[int, float]]:
    """Median milliseconds of one decode step (a 40-token cache) at each batch size, with the model's linear layers
    dense (as loaded) and packed for oneDNN (what the backend serves on a CPU), taking turns in every repeat."""
    import torch
    from transformers import AutoModelForCausalLM

    from models.backends.batching import _returned_cache, pack_linears

    models = {"dense": AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval(),
              "packed": AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()}
    pack_linears(models["packed"])
    # transformers 5 names the cache argument `cache`; older models still take `past_key_values`
    kwarg = {k: "cache" if "cache" in inspect.signature(m.forward).parameters else "past_key_values"
             for k, m in models.items()}
    times: dict[str, dict[int, list[float]]] = {k: {n: [] for n in sizes} for k in models}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for _ in range(max(5, repeats * 5)):
            for n in sizes:
                ids = torch.randint(5, 300, (n, 40), generator=gen)
                step = torch.randint(5, 300, (n, 1), generator=gen)
                for kind, model in models.items():
                    cache = _returned_cache(model(input_ids=ids, use_cache=True))
                    started = time.perf_counter()
                    model(input_ids=step, use_cache=True, **{kwarg[kind]: cache})
                    times[kind][n].append((time.perf_counter() - started) * 1000)
    return {k: {n: statistics.median(v) for n, v in by.items()} for k, by in times.items()}


def report_steps(dtype: str, steps: dict[str, dict[int, float]]) -> None:
    print(f"one decode step, {dtype}: " + "; ".join(
        f"batch {n}: dense {steps['dense'][n]:.1f} ms, packed {steps['packed'][n]:.1f} ms "
        f"({steps['dense'][n] / steps['packed'][n]:.2f}x)" for n in steps["dense"]))


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(dtype: str, sizes: list[int], ours: dict, serve: dict | None, serve_error: str) -> None:
    seq = med(ours["sequential_tps"])
    lone = med(ours["lone_s"])
    print(f"\n== {dtype} ==")
    print(f"ours, one by one: {seq:.1f} tok/s; lone request {lone:.2f} s")
    if serve:
        print(f"transformers serve --continuous-batching: lone request {med(serve['lone_s']):.2f} s")
    header = f"{'N':>2} | {'ours tok/s':>10} | {'vs 1-by-1':>9} | {'p50 s':>6} | {'p50/lone':>8}"
    if serve:
        header += f" | {'serve tok/s':>11} | {'serve p50':>9} | {'ours/serve':>10}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        tps = med(ours["concurrent"][n]["tps"])
        p50 = med(ours["concurrent"][n]["p50"])
        line = f"{n:>2} | {tps:>10.1f} | {tps / seq:>8.2f}x | {p50:>6.2f} | {p50 / lone:>7.2f}x"
        if serve:
            stps = med(serve["concurrent"][n]["tps"])
            line += f" | {stps:>11.1f} | {med(serve['concurrent'][n]['p50']):>9.2f} | {tps / stps:>9.2f}x"
        print(line)
    if serve_error:
        print(f"transformers serve could not be measured: {serve_error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="1,4,8")
    parser.add_argument("--dtypes", default="float32,bfloat16",
                        help="comma-separated; bfloat16 pays off on CPUs with AVX512-BF16 or AMX")
    parser.add_argument("--no-serve", action="store_true", help="skip the transformers serve comparison")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import torch

    results = []
    with tempfile.TemporaryDirectory(prefix="natty-bench-") as tmp:
        folder = build_model(Path(tmp) / "gpt2-small-shaped")
        print(f"model: GPT-2-small shape, random weights, in {folder}; torch threads {torch.get_num_threads()}, "
              f"{args.tokens} new tokens per request, medians of {args.repeats}")
        for dtype in args.dtypes.split(","):
            started = time.monotonic()
            log_path = Path(tmp) / f"serve-{dtype}.log"
            ours, serve, serve_error = asyncio.run(
                bench(folder, dtype, args.tokens, sizes, args.repeats, None if args.no_serve else log_path))
            print(f"{dtype}: measured in {time.monotonic() - started:.0f} s", flush=True)
            if serve_error and log_path.exists():
                print(f"--- transformers serve log, {dtype} (tail) ---")
                print("\n".join(log_path.read_text(errors="replace").splitlines()[-25:]))
            results.append((dtype, ours, serve, serve_error, step_times(folder, dtype, sizes, args.repeats)))
    print(f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end")
    for dtype, ours, serve, serve_error, steps in results:
        report(dtype, sizes, ours, serve, serve_error)
        report_steps(dtype, steps)


if __name__ == "__main__":
    main()
