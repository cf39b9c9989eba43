"""Cached vs naive autoregressive generation for natty's own models, as medians of repeats on this machine.

    python bench/autoregressive.py [--threads 2] [--repeats 5]

- WaveNet, 2 blocks of L layers (L = 4, 8, 10), 32 channels, batch 1: Fast WaveNet's per-layer queues (the NumPy
  step) vs a forward pass over the last receptive field per sample, both in steady state (a full receptive field of
  context).
- WaveNet at the bundled size (2 x 10 layers, 32 residual / 32 gate / 64 skip channels, global conditioning): one
  second of 16 kHz audio as the bot makes it (a 2047-sample prime, then 16,000 samples), the NumPy step and the
  numba step taking turns in every repeat; 1, 4 and 8 streams batched in one step, and 8 as two threads of 4. It
  prints the real-time ratio, samples per second, numba vs NumPy (all from medians), the process's CPU share of the
  wall time (below 1: other work had the cores), the load average before and after, whether numba drew the NumPy
  step's samples (all 16,000) and the naive path's (the first 200), and numba's compile time, cold (a fresh cache
  directory, in a subprocess) and as this process's first call, neither counted in the figures.
- PixelCNN (the bundled size: 8x8, 8 layers, 64 channels), batch 1 and 16: cached rows/columns vs one full
  forward pass per pixel.
- char-RNN (the bundled size): stateful sampling vs re-running the prefix, 200 characters after a 100-character
  prompt.
Each cached/naive pair also checks that both paths drew the same samples for the same seed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, bench/ would come first on sys.path, where a sibling bench (queue.py) shadows the stdlib.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.own.charrnn import CharRNN, CharRNNConfig, sample_logits  # noqa: E402
from models.own.pixelcnn import PixelCNN, PixelCNNConfig  # noqa: E402
from models.own.wavenet import WaveNet, WaveNetConfig, _FastStep, _jit_module  # noqa: E402


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def wavenet_pair(layers: int, repeats: int) -> tuple[float, float, bool]:
    """Seconds per sample, (fast, naive), in steady state, and whether both drew the same samples."""
    torch.manual_seed(0)
    cfg = WaveNetConfig(n_residual=32, n_dilation=32, n_skip=32, n_blocks=2, n_layers=layers)
    model = WaveNet(cfg).eval()
    rf = cfg.receptive_field
    prime = np.random.default_rng(0).integers(0, 256, (1, rf))
    n_fast, n_naive = 1000, max(20, 4000 // layers**2)

    def fast() -> np.ndarray:
        step = _FastStep(model, 1, None)
        for t in range(rf - 1):
            step(prime[:, t], need_logits=False)
        rng = np.random.default_rng(1)
        cur, out = prime[:, -1], []
        started = time.perf_counter()
        for _ in range(n_fast):
            cur = sample_logits(step(cur), rng)
            out.append(cur[0])
        fast.seconds = time.perf_counter() - started  # the steady-state part only
        return np.array(out)

    fast_runs = []
    for _ in range(repeats):
        samples = fast()
        fast_runs.append(fast.seconds)
    t_naive, naive = median_time(lambda: model.generate_naive(n_naive, prime=prime, seed=1)[0], repeats)
    same = bool(np.array_equal(samples[:n_naive], naive))
    return statistics.median(fast_runs) / n_fast, t_naive / n_naive, same


_COLD_COMPILE = """
import time
import torch
from models.own.wavenet import WaveNet, WaveNetConfig
model = WaveNet(WaveNetConfig(n_global=2)).eval()
for _ in range(2):
    t = time.perf_counter()
    model.generate(10, g=0, seed=0, engine="numba")
    print(time.perf_counter() - t)
"""


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else "load n/a"


def wavenet_realtime(repeats: int) -> None:
    """One second of 16 kHz audio at the bundled size: NumPy step vs numba step, taking turns."""
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(n_global=2)).eval()
    cfg = model.config
    sr, rf = cfg.sample_rate, cfg.receptive_field
    prime = np.random.default_rng(0).integers(0, cfg.n_classes, (1, rf))  # the bot primes with 2047 samples
    print(f"WaveNet at the bundled size, 1 s of 16 kHz audio after a {rf}-sample prime, {os.cpu_count()} CPUs, "
          f"{load()}")
    if _jit_module("auto") is None:
        print("  numba is not installed (pip install numba, or the local extra): only the NumPy step runs")
        engines = ["numpy"]
    else:
        env = {**os.environ, "NUMBA_CACHE_DIR": tempfile.mkdtemp(prefix="natty-numba-")}
        done = subprocess.run([sys.executable, "-c", _COLD_COMPILE], cwd=_HERE.parent, env=env, text=True,
                              capture_output=True, check=True).stdout.split()
        t = time.perf_counter()
        model.generate(10, g=0, seed=0, engine="numba")
        first = time.perf_counter() - t
        print(f"  numba compile: {float(done[0]):.2f} s cold (fresh cache directory; a second call then took "
              f"{float(done[1]) * 1e3:.1f} ms), {first:.2f} s for this process's first call (numba's cache); "
              "not counted below")
        engines = ["numpy", "numba"]

    def one(engine: str, batch: int, threads: int) -> tuple[float, float, np.ndarray]:
        """Wall and CPU seconds for `threads` threads each making 1 s for `batch` streams; the first's samples."""
        outs: list[np.ndarray] = [np.zeros(0)] * threads
        g = [i % 2 for i in range(batch)]

        def work(i: int) -> None:
            outs[i] = model.generate(sr, batch=batch, g=g, seed=i, prime=prime, engine=engine)

        wall, cpu = time.perf_counter(), time.process_time()
        if threads == 1:
            work(0)
        else:
            pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()
        return time.perf_counter() - wall, time.process_time() - cpu, outs[0]

    rows = [(1, 1), (4, 1), (8, 1), (4, 2)]  # (streams per step, threads)
    med: dict[tuple[str, int, int], tuple[float, float]] = {}
    same_numpy = True
    first_samples: np.ndarray | None = None
    for batch, threads in rows:
        runs: dict[str, list[tuple[float, float]]] = {e: [] for e in engines}
        for _ in range(repeats):
            got = {}
            for e in engines:  # interleaved: the same moment's load on both sides
                wall, cpu, got[e] = one(e, batch, threads)
                runs[e].append((wall, cpu))
            if len(engines) == 2:
                same_numpy &= bool(np.array_equal(got["numpy"], got["numba"]))
            if batch == 1 and threads == 1:
                first_samples = got[engines[-1]]
        for e in engines:
            walls, cpus = [w for w, _ in runs[e]], [c for _, c in runs[e]]
            med[e, batch, threads] = statistics.median(walls), statistics.median(cpus)
    print(f"  {'streams':>17s} {'engine':>6s} {'seconds':>8s} {'real time':>10s} {'samples/s':>10s} "
          f"{'cpu/wall':>9s} {'numba vs numpy':>15s}")
    for batch, threads in rows:
        label = f"{batch * threads}" + ("" if threads == 1 else f" ({threads} threads x {batch})")
        for e in engines:
            wall, cpu = med[e, batch, threads]
            vs = f"{med['numpy', batch, threads][0] / wall:.2f}x" if e == "numba" else ""
            print(f"  {label:>17s} {e:>6s} {wall:8.3f} {1 / wall:9.2f}x {batch * threads * sr / wall:10.0f} "
                  f"{cpu / wall:9.2f} {vs:>15s}")
    assert first_samples is not None
    naive = model.generate_naive(200, g=0, seed=0, prime=prime)
    print(f"  (seconds: wall time for 1 s of every stream's audio, prime included; real time: 1 / seconds, above 1x "
          f"is faster than real time; {load()})")
    print(f"  same samples: numba = NumPy step, all {sr} of every stream in every repeat: {same_numpy}; "
          f"{engines[-1]} = naive over the first 200: {bool(np.array_equal(first_samples[:, :200], naive))}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = args.repeats
    load = ", load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs{load}, "
          f"medians of {r} repeats\n")

    print("WaveNet, 2 blocks of L layers, 32 channels, batch 1 (per sample, steady state)")
    for layers, goal in ((4, 3), (8, 20), (10, 30)):
        fast, naive, same = wavenet_pair(layers, r)
        print(f"  L={layers:2d}: fast {fast * 1e3:7.3f} ms  naive {naive * 1e3:8.3f} ms  "
              f"speed-up {naive / fast:6.1f}x (goal {goal}x)  same samples: {same}")

    print()
    wavenet_realtime(r)
    print()

    print("PixelCNN, 8x8, 8 layers, 64 channels (one image or batch)")
    torch.manual_seed(0)
    pix = PixelCNN(PixelCNNConfig()).eval()
    for batch, goal in ((1, "goal 2x"), (16, "")):
        labels = [i % 10 for i in range(batch)]
        t_fast, a = median_time(lambda labels=labels: pix.generate(labels, seed=0), r)
        t_naive, b = median_time(lambda labels=labels: pix.generate_naive(labels, seed=0), r)
        print(f"  batch {batch:2d}: cached {t_fast * 1e3:7.1f} ms  naive {t_naive * 1e3:7.1f} ms  "
              f"speed-up {t_naive / t_fast:5.1f}x {goal}  same samples: {bool(np.array_equal(a, b))}")

    print("\nchar-RNN, 2 x 256 LSTM, 200 characters after a 100-character prompt")
    torch.manual_seed(0)
    chars = "\n abcdefghijklmnopqrstuvwxyz.,;:'\"ABCDEFGHIJKLMNOP"
    rnn = CharRNN(CharRNNConfig(chars=chars)).eval()
    prompt = ("the quick brown fox " * 5)[:100]
    t_fast, a = median_time(lambda: rnn.generate(prompt, 200, seed=0), r)
    t_naive, b = median_time(lambda: rnn.generate_naive(prompt, 200, seed=0), max(1, r // 2))
    print(f"  stateful {t_fast * 1e3:7.1f} ms  re-running the prefix {t_naive * 1e3:8.1f} ms  "
          f"speed-up {t_naive / t_fast:5.1f}x  same samples: {a == b}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
