"""A character-level LSTM language model, after Karpathy's char-rnn.

Embedding -> stacked LSTM -> linear head over the vocabulary. `generate` is stateful: the prompt runs through
the LSTM once and each new character costs one step, while `generate_naive` re-runs the whole prefix for every
character (the baseline the benchmark and the tests compare against). Sampling draws from a NumPy generator
through `sample_logits`, which the PixelCNN and WaveNet share, so a seed fixes the output on any path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sample_logits(
    logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None
) -> np.ndarray:
    """Draw one index per row of `logits` (B, V) by inverse CDF, in float64 so every path agrees."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature <= 0:
        rng.random(z.shape[0])  # keep the stream aligned with sampled runs
        return z.argmax(axis=1)
    z = z / temperature
    if top_k is not None and 0 < top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    u = rng.random(z.shape[0]) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), z.shape[1] - 1)


@dataclass
class CharRNNConfig:
    chars: str = ""  # the vocabulary, one character per id
    n_embd: int = 64
    n_hidden: int = 256
    n_layer: int = 2
    dropout: float = 0.1

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def to_dict(self) -> dict:
        return asdict(self)


State = tuple[torch.Tensor, torch.Tensor]


class CharRNN(nn.Module):
    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.lstm = nn.LSTM(
            config.n_embd, config.n_hidden, config.n_layer, batch_first=True,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(config.n_hidden, config.vocab_size)
        self.stoi = {c: i for i, c in enumerate(config.chars)}

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        """idx (B, T) -> logits (B, T, V), the mean cross-entropy against targets, and the LSTM state."""
        h, state = self.lstm(self.wte(idx), state)
        logits = self.lm_head(self.drop(h))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss, state

    def encode(self, text: str) -> list[int]:
        """Ids of the characters the vocabulary knows; unknown ones become spaces or are dropped."""
        space = self.stoi.get(" ")
        ids = [self.stoi.get(c, space) for c in text]
        return [i for i in ids if i is not None]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.config.chars[i] for i in ids)

    def _prime(self, prompt: str, rng: np.random.Generator) -> list[int]:
        ids = self.encode(prompt)
        return ids or [int(self.stoi.get("\n", rng.integers(self.config.vocab_size)))]

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        callback: Callable[[str], bool | None] | None = None,
    ) -> str:
        """Continue `prompt`, carrying the LSTM state so each character costs one step.

        `callback(text_so_far)` runs after every character; returning True stops early.
        """
        self.eval()
        rng = np.random.default_rng(seed)
        ids = self._prime(prompt, rng)
        device = self.lm_head.weight.device
        logits, _, state = self(torch.tensor([ids], device=device))
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(sample_logits(logits[:, -1].cpu().numpy(), rng, temperature, top_k)[0])
            out.append(nxt)
            if callback is not None and callback(self.decode(out)):
                break
            logits, _, state = self(torch.tensor([[nxt]], device=device), state=state)
        return self.decode(out)

    @torch.no_grad()
    def generate_naive(
        self, prompt: str, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """The same samples as `generate`, re-running the whole prefix for every character."""
        self.eval()
        rng = np.random.default_rng(seed)
        ids = self._prime(prompt, rng)
        device = self.lm_head.weight.device
        out: list[int] = []
        for _ in range(max_new_tokens):
            logits, _, _ = self(torch.tensor([ids + out], device=device))
            out.append(int(sample_logits(logits[:, -1].cpu().numpy(), rng, temperature, top_k)[0]))
        return self.decode(out)
