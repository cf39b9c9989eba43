"""WaveNet (van den Oord et al. 2016): a stack of dilated causal convolutions over 8-bit mu-law audio.

Each residual layer is a kernel-2 convolution with dilation 1, 2, 4, ... per block, a gated unit
tanh(a) * sigmoid(b) (plus an optional global-conditioning bias, e.g. the kind of sound, and optional local
conditioning: per-sample features, e.g. the pitch sounding, through a 1x1 convolution per layer, as in the paper's
section 2.5), and two 1x1 convolutions: one back into the residual stream and one to the skip connections, whose
sum feeds the output head (ReLU, 1x1, ReLU, 1x1) over 256 mu-law levels.

`generate_naive` re-runs the network over the last receptive field for every sample. `generate` is Fast
WaveNet (Paine et al. 2016): each layer keeps a queue of its inputs from `dilation` steps ago, so one sample
costs two small matrix products per layer. With numba installed (the `local` extra) the whole step, every layer,
the head and the sampling, for a batch of streams, is one compiled loop (`wavenet_jit`), faster than real time at
the bundled size on one core; without it the step runs in NumPy (`_FastStep`) with the two gate convolutions fused
into one product and residual and skip into another, because eager PyTorch spends more on per-op overhead than on
arithmetic at one sample. All paths draw from the same generator in the same order, so a seed gives the same audio.

Local conditioning (`n_local` features per sample, 0: none) is aligned with the outputs: the features given with
output t are those of the sample it predicts. The fast paths project a chunk of features through every layer's
1x1 convolution at once (one matrix product per layer) and add row t to the gate at step t.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.own.charrnn import sample_logits


@dataclass
class WaveNetConfig:
    n_classes: int = 256  # mu-law levels
    n_residual: int = 32
    n_dilation: int = 32  # channels of each gate half
    n_skip: int = 64
    n_blocks: int = 2
    n_layers: int = 10  # per block; dilations 1, 2, ..., 2^(n_layers-1)
    n_global: int = 0  # global-conditioning classes (0: unconditional)
    n_local: int = 0  # local-conditioning features per sample (0: none)
    sample_rate: int = 16000

    @property
    def dilations(self) -> list[int]:
        return [2**i for i in range(self.n_layers)] * self.n_blocks

    @property
    def receptive_field(self) -> int:
        return 1 + sum(self.dilations)

    def to_dict(self) -> dict:
        return asdict(self)


def mu_law_encode(audio: np.ndarray, levels: int = 256) -> np.ndarray:
    """Floats in [-1, 1] -> integers in [0, levels)."""
    mu = levels - 1
    x = np.clip(audio, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((y + 1) / 2 * mu + 0.5).astype(np.int64)


def mu_law_decode(q: np.ndarray, levels: int = 256) -> np.ndarray:
    """Integers in [0, levels) -> floats in [-1, 1]."""
    mu = levels - 1
    y = 2 * (np.asarray(q, dtype=np.float64) / mu) - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


class ResidualLayer(nn.Module):
    def __init__(self, config: WaveNetConfig, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.dilated = nn.Conv1d(config.n_residual, 2 * config.n_dilation, 2, dilation=dilation)
        self.cond = nn.Embedding(config.n_global, 2 * config.n_dilation) if config.n_global else None
        self.local = nn.Conv1d(config.n_local, 2 * config.n_dilation, 1, bias=False) if config.n_local else None
        self.res = nn.Conv1d(config.n_dilation, config.n_residual, 1)
        self.skip = nn.Conv1d(config.n_dilation, config.n_skip, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.dilated(F.pad(x, (self.dilation, 0)))  # left padding keeps it causal
        if self.cond is not None and g is not None:
            a = a + self.cond(g)[:, :, None]
        if self.local is not None and c is not None:
            a = a + self.local(c)
        t, s = a.chunk(2, dim=1)
        z = torch.tanh(t) * torch.sigmoid(s)
        return x + self.res(z), self.skip(z)


class WaveNet(nn.Module):
    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.n_classes, config.n_residual)  # the one-hot input's 1x1 convolution
        self.layers = nn.ModuleList(ResidualLayer(config, d) for d in config.dilations)
        self.out1 = nn.Conv1d(config.n_skip, config.n_skip, 1)
        self.out2 = nn.Conv1d(config.n_skip, config.n_classes, 1)

    def forward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None, g: torch.Tensor | None = None,
        local: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T) mu-law levels -> logits (B, T, n_classes) for the next sample, and the loss vs targets.

        `local` (B, T, n_local): per output, the features of the sample it predicts (that is, of x shifted by one).
        """
        h = self.embed(x).transpose(1, 2)
        c = None
        if local is not None and self.config.n_local:
            c = local.to(h.dtype).transpose(1, 2)
        skips = 0
        for layer in self.layers:
            h, s = layer(h, g, c)
            skips = skips + s
        hidden = F.relu(skips)  # type: ignore[arg-type]  # a Tensor once the first layer added to it
        logits = self.out2(F.relu(self.out1(hidden))).transpose(1, 2)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def _start(self, batch: int, g, prime) -> tuple[np.ndarray | None, np.ndarray]:
        gs = None if g is None else np.broadcast_to(np.asarray(g, dtype=np.int64), (batch,)).copy()
        if prime is None:
            prime = np.full((batch, 1), self.config.n_classes // 2, dtype=np.int64)  # silence
        return gs, np.broadcast_to(np.asarray(prime, dtype=np.int64).reshape(-1, np.shape(prime)[-1]),
                                   (batch, np.shape(prime)[-1])).copy()

    def _local(self, local: np.ndarray | None, batch: int, n_total: int) -> np.ndarray | None:
        """Generation's `local` (n_total, n_local) or (batch, n_total, n_local), the features of every sample of
        prime + output, as (batch, n_total - 1, n_local) in the model's dtype: per step, the sample it predicts."""
        if not self.config.n_local:
            return None
        if local is None:
            raise ValueError("this WaveNet is locally conditioned: pass local features for prime + output")
        arr = np.asarray(local)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.shape[1:] != (n_total, self.config.n_local):
            raise ValueError(f"local must hold {n_total} samples (prime + output) of {self.config.n_local} features, "
                             f"not {arr.shape}")
        dt = self.embed.weight.detach().cpu().numpy().dtype
        return np.array(np.broadcast_to(arr[:, 1:], (batch, n_total - 1, arr.shape[2])), dtype=dt)  # a copy

    @torch.no_grad()
    def generate_naive(
        self, n_samples: int, batch: int = 1, g: int | list[int] | None = None, seed: int | None = None,
        temperature: float = 1.0, prime: np.ndarray | None = None, local: np.ndarray | None = None,
    ) -> np.ndarray:
        """Sample (batch, n_samples) levels, one forward pass over the last receptive field per sample.

        `local`: for a locally conditioned model, the features of every sample of prime + output, (n, n_local) or
        (batch, n, n_local) with n = prime length + n_samples (the first sample's are not used)."""
        self.eval()
        gs, seq = self._start(batch, g, prime)
        rng = np.random.default_rng(seed)
        dev = self.embed.weight.device
        gt = None if gs is None else torch.as_tensor(gs, device=dev)
        rf = self.config.receptive_field
        n0 = seq.shape[1]
        lc = self._local(local, batch, n0 + n_samples)
        seq = np.concatenate([seq, np.zeros((batch, n_samples), np.int64)], axis=1)
        for t in range(n0, n0 + n_samples):
            window = torch.as_tensor(seq[:, max(0, t - rf) : t], device=dev)
            lt = None if lc is None else torch.as_tensor(lc[:, max(0, t - rf) : t], device=dev)
            logits = self(window, g=gt, local=lt)[0][:, -1].double().cpu().numpy()
            seq[:, t] = sample_logits(logits, rng, temperature)
        return seq[:, n0:]

    @torch.no_grad()
    def generate(
        self, n_samples: int, batch: int = 1, g: int | list[int] | None = None, seed: int | None = None,
        temperature: float = 1.0, prime: np.ndarray | None = None,
        callback: Callable[[int, np.ndarray], bool | None] | None = None, every: int = 1000,
        logits_out: list[np.ndarray] | None = None, engine: str = "auto", local: np.ndarray | None = None,
    ) -> np.ndarray:
        """The same samples as `generate_naive`, by Fast WaveNet's per-layer queues.

        `callback(done, samples_so_far)` runs every `every` samples; returning True stops early. `engine`:
        "numba" (the compiled step of `wavenet_jit`), "numpy" (`_FastStep`) or "auto" (numba when installed).
        `local` as for `generate_naive`; its per-layer projections are computed a chunk at a time.
        """
        self.eval()
        gs, seq = self._start(batch, g, prime)
        rng = np.random.default_rng(seed)
        step = _FastStep(self, batch, gs)
        n0 = seq.shape[1]
        lc = self._local(local, batch, n0 + n_samples)
        out = np.zeros((batch, n_samples), np.int64)
        jit = _jit_module(engine)
        if jit is not None:
            js = jit.JitStep(step)
            xs = seq  # the prime, then each chunk continues from the last sample drawn
            chunk = every if callback is not None else 4096
            done = 0
            row = 0  # the next row of lc: the features of the sample the next step predicts
            while done < n_samples:
                n = min(chunk, n_samples - done)
                u = rng.random((n, batch))  # the uniforms sample_logits would draw, row by row, in the same order
                steps = xs.shape[1] - 1 + n
                lb = None if lc is None else step.local_bias(lc[:, row : row + steps])
                row += steps
                out[:, done : done + n], logits = js.run(xs, u, temperature, keep_logits=logits_out is not None,
                                                         local_bias=lb)
                if logits_out is not None:
                    assert logits is not None
                    logits_out.extend(logits)
                xs = out[:, done + n - 1 : done + n]
                done += n
                if callback is not None and done % every == 0 and callback(done, out[:, :done]):
                    return out[:, :done]
            return out
        block = 4096
        lb = None

        def bias_at(row: int) -> np.ndarray | None:  # step `row`'s (L, B, 2D) local bias, projected a block at a time
            nonlocal lb
            if lc is None:
                return None
            if row % block == 0:
                lb = step.local_bias(lc[:, row : row + block])
            assert lb is not None
            return lb[row % block]

        for t in range(n0 - 1):  # fill the queues with the prime
            step(seq[:, t], need_logits=False, local_bias=bias_at(t))
        cur = seq[:, n0 - 1]
        for t in range(n_samples):
            logits = step(cur, local_bias=bias_at(n0 - 1 + t))
            assert logits is not None  # need_logits
            if logits_out is not None:
                logits_out.append(logits.astype(np.float64))
            cur = out[:, t] = sample_logits(logits, rng, temperature)
            if callback is not None and (t + 1) % every == 0 and callback(t + 1, out[:, : t + 1]):
                return out[:, : t + 1]
        return out


def _jit_module(engine: str) -> Any:
    """models.own.wavenet_jit for engine "numba", or "auto" when numba is installed; None for the NumPy step."""
    if engine not in ("auto", "numba", "numpy"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'numpy', not {engine!r}")
    if engine == "numpy":
        return None
    try:
        from models.own import wavenet_jit  # imports numba (seconds the first time): only here, never at start-up
    except ImportError:
        if engine == "numba":
            raise
        return None
    return wavenet_jit


class _FastStep:
    """One sample of every layer at a time, with a ring-buffer queue of past inputs per layer."""

    def __init__(self, model: WaveNet, batch: int, g: np.ndarray | None) -> None:
        cfg = model.config
        R, D, S = cfg.n_residual, cfg.n_dilation, cfg.n_skip

        def np_(t: torch.Tensor | None) -> np.ndarray:
            assert t is not None  # every layer here has a bias
            return t.detach().cpu().numpy()

        self.embed = np_(model.embed.weight)
        dt = self.embed.dtype
        self.R, self.D = R, D
        self.layers: list[dict[str, Any]] = []
        # (L, n_local, 2D): each layer's 1x1 local-conditioning convolution, or None
        locals_ = [layer.local for layer in model.layers if isinstance(layer, ResidualLayer)]
        self.Wl = None if not cfg.n_local else np.ascontiguousarray(np.stack(
            [np_(conv.weight)[:, :, 0].T for conv in locals_ if conv is not None]))
        for layer in model.layers:
            assert isinstance(layer, ResidualLayer)  # what WaveNet.layers holds (torch types it as Module)
            w = np_(layer.dilated.weight)  # (2D, R, 2): tap 0 is x[t - d], tap 1 is x[t]
            bias = np.broadcast_to(np_(layer.dilated.bias), (batch, 2 * D)).copy()
            if layer.cond is not None and g is not None:
                bias += np_(layer.cond.weight)[g]
            self.layers.append({
                "d": layer.dilation,
                "Wg": np.ascontiguousarray(np.concatenate([w[:, :, 0].T, w[:, :, 1].T])),  # (2R, 2D)
                "bg": bias,
                "Wrs": np.ascontiguousarray(np.concatenate(  # (D, R + S): residual and skip in one product
                    [np_(layer.res.weight)[:, :, 0].T, np_(layer.skip.weight)[:, :, 0].T], axis=1)),
                "brs": np.concatenate([np_(layer.res.bias), np_(layer.skip.bias)]),
                "queue": np.zeros((layer.dilation, batch, R), dt),
                "cat": np.zeros((batch, 2 * R), dt),  # [x[t - d], x[t]]
            })
        self.W1, self.b1 = np.ascontiguousarray(np_(model.out1.weight)[:, :, 0].T), np_(model.out1.bias)
        self.W2, self.b2 = np.ascontiguousarray(np_(model.out2.weight)[:, :, 0].T), np_(model.out2.bias)
        self.skips = np.zeros((batch, S), dt)
        self.t = 0

    def local_bias(self, lc: np.ndarray) -> np.ndarray:
        """Features (B, n, n_local) -> every layer's gate bias per step, (n, L, B, 2D): one product per layer."""
        assert self.Wl is not None
        lb = np.empty((lc.shape[1], len(self.layers), lc.shape[0], self.Wl.shape[2]), self.embed.dtype)
        for i, w in enumerate(self.Wl):
            lb[:, i] = (lc @ w).transpose(1, 0, 2)
        return lb

    def __call__(self, x: np.ndarray, need_logits: bool = True, local_bias: np.ndarray | None = None
                 ) -> np.ndarray | None:
        """One step for inputs x (B,); `local_bias` (L, B, 2D): this step's rows of `local_bias(...)`."""
        R, D = self.R, self.D
        h = self.embed[x]
        skips = self.skips
        skips[:] = 0
        for i, lw in enumerate(self.layers):
            slot = lw["queue"][self.t % lw["d"]]
            cat = lw["cat"]
            cat[:, :R] = slot  # this layer's input d steps ago...
            cat[:, R:] = h
            slot[:] = h  # ...and now this one waits d steps
            a = cat @ lw["Wg"]
            a += lw["bg"]
            if local_bias is not None:
                a += local_bias[i]
            z = np.tanh(a[:, :D])
            z *= 0.5 * (1.0 + np.tanh(0.5 * a[:, D:]))  # sigmoid, without overflow warnings
            rs = z @ lw["Wrs"]
            rs += lw["brs"]
            h = h + rs[:, :R]
            skips += rs[:, R:]
        self.t += 1
        if not need_logits:
            return None
        hid = np.maximum(np.maximum(skips, 0) @ self.W1 + self.b1, 0)
        return hid @ self.W2 + self.b2
