"""Cached vs naive autoregressive generation for natty's own models, as medians of repeats on this machine.

    python bench/autoregressive.py [--threads 2] [--repeats 5]

- WaveNet, 2 blocks of L layers (L = 4, 8, 10), 32 channels, batch 1: Fast WaveNet's per-layer queues vs a
  forward pass over the last receptive field per sample, both in steady state (a full receptive field of
  context); then samples per second and the time for one second of 16 kHz audio with 2 blocks of 10 layers.
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
import sys
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
from models.own.wavenet import WaveNet, WaveNetConfig, _FastStep  # noqa: E402


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

    torch.manual_seed(0)
    cfg = WaveNetConfig(n_residual=32, n_dilation=32, n_skip=32, n_blocks=2, n_layers=10)
    model = WaveNet(cfg).eval()
    sr = cfg.sample_rate
    t, _ = median_time(lambda: model.generate(sr, seed=0), max(1, r // 2))
    print(f"  one second of 16 kHz audio, 2 blocks of 10 layers: {t:.2f} s ({sr / t:.0f} samples/s; goal < 8 s)")
    bundled = WaveNet(WaveNetConfig(n_global=2)).eval()
    t, _ = median_time(lambda: bundled.generate(sr, g=0, seed=0), max(1, r // 2))
    print(f"  the same with the bundled size (64 skip channels, global conditioning): {t:.2f} s\n")

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
