"""A small character-level GPT, after Karpathy's nanoGPT (Radford et al. 2019, "Language Models are Unsupervised
Multitask Learners"; the transformer decoder of Vaswani et al. 2017).

Token and position embeddings -> n_layer pre-norm blocks (causal self-attention, then an MLP, each with a
residual) -> layer norm -> linear head over the characters. `generate` keeps each layer's keys and values, so a
new character costs one position's work; `generate_naive` re-runs the whole window for every character. Both
slide the window the same way when it fills (keep the last half, see `_window_start`), so they draw the same
samples for the same seed; the prompt handling and word-boundary ending are CharLM's (models.own.charrnn).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.own.charrnn import CharLM

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values (1, n_head, T, head_dim)


@dataclass
class GPTConfig:
    chars: str = ""  # the vocabulary, one character per id
    block_size: int = 256  # the longest context, in characters
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, C), with the keys and values of the positions before it -> (B, T, C) and the new keys and
        values (past and these together)."""
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        p = k.size(2) - t  # positions already in the cache
        if p == 0:
            mask = None
        else:  # query i (absolute p + i) sees keys 0 .. p + i
            mask = torch.ones(t, p + t, dtype=torch.bool, device=x.device).tril(diagonal=p)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=p == 0 and t > 1,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_drop(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, kv = self.attn(self.ln_1(x), past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), kv


class GPT(CharLM):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self._init_vocab()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, past: KV | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> logits (B, T, V) and the mean cross-entropy against targets (None without them)."""
        logits, loss, _ = self.forward_cached(idx, targets, past)
        return logits, loss

    def forward_cached(self, idx: torch.Tensor, targets: torch.Tensor | None = None, past: KV | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor | None, KV]:
        """As forward, after the positions whose keys and values `past` holds; also returns the new cache."""
        p = 0 if past is None else past[0][0].size(2)
        t = idx.size(1)
        if p + t > self.config.block_size:
            raise ValueError(f"{p + t} positions, more than block_size {self.config.block_size}")
        pos = torch.arange(p, p + t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        cache: KV = []
        for i, block in enumerate(self.h):
            x, kv = block(x, None if past is None else past[i])
            cache.append(kv)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, cache

    # -- generation: CharLM's loop over these --

    def _window_start(self, start: int, length: int) -> int:
        """Where the context window begins once it holds `length` ids: it stays put until it would exceed the
        block, then jumps to keep the last half (one full re-run every block_size / 2 characters)."""
        return start if length - start <= self.config.block_size else length - self.config.block_size // 2

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.lm_head.weight.device)

    def _start(self, ids: list[int]) -> tuple[torch.Tensor, tuple[int, KV]]:
        start = max(0, len(ids) - self.config.block_size)
        logits, _, cache = self.forward_cached(self._tensor(ids[start:]))
        return logits[0, -1], (start, cache)

    def _step(self, nxt: int, state: tuple[int, KV], ids: list[int]) -> tuple[torch.Tensor, tuple[int, KV]]:
        start, cache = state
        new_start = self._window_start(start, len(ids))
        if new_start != start:  # the window moved: positions changed, so the cache is rebuilt
            logits, _, cache = self.forward_cached(self._tensor(ids[new_start:]))
        else:
            logits, _, cache = self.forward_cached(self._tensor([nxt]), past=cache)
        return logits[0, -1], (new_start, cache)

    def _last_logits(self, ids: list[int], n_prompt: int) -> torch.Tensor:
        # The cached path's window: replay the window rule from the prompt's length onwards.
        start = max(0, n_prompt - self.config.block_size)
        for length in range(n_prompt + 1, len(ids) + 1):
            start = self._window_start(start, length)
        return self(self._tensor(ids[start:]))[0][0, -1]
