"""A class-conditional Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders") over discrete grey levels.

Each gated layer has a vertical stack (a masked k x k convolution seeing the rows above) and a horizontal stack
(a masked 1 x k convolution seeing the pixels to the left in the current row, plus the vertical stack through a
1x1 link), each followed by tanh(a) * sigmoid(b) with a conditioning bias added to a and b. The first layer's masks
("A") also hide the current pixel; later layers ("B") see it, because it then only carries its left context.
The output is a softmax over `n_levels` per pixel.

Conditioning: `y` is either one class id per image (B,), or a multi-hot vector over `n_classes` attribute tokens
(B, n_classes), whose bias is the sum of those tokens' embeddings (a one-hot vector gives exactly the class id's
bias). With `map_size` > 0 the same tokens also make a location-dependent bias (the paper's s = m(h)): a learned
linear map from the tokens to a `map_size` x `map_size` x `map_channels` grid, bilinearly upsampled to the image
and projected per layer by a 1x1 convolution, so that "a star on the left" can tell each pixel where it lies.
The digit model uses class ids and no map (the defaults).

Guidance (config `guidance` > 1, a model trained with `cond_drop` > 0): each sampler runs the batch twice in
one pass, with the tokens and with none, and draws every pixel from u + g * (c - u) of the two passes' logits
(classifier-free guidance, Ho & Salimans 2022), which trades diversity for pictures that look more like what was
asked.

`generate_naive` re-runs the whole network for every pixel. `generate` caches the way Ramachandran et al. 2017
("Fast Generation for Convolutional Autoregressive Models") do: the vertical stacks are computed once per row,
and each pixel computes only its own column of every horizontal layer, in NumPy with preallocated buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.own.charrnn import sample_logits


@dataclass
class PixelCNNConfig:
    n_levels: int = 17  # discrete grey levels per pixel
    n_classes: int = 10
    height: int = 8
    width: int = 8
    n_channels: int = 64
    n_layers: int = 8
    kernel: int = 3  # odd
    map_size: int = 0  # side of the location-dependent conditioning grid; 0: none (a global bias only)
    map_channels: int = 8
    # Classifier-free guidance (Ho & Salimans 2022), for token conditioning only: training drops every token of
    # this fraction of images, so the same network also learns the unconditional model (no tokens); sampling
    # then takes logits u + guidance * (c - u) from the conditional (c) and unconditional (u) passes. 1 is
    # plain conditional sampling; the sampler's default when a call gives none.
    cond_drop: float = 0.0
    guidance: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 mask, so hidden taps never contribute."""

    mask: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, *args, mask: torch.Tensor, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("mask", mask.expand_as(self.weight).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, config: PixelCNNConfig, first: bool) -> None:
        super().__init__()
        c, k = config.n_channels, config.kernel
        p = k // 2
        self.first = first
        v_mask = torch.ones(p + 1, k)
        h_mask = torch.ones(1, p + 1)
        if first:  # type A: the current row (vertical) and the current pixel (horizontal) stay hidden
            v_mask[p] = 0
            h_mask[0, p] = 0
        self.v_conv = MaskedConv2d(c, 2 * c, (p + 1, k), padding=(p, p), mask=v_mask)
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)
        self.h_conv = MaskedConv2d(c, 2 * c, (1, p + 1), padding=(0, p), mask=h_mask)
        self.h_out = nn.Conv2d(c, c, 1)
        self.cond = nn.Embedding(config.n_classes, 4 * c)  # class/token bias for both stacks' gates
        self.cond_map = nn.Conv2d(config.map_channels, 4 * c, 1) if config.map_size else None

    def bias(self, y: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        """The gates' conditioning bias: (B, 4C, 1, 1), or (B, 4C, H, W) with a location map."""
        c = self.cond(y) if y.dim() == 1 else y @ self.cond.weight  # a sum of the tokens' embeddings
        c = c[:, :, None, None]
        if self.cond_map is not None and cmap is not None:
            c = c + self.cond_map(cmap)
        return c

    def forward(self, v: torch.Tensor, h: torch.Tensor, y: torch.Tensor, cmap: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        H, W = v.shape[-2:]
        cv, ch = self.bias(y, cmap).chunk(2, dim=1)
        hv = self.v_conv(v)[:, :, :H]  # output row i sees input rows i-p..i (i-p..i-1 when first)
        v_out = gate(hv + cv)
        hh = self.h_conv(h)[:, :, :, :W]  # output column j sees input columns j-p..j (..j-1 when first)
        h_out = self.h_out(gate(hh + self.v_to_h(hv) + ch))
        return v_out, h_out if self.first else h_out + h


class PixelCNN(nn.Module):
    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config.n_channels
        self.embed = nn.Embedding(config.n_levels, c)
        self.layers = nn.ModuleList(GatedLayer(config, first=i == 0) for i in range(config.n_layers))
        self.out1 = nn.Conv2d(c, c, 1)
        self.out2 = nn.Conv2d(c, config.n_levels, 1)
        r = config.map_size
        self.map = nn.Linear(config.n_classes, config.map_channels * r * r) if r else None

    def location_map(self, y: torch.Tensor) -> torch.Tensor | None:
        """The tokens' location-dependent conditioning, (B, map_channels, H, W), or None without one."""
        if self.map is None:
            return None
        cfg = self.config
        onehot = F.one_hot(y, cfg.n_classes).to(self.map.weight.dtype) if y.dim() == 1 else y
        grid = self.map(onehot).view(-1, cfg.map_channels, cfg.map_size, cfg.map_size)
        return F.interpolate(grid, size=(cfg.height, cfg.width), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, H, W) levels, y (B,) classes or (B, n_classes) tokens -> logits (B, n_levels, H, W) and the
        loss in nats per pixel."""
        v = h = self.embed(x).permute(0, 3, 1, 2)
        cmap = self.location_map(y)
        for layer in self.layers:
            v, h = layer(v, h, y, cmap)
        logits = self.out2(F.relu(self.out1(F.relu(h))))
        return logits, F.cross_entropy(logits, x)

    def _labels(self, labels: list[int] | np.ndarray) -> torch.Tensor:
        """Class ids (B,) as longs, or multi-hot tokens (B, n_classes) in the model's dtype."""
        a = np.asarray(labels)
        dtype = torch.long if a.ndim == 1 else self.embed.weight.dtype
        return torch.as_tensor(a, dtype=dtype, device=self.embed.weight.device)

    @torch.no_grad()
    def generate_naive(
        self, labels: list[int] | np.ndarray, seed: int | None = None, temperature: float = 1.0,
        callback: Callable[[int, np.ndarray], bool | None] | None = None, guidance: float | None = None,
    ) -> np.ndarray:
        """Sample (B, H, W) levels for the given classes or tokens, one full forward pass per pixel."""
        self.eval()
        cfg = self.config
        rng = np.random.default_rng(seed)
        g = self._guidance(labels, guidance)
        y = self._labels(self._with_unconditional(labels, g))
        B = len(labels)
        x = torch.zeros(len(y), cfg.height, cfg.width, dtype=torch.long, device=y.device)
        for i in range(cfg.height):
            for j in range(cfg.width):
                logits = _guided(self(x, y)[0][:, :, i, j].double().cpu().numpy(), B, g)
                level = torch.as_tensor(sample_logits(logits, rng, temperature), device=y.device)
                x[:, i, j] = level if g == 1 else torch.cat([level, level])
            if callback is not None and callback(i, x[:B].cpu().numpy()):
                break
        return x[:B].cpu().numpy()

    def _guidance(self, labels: list[int] | np.ndarray, guidance: float | None) -> float:
        """The guidance scale a call samples with: the call's, else the config's; always 1 for class ids."""
        g = self.config.guidance if guidance is None else float(guidance)
        return g if np.asarray(labels).ndim == 2 else 1.0

    @staticmethod
    def _with_unconditional(labels: list[int] | np.ndarray, g: float) -> np.ndarray:
        """The labels, followed by as many empty token sets when guided (the unconditional half of the batch)."""
        a = np.asarray(labels)
        return a if g == 1 else np.concatenate([a, np.zeros_like(a)])

    @torch.no_grad()
    def generate(
        self, labels: list[int] | np.ndarray, seed: int | None = None, temperature: float = 1.0,
        callback: Callable[[int, np.ndarray], bool | None] | None = None,
        logits_out: list[np.ndarray] | None = None, guidance: float | None = None,
    ) -> np.ndarray:
        """The same samples as `generate_naive`, with cached vertical rows and per-pixel horizontal columns.

        `callback(row, image_so_far)` runs after each row; returning True stops early. `logits_out`, if given,
        collects each pixel's logits (for tests), guided when guidance is on. `guidance`: see the module's
        docstring (None: the config's).
        """
        self.eval()
        cfg = self.config
        w = _NumpyWeights(self)
        rng = np.random.default_rng(seed)
        g = self._guidance(labels, guidance)
        y = self._with_unconditional(labels, g)
        n = len(labels)  # the images asked for; B rows run (2n when guided)
        B, H, W, C, L, k = len(y), cfg.height, cfg.width, cfg.n_channels, cfg.n_layers, cfg.kernel
        p = k // 2
        dt = w.dtype
        x = np.zeros((n, H, W), dtype=np.int64)
        # vbuf[l]: layer l's vertical input, padded by p rows on top and p columns on each side.
        vbuf = [np.zeros((B, H + p, W + 2 * p, C), dt) for _ in range(L)]
        hbuf = [np.zeros((B, W + p, C), dt) for _ in range(L + 1)]  # the current row, p columns of left padding
        # per layer, the gates' conditioning bias, (B, 1, 4C) or with a location map (B, H, W, 4C)
        cond = self._biases(y)
        for i in range(H):
            vh_row = []  # per layer, the vertical stack's contribution to the horizontal gates: (B, W, 2C)
            for li, lw in enumerate(w.layers):
                hv = np.broadcast_to(lw["bv"], (B, W, 2 * C)).copy()
                for dy in range(p if li == 0 else p + 1):
                    rows = vbuf[li][:, i + dy]
                    for dx in range(k):
                        hv += rows[:, dx : dx + W] @ lw["Wv"][dy, dx]
                ci = cond[li][:, min(i, cond[li].shape[1] - 1)]  # (B, 1 or W, 4C)
                cv = ci[..., : 2 * C]
                if li + 1 < L:
                    a = hv + cv
                    vbuf[li + 1][:, i + p, p : p + W] = np.tanh(a[..., :C]) * _sigmoid(a[..., C:])
                vh_row.append(hv @ lw["Wvh"] + (lw["bvh"] + lw["bh"]) + ci[..., 2 * C :])
            for buf in hbuf:
                buf[:] = 0
            for j in range(W):
                for li, lw in enumerate(w.layers):
                    win = hbuf[li][:, j : j + p + 1].reshape(B, (p + 1) * C)
                    a = win @ lw["Wh"] + vh_row[li][:, j]
                    o = (np.tanh(a[:, :C]) * _sigmoid(a[:, C:])) @ lw["Wo"] + lw["bo"]
                    if li > 0:
                        o += hbuf[li][:, j + p]
                    hbuf[li + 1][:, j + p] = o
                hid = np.maximum(np.maximum(hbuf[L][:, j + p], 0) @ w.W1 + w.b1, 0)
                logits = _guided(hid @ w.W2 + w.b2, n, g)
                if logits_out is not None:
                    logits_out.append(logits.astype(np.float64))
                x[:, i, j] = level = sample_logits(logits, rng, temperature)
                e = w.embed[level if g == 1 else np.concatenate([level, level])]
                vbuf[0][:, i + p, p + j] = e
                hbuf[0][:, j + p] = e
            if callback is not None and callback(i, x.copy()):
                break
        return x

    def _biases(self, y: np.ndarray) -> list[np.ndarray]:
        """Each layer's conditioning bias as the sampler adds it: (B, 1, 1, 4C), or (B, H, W, 4C) with a map
        (computed once, by the same torch code as the forward pass)."""
        t = self._labels(y)
        cmap = self.location_map(t)
        out = []
        for layer in self.layers:
            assert isinstance(layer, GatedLayer)
            if cmap is None and t.dim() == 1:  # class ids: the embedding rows themselves, as before
                out.append(layer.cond.weight.detach().cpu().numpy()[y.astype(np.int64)][:, None, None, :])
            else:
                out.append(layer.bias(t, cmap).permute(0, 2, 3, 1).cpu().numpy())
        return out


def _guided(logits: np.ndarray, n: int, g: float) -> np.ndarray:
    """The logits to sample from: as they are, or with guidance u + g * (c - u) of the first n rows (c, with
    the tokens) and the last n (u, without)."""
    if g == 1:
        return logits
    c, u = logits[:n], logits[n:]
    return u + g * (c - u)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # the same function as 1/(1+e^-a), without overflow warnings


class _NumpyWeights:
    """The model's weights as NumPy matrices laid out for the cached sampler (masks applied)."""

    def __init__(self, model: PixelCNN) -> None:
        def np_(t: torch.Tensor | None) -> np.ndarray:
            assert t is not None  # every layer here has a bias
            return t.detach().cpu().numpy()

        self.embed = np_(model.embed.weight)
        self.dtype = self.embed.dtype
        self.layers: list[dict[str, np.ndarray]] = []
        for layer in model.layers:
            assert isinstance(layer, GatedLayer)  # what PixelCNN.layers holds (torch types it as Module)
            wv = np_(layer.v_conv.weight * layer.v_conv.mask)  # (2C, C, p+1, k)
            wh = np_(layer.h_conv.weight * layer.h_conv.mask)  # (2C, C, 1, p+1)
            self.layers.append({
                "Wv": np.ascontiguousarray(wv.transpose(2, 3, 1, 0)),  # (p+1, k, C, 2C)
                "bv": np_(layer.v_conv.bias),
                "Wvh": np.ascontiguousarray(np_(layer.v_to_h.weight)[:, :, 0, 0].T),
                "bvh": np_(layer.v_to_h.bias),
                "Wh": np.ascontiguousarray(wh[:, :, 0].transpose(2, 1, 0).reshape(-1, wh.shape[0])),
                "bh": np_(layer.h_conv.bias),
                "Wo": np.ascontiguousarray(np_(layer.h_out.weight)[:, :, 0, 0].T),
                "bo": np_(layer.h_out.bias),
            })
        self.W1 = np.ascontiguousarray(np_(model.out1.weight)[:, :, 0, 0].T)
        self.b1 = np_(model.out1.bias)
        self.W2 = np.ascontiguousarray(np_(model.out2.weight)[:, :, 0, 0].T)
        self.b2 = np_(model.out2.bias)
