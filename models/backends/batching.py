"""Continuous batching for local causal LMs: many chat requests to one model share each forward pass.

A `Batcher` owns one model and one background thread. The thread runs a step loop over the active sequences:
newcomers are prefilled alone (so their prompt pass is exactly what a solo `generate` does), then joined to
the running batch by left-padding the shorter KV cache; every step feeds each sequence its last token with a
2-D attention mask over the shared cache; finished or cancelled sequences are dropped from the cache at once.
Each request keeps its own sampling parameters and its own `torch.Generator`, so a seed gives the same text
whoever else is in the batch. Tokens stream back through callbacks called on the batcher's thread.

Why not transformers' own `ContinuousBatchingManager` (`init_continuous_batching`, what `transformers serve
--continuous-batching` runs): it does work on CPU in 5.24 (sdpa, no paged kernels needed), but greedy versus
sampling and the seed belong to the whole manager, not to each request (serve's own TODO says as much), a
cancelled request needs its id threaded through, and starting a manager costs seconds. `bench/local_batching.py`
compares the two on the same model.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger("natty.models.batching")


@dataclass
class GenerationRequest:
    """One prompt to continue. Callbacks run on the batcher's thread and must be quick and thread-safe."""

    input_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    eos_token_ids: Iterable[int] = ()
    on_token: Callable[[int], object] = lambda token: None  # what it returns is ignored
    on_done: Callable[[BaseException | None], object] = lambda error: None  # None: finished normally
    should_stop: Callable[[], bool] = lambda: False  # polled once per step; True cancels the request
    _aborted: threading.Event = field(default_factory=threading.Event, repr=False)

    def abort(self) -> None:
        """Drop the request at the next step (used when the waiting coroutine goes away)."""
        self._aborted.set()


class RequestStopped(Exception):
    """Given to `on_done` when `should_stop()` or `abort()` ended a request early."""


class _Sequence:
    def __init__(self, request: GenerationRequest) -> None:
        self.request = request
        self.eos = set(request.eos_token_ids)
        self.generated = 0
        self.cached = 0  # real (unpadded) tokens in the KV cache for this sequence
        self.next_token = -1
        self.done = False  # on_done was called
        self.generator: torch.Generator | None = None
        if request.temperature > 0:
            self.generator = torch.Generator()
            if request.seed is not None:
                self.generator.manual_seed(request.seed)
            else:
                self.generator.seed()

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from this sequence's last-position logits (greedy or sampled)."""
        r = self.request
        if r.temperature <= 0 or self.generator is None:
            return int(torch.argmax(logits))
        scores = logits.float().cpu() / r.temperature
        if r.top_k:
            kth = torch.topk(scores, min(r.top_k, scores.numel())).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if r.top_p is not None and 0 < r.top_p < 1:
            ordered, index = torch.sort(scores, descending=True)
            probs = torch.softmax(ordered, dim=-1)
            drop = probs.cumsum(-1) - probs > r.top_p  # mass before each token; keeps the one crossing top_p
            scores = scores.index_fill(0, index[drop], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def stopped(self) -> bool:
        return self.request._aborted.is_set() or bool(self.request.should_stop())

    def finished(self, token: int) -> bool:
        return token in self.eos or self.generated >= self.request.max_new_tokens


def _growing_layer_class() -> type:
    """A `DynamicLayer` that appends into spare room, built lazily so importing this module needs no transformers."""
    global _GROWING
    if _GROWING is not None:
        return _GROWING
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        # DynamicLayer re-concatenates the whole cache every step; at batch 8 that copy was a fifth of a step.
        def __init__(self) -> None:
            self._k: torch.Tensor | None = None
            self._v: torch.Tensor | None = None
            self._nk = self._nv = 0  # separate, so setting keys first never changes what `values` returns
            super().__init__()

        @staticmethod
        def _room(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None or t.dim() < 2:
                return None
            n = t.shape[-2]
            shape = list(t.shape)
            shape[-2] = n + max(64, n // 2)
            buf = t.new_zeros(shape)
            buf[..., :n, :] = t
            return buf

        @property
        def keys(self) -> torch.Tensor | None:
            return None if self._k is None else self._k[..., : self._nk, :]

        @keys.setter
        def keys(self, t: torch.Tensor | None) -> None:
            self._k = self._room(t)
            self._nk = 0 if t is None or self._k is None else t.shape[-2]

        @property
        def values(self) -> torch.Tensor | None:
            return None if self._v is None else self._v[..., : self._nv, :]

        @values.setter
        def values(self, t: torch.Tensor | None) -> None:
            self._v = self._room(t)
            self._nv = 0 if t is None or self._v is None else t.shape[-2]

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self._k is None or self._v is None:
                self.lazy_initialization(key_states, value_states)
                self.keys, self.values = key_states, value_states
                return self.keys, self.values
            n, m = self._nk, key_states.shape[-2]
            if n + m > self._k.shape[-2]:
                self.keys, self.values = self.keys, self.values  # reallocate with more room
            self._k[..., n : n + m, :] = key_states
            self._v[..., n : n + m, :] = value_states
            self._nk = self._nv = n + m
            return self.keys, self.values

    _GROWING = GrowingLayer
    return GrowingLayer


_GROWING: type | None = None


def _cache_layers(cache: Any, convert: bool = False) -> list[Any] | None:
    """The cache's per-layer key/value holders, or None when they cannot be padded and joined safely."""
    from transformers.cache_utils import DynamicLayer

    growing = _growing_layer_class()
    layers = getattr(cache, "layers", None)
    # Sliding-window, linear-attention or quantized layers keep state that left-padding would corrupt.
    if not layers or any(type(layer) not in (DynamicLayer, growing) for layer in layers):
        return None
    if convert:
        for i, layer in enumerate(layers):
            if type(layer) is DynamicLayer and layer.is_initialized:
                new = growing()
                new.lazy_initialization(layer.keys, layer.values)
                new.keys, new.values = layer.keys, layer.values
                layers[i] = new
    return list(layers)


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class PackedLinear(torch.nn.Module):
    """A linear layer whose weight is held in oneDNN's own layout, for decode steps on a CPU.

    At the few rows of a decode step (one per sequence in the batch), MKL's dense GEMM re-lays out the weight on
    every call and a batch of 4 to 8 costs about three times one row; oneDNN on a weight laid out once, for the
    batch size it will mostly see, does not. The layer calls oneDNN's prepacked linear (`_linear_pointwise`, the
    op torch.compile's CPU freezing pass emits) on dense activations, so no step pays to convert rows in and out
    of oneDNN's tensor type; a GPT-2-small 3072x768 layer at 8 rows: dense 556 us, the older `mkldnn_linear` with
    its conversions 491 us, this 274 us. Where that op is missing, the conversion path serves. The results agree
    with the dense layer's to float rounding (about 1e-4 here).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, batch_size: int = 8) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        weight = weight.detach().contiguous()
        bias = torch.zeros(self.out_features, dtype=weight.dtype) if bias is None else bias.detach().contiguous()
        self.prepacked = _prepack(weight, batch_size)
        # `weight` keeps its name, dtype and shape for code that looks at them (it is not a dense tensor any more)
        self.register_buffer("weight", weight.to_mkldnn() if self.prepacked is None else self.prepacked,
                             persistent=False)
        self.register_buffer("bias", bias if self.prepacked is not None else bias.to_mkldnn(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).contiguous()
        weight, bias = self.weight, self.bias
        assert isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)  # buffers (torch types them loosely)
        if self.prepacked is not None:
            out = torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")
        else:
            out = torch._C._nn.mkldnn_linear(rows.to_mkldnn(), weight, bias).to_dense()
        return out.reshape(*shape[:-1], self.out_features)


def _prepack(weight: torch.Tensor, batch_size: int) -> torch.Tensor | None:
    """The weight reordered for oneDNN's prepacked linear, or None where this torch lacks that op."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)
        probe = torch.zeros(1, weight.shape[1], dtype=weight.dtype)
        torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return None
    return packed


def pack_linears(model: torch.nn.Module, batch_size: int = 8) -> int:
    """Swap the model's float32/bfloat16 linear layers (`nn.Linear`, and transformers' `Conv1D` that GPT-2 uses) on
    the CPU for `PackedLinear`s, once, after a probe shows the packed model computes the same logits; the number
    swapped (0: not on a CPU with oneDNN, nothing to swap, or the probe disagreed and the model is as it was)."""
    if not torch.backends.mkldnn.is_available():
        return 0
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is there wherever a causal LM is
        Conv1D = ()  # type: ignore[assignment,misc]  # noqa: N806
    swaps: list[tuple[torch.nn.Module, str, torch.nn.Module, torch.Tensor]] = []
    for parent in model.modules():
        for name, child in parent.named_children():
            weight = getattr(child, "weight", None)
            if (isinstance(child, (torch.nn.Linear, Conv1D)) and isinstance(weight, torch.Tensor)
                    and weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)
                    and weight.dim() == 2 and not weight.is_mkldnn):
                swaps.append((parent, name, child, weight))
    if not swaps:
        return 0
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 2)
    probe = torch.arange(8, dtype=torch.long).remainder(max(1, vocab))[None]
    try:
        with torch.inference_mode():
            before = model(input_ids=probe).logits.float()
            for parent, name, child, weight in swaps:
                bias = getattr(child, "bias", None)
                setattr(parent, name, PackedLinear(weight.t() if isinstance(child, Conv1D) else weight,
                                                   bias if isinstance(bias, torch.Tensor) else None, batch_size))
            after = model(input_ids=probe).logits.float()
        tolerance = 1e-3 if swaps[0][3].dtype == torch.float32 else 5e-2
        if not torch.allclose(before, after, rtol=tolerance, atol=tolerance * float(before.abs().max())):
            raise ValueError(f"packed logits differ by {float((before - after).abs().max()):.3g}")
    except Exception as exc:  # noqa: BLE001 - any surprise: keep the model exactly as it was loaded
        for parent, name, child, _ in swaps:
            setattr(parent, name, child)
        log.info("kept the dense linear layers: %s", exc)
        return 0
    return len(swaps)


class Batcher:
    """Serves `GenerationRequest`s for one causal LM with continuous batching on a background thread."""

    def __init__(self, model: Any, *, max_batch: int = 8, name: str = "model") -> None:
        self.model = model
        self.max_batch = max(1, max_batch)
        self.name = name
        self._cond = threading.Condition()
        self._pending: list[_Sequence] = []
        self._active: list[_Sequence] = []
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (batch, cache length): 1 for real tokens, 0 for padding
        self._joinable = True  # False once the model's cache turned out not to be paddable
        self._closed = False
        self._thread: threading.Thread | None = None
        # transformers 5.x renamed `past_key_values` to `cache`; older models still take the old name.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self.steps = 0  # decode steps run, for tests and stats
        self.max_seen_batch = 0

    @property
    def device(self) -> torch.device:
        return getattr(self.model, "device", torch.device("cpu"))

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; it joins the running batch at the next step."""
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._pending.append(_Sequence(request))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"batcher:{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the thread; requests still queued or running end with `RequestStopped`."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    # ---- the step loop, on the batcher's thread ----

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._pending and not self._active and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        leftovers, self._pending = self._pending + self._active, []
                        self._active = []
                        break
                    room = self.max_batch - len(self._active) if self._joinable else int(not self._active)
                    newcomers, self._pending = self._pending[:room], self._pending[room:]
                try:
                    self._admit_all(newcomers)
                    if self._active:
                        self._step()
                except Exception as exc:  # a failed forward pass fails everyone in it, not the thread
                    log.exception("generation step failed for %s", self.name)
                    failed = self._active + [s for s in newcomers if s not in self._active]
                    self._active, self._cache, self._mask = [], None, None
                    for seq in failed:
                        self._finish(seq, exc)
        for seq in leftovers:
            self._finish(seq, RequestStopped("the model was unloaded"))

    def _finish(self, seq: _Sequence, error: BaseException | None) -> None:
        if seq.done:  # a newcomer that finished at its prefill, then a later newcomer's pass failed
            return
        seq.done = True
        try:
            seq.request.on_done(error)
        except Exception:
            log.exception("on_done callback failed")

    def _emit(self, seq: _Sequence, token: int) -> bool:
        """Record a new token; True when the sequence is done."""
        seq.generated += 1
        seq.next_token = token
        done = seq.finished(token)
        if token not in seq.eos:
            try:
                seq.request.on_token(token)
            except Exception:
                log.exception("on_token callback failed")
        return done

    def _admit_all(self, newcomers: list[_Sequence]) -> None:
        """Prefill each newcomer alone, then join all of them to the running batch in one concatenation (one per
        newcomer copied the whole batch's cache again each time)."""
        prefilled: list[tuple[_Sequence, Any, torch.Tensor]] = []
        for seq in newcomers:
            if seq.stopped():
                self._finish(seq, RequestStopped("cancelled"))
                continue
            ids = torch.tensor([seq.request.input_ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, use_cache=True)
            seq.cached = ids.shape[1]
            if self._emit(seq, seq.pick(out.logits[0, -1])):
                self._finish(seq, None)
                continue
            prefilled.append((seq, _returned_cache(out), torch.ones(1, ids.shape[1], dtype=torch.long,
                                                                    device=self.device)))
        if not prefilled:
            return
        if not self._active:
            seq, self._cache, self._mask = prefilled.pop(0)
            self._joinable = self._joinable and _cache_layers(self._cache, convert=True) is not None
            self._active.append(seq)
        if prefilled:
            self._join([cache for _, cache, _ in prefilled], [mask for _, _, mask in prefilled])
            self._active.extend(seq for seq, _, _ in prefilled)
        self.max_seen_batch = max(self.max_seen_batch, len(self._active))

    def _join(self, caches: list[Any], masks: list[torch.Tensor]) -> None:
        """Append prefilled sequences' caches to the running batch, left-padding each to the longest."""
        assert self._mask is not None
        ours = _cache_layers(self._cache)
        theirs = [_cache_layers(cache) for cache in caches]  # copied into ours below, so left as they are
        assert ours is not None and all(layers is not None for layers in theirs)
        length = max(m.shape[1] for m in [self._mask, *masks])

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = length - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for i, a in enumerate(ours):
            others = [layers[i] for layers in theirs if layers is not None]
            a.keys = torch.cat([pad(a.keys, -2), *(pad(b.keys, -2) for b in others)], dim=0)
            a.values = torch.cat([pad(a.values, -2), *(pad(b.values, -2) for b in others)], dim=0)
        self._mask = torch.cat([pad(self._mask, 1), *(pad(m, 1) for m in masks)], dim=0)

    def _step(self) -> None:
        assert self._mask is not None
        active = self._active
        ids = torch.tensor([[s.next_token] for s in active], dtype=torch.long, device=self.device)
        positions = torch.tensor([[s.cached] for s in active], dtype=torch.long, device=self.device)
        mask = torch.cat([self._mask, self._mask.new_ones(len(active), 1)], dim=1)
        kwargs = {self._cache_kwarg: self._cache}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kwargs)
        self.steps += 1
        self._cache, self._mask = _returned_cache(out), mask
        logits = out.logits[:, -1, :]
        keep: list[int] = []
        for i, seq in enumerate(active):
            seq.cached += 1
            if seq.stopped():
                self._finish(seq, RequestStopped("cancelled"))
            elif self._emit(seq, seq.pick(logits[i])):
                self._finish(seq, None)
            else:
                keep.append(i)
        if len(keep) < len(active):
            self._retire(keep)

    def _retire(self, keep: list[int]) -> None:
        """Drop finished rows from the cache, then the leading columns that are padding for every row left."""
        self._active = [self._active[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        assert self._mask is not None
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask[index]
        start = int(torch.nonzero(self._mask.sum(0))[0])
        if start > 0:
            for layer in _cache_layers(self._cache) or []:
                layer.keys = layer.keys[..., start:, :]
                layer.values = layer.values[..., start:, :]
            self._mask = self._mask[:, start:]
