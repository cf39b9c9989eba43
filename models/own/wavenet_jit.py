"""Fast WaveNet's step compiled with numba: every layer, the output head and the sampling in one loop.

`WaveNet.generate` uses this module when numba is installed (the `local` extra) and falls back to the NumPy
`_FastStep` otherwise; it is imported only there, so the bot starts without numba. One call runs a whole chunk of
samples for a batch of streams: per sample and per layer, the gate (both taps of the dilated convolution) and the
residual + skip 1x1 convolutions are plain loops over preallocated buffers, with each layer's queue of inputs from
`dilation` steps ago in one ring buffer. A locally conditioned model's per-layer gate biases for the chunk come
precomputed (`_FastStep.local_bias`, one matrix product per layer) and are added row by row. The streams of a batch
share each step, so a layer's weights are read once per step for all of them.

The arithmetic stays in the model's dtype (float32 for the bundled checkpoint) and without fastmath, and the
sampling repeats `sample_logits` (charrnn.py) exactly: float64 logits over the temperature, softmax weights, their
running sum, and the first level whose running sum reaches u * total, with u drawn by the caller from the same
generator in the same order (one row of `batch` uniforms per sample). So a seed gives the naive path's samples.

Compiled code is cached next to this file (numba's `cache=True`; a read-only install uses numba's per-user cache
directory, and where neither can be written it compiles once per process instead).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit


def _compile(fn: Callable[..., Any]) -> Any:
    try:
        return njit(cache=True, nogil=True, fastmath=False)(fn)
    except RuntimeError as e:  # "cannot cache function ...: no locator available": nowhere to write a cache
        warnings.warn(f"WaveNet's numba step compiles without a cache: {e}", RuntimeWarning, stacklevel=2)
        return njit(cache=False, nogil=True, fastmath=False)(fn)


def _layers(x, one, embed, Wg, bg, Wrs, brs, dil, qoff, queue, t, h, a, z, rs, skips, lbias, li
            ):  # pragma: no cover (jit)
    """One sample through every residual layer for each stream: inputs x (B,), skip sum into skips (B, S);
    lbias (n, L, B, 2D) the local-conditioning biases (row li is this step's), or empty."""
    B, R = h.shape
    L, D, S = Wg.shape[0], z.shape[1], skips.shape[1]
    G, RS = 2 * D, R + S
    local = lbias.shape[0] > 0
    for b in range(B):
        for r in range(R):
            h[b, r] = embed[x[b], r]
        for s in range(S):
            skips[b, s] = 0
    for layer in range(L):
        slot = qoff[layer] + t % dil[layer]
        for b in range(B):
            for j in range(G):
                a[b, j] = 0
            for i in range(R):  # tap 0: this layer's input `dilation` steps ago
                c = queue[slot, b, i]
                for j in range(G):
                    a[b, j] += c * Wg[layer, i, j]
            for i in range(R):  # tap 1: its input now, which then waits `dilation` steps in the queue
                c = h[b, i]
                queue[slot, b, i] = c
                for j in range(G):
                    a[b, j] += c * Wg[layer, R + i, j]
            for j in range(G):
                a[b, j] += bg[layer, b, j]
            if local:
                for j in range(G):
                    a[b, j] += lbias[li, layer, b, j]
            for k in range(D):
                z[b, k] = np.tanh(a[b, k]) * (one / (one + np.exp(-a[b, D + k])))
            for j in range(RS):
                rs[b, j] = 0
            for k in range(D):
                c = z[b, k]
                for j in range(RS):
                    rs[b, j] += c * Wrs[layer, k, j]
            for j in range(RS):
                rs[b, j] += brs[layer, j]
            for r in range(R):
                h[b, r] += rs[b, r]
            for s in range(S):
                skips[b, s] += rs[b, R + s]


def _run(xs, u, temperature, out, logits_out, one, embed, Wg, bg, Wrs, brs, dil, qoff, W1, b1, W2, b2,
         queue, t0, h, a, z, rs, skips, hid, logits, cdf, lbias):  # pragma: no cover (jit)
    """Feed the levels xs (B, m) through the layers, then draw out (B, n) with the uniforms u (n, B).

    The first m - 1 columns of xs only fill the queues (no head); the last one is the input of the first draw.
    logits_out (n, B, V) receives each draw's logits unless it is empty. lbias (m - 1 + n, L, B, 2D): the
    local-conditioning biases of these steps, or empty. Returns the next step's t.
    """
    B, n = out.shape
    m = xs.shape[1]
    S, V = W1.shape[0], W2.shape[1]
    zero = one - one  # in the model's dtype (a bare 0 would make max() float64)
    keep = logits_out.shape[0] > 0
    x = np.empty(B, np.int64)
    for i in range(m - 1):
        for b in range(B):
            x[b] = xs[b, i]
        _layers(x, one, embed, Wg, bg, Wrs, brs, dil, qoff, queue, t0 + i, h, a, z, rs, skips, lbias, i)
    t0 += m - 1
    for b in range(B):
        x[b] = xs[b, m - 1]
    for step in range(n):
        _layers(x, one, embed, Wg, bg, Wrs, brs, dil, qoff, queue, t0 + step, h, a, z, rs, skips, lbias,
                m - 1 + step)
        for b in range(B):
            for s in range(S):  # the head: ReLU, 1x1, ReLU, 1x1
                hid[b, s] = 0
            for i in range(S):
                c = max(skips[b, i], zero)
                for s in range(S):
                    hid[b, s] += c * W1[i, s]
            for s in range(S):
                hid[b, s] = max(hid[b, s] + b1[s], zero)
            for v in range(V):
                logits[b, v] = 0
            for i in range(S):
                c = hid[b, i]
                for v in range(V):
                    logits[b, v] += c * W2[i, v]
            for v in range(V):
                logits[b, v] += b2[v]
            if keep:
                for v in range(V):
                    logits_out[step, b, v] = logits[b, v]
            # sample_logits: inverse CDF in float64 (argmax at temperature <= 0, the uniform drawn all the same)
            if temperature <= 0:
                best = 0
                for v in range(1, V):
                    if np.float64(logits[b, v]) > np.float64(logits[b, best]):
                        best = v
                x[b] = best
            else:
                top = -np.inf
                for v in range(V):
                    cdf[v] = np.float64(logits[b, v]) / temperature
                    top = max(top, cdf[v])
                total = 0.0
                for v in range(V):
                    total += np.exp(cdf[v] - top)
                    cdf[v] = total
                target = u[step, b] * cdf[V - 1]
                below = 0
                for v in range(V):
                    if cdf[v] < target:
                        below += 1
                x[b] = min(below, V - 1)
            out[b, step] = x[b]
    return t0 + n


_layers = _compile(_layers)
_run = _compile(_run)


class JitStep:
    """The state of one batched generation: the stacked weights of a `_FastStep`, ring buffers and scratch."""

    def __init__(self, fast: Any) -> None:  # a models.own.wavenet._FastStep (its weights, already extracted)
        layers = fast.layers
        batch, R = layers[0]["cat"].shape[0], fast.R
        dt = fast.embed.dtype
        self.one = dt.type(1)
        self.embed = np.ascontiguousarray(fast.embed)
        self.Wg = np.ascontiguousarray(np.stack([lw["Wg"] for lw in layers]))  # (L, 2R, 2D)
        self.bg = np.ascontiguousarray(np.stack([lw["bg"] for lw in layers]))  # (L, B, 2D)
        self.Wrs = np.ascontiguousarray(np.stack([lw["Wrs"] for lw in layers]))  # (L, D, R + S)
        self.brs = np.ascontiguousarray(np.stack([lw["brs"] for lw in layers]))  # (L, R + S)
        self.dil = np.array([lw["d"] for lw in layers], np.int64)
        self.qoff = np.concatenate([[0], np.cumsum(self.dil)[:-1]]).astype(np.int64)  # layer l's slots start here
        self.W1, self.b1 = np.ascontiguousarray(fast.W1), np.ascontiguousarray(fast.b1)
        self.W2, self.b2 = np.ascontiguousarray(fast.W2), np.ascontiguousarray(fast.b2)
        D, S, V = self.Wrs.shape[1], self.W1.shape[0], self.W2.shape[1]
        self.queue = np.zeros((int(self.dil.sum()), batch, R), dt)
        self.h, self.a, self.z = np.zeros((batch, R), dt), np.zeros((batch, 2 * D), dt), np.zeros((batch, D), dt)
        self.rs, self.skips = np.zeros((batch, R + S), dt), np.zeros((batch, S), dt)
        self.hid, self.logits = np.zeros((batch, S), dt), np.zeros((batch, V), dt)
        self.cdf = np.zeros(V, np.float64)
        self.no_logits = np.zeros((0, batch, V), np.float64)
        self.no_local = np.zeros((0, len(layers), batch, 2 * D), dt)
        self.batch, self.V, self.t = batch, V, 0

    def run(self, xs: np.ndarray, u: np.ndarray, temperature: float, keep_logits: bool = False,
            local_bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Samples (B, n) for the uniforms u (n, B), after feeding the levels xs (B, m >= 1); and their logits.

        Like `_FastStep`: xs[:, :-1] only fill the queues, xs[:, -1] is the input of the first sample.
        `local_bias` (m - 1 + n, L, B, 2D): a locally conditioned model's gate biases for these steps.
        """
        n = u.shape[0]
        if local_bias is None:
            lbias = self.no_local
        else:
            assert local_bias.shape[0] == xs.shape[1] - 1 + n, (local_bias.shape, xs.shape, n)
            lbias = np.ascontiguousarray(local_bias, self.no_local.dtype)
        out = np.zeros((self.batch, n), np.int64)
        logits_out = np.zeros((n, self.batch, self.V), np.float64) if keep_logits else self.no_logits
        self.t = _run(np.ascontiguousarray(xs, np.int64), np.ascontiguousarray(u, np.float64), float(temperature),
                      out, logits_out, self.one, self.embed, self.Wg, self.bg, self.Wrs, self.brs, self.dil,
                      self.qoff, self.W1, self.b1, self.W2, self.b2, self.queue, self.t, self.h, self.a, self.z,
                      self.rs, self.skips, self.hid, self.logits, self.cdf, lbias)
        return out, (logits_out if keep_logits else None)
