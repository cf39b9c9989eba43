"""A character-level LSTM language model, after Karpathy's char-rnn.

Embedding -> stacked LSTM -> linear head over the vocabulary. `generate` is stateful: the prompt runs through
the LSTM once and each new character costs one step, while `generate_naive` re-runs the whole prefix for every
character (the baseline the benchmark and the tests compare against). `CharLM` holds what the RNN and the GPT
(models.own.gpt) share: the vocabulary and how a reply continues a prompt. Sampling draws from a NumPy generator
through `sample_logits`, which the PixelCNN and WaveNet share, so a seed fixes the output on any path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

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
WORD_SLACK = 32  # characters a reply may run past max_new_tokens to finish its last word


def is_word_char(c: str) -> bool:
    """Letters, digits and the apostrophes and hyphens inside words ("mak'st", "to-night")."""
    return c.isalnum() or c in "'-"


def trim_to_word(text: str) -> str:
    """`text` without a trailing partial word (the whole text if it has no word boundary)."""
    if not text or not is_word_char(text[-1]):
        return text
    cut = max((i for i, c in enumerate(text) if not is_word_char(c)), default=-1)
    return text[: cut + 1] if cut >= 0 else text


class CharLM(nn.Module):
    """What the char-RNN and the GPT share: the vocabulary, and continuing a prompt.

    The prompt is the context and the reply only its continuation. A prompt that ends in a letter or digit is
    taken to end with a whole word (people type whole words), so the first character of the reply is never one;
    a prompt's characters outside the vocabulary are normalised (models.own.texts.normalise) and the rest become
    spaces. With `whole_words`, the reply runs up to WORD_SLACK characters past `max_new_tokens` to finish its
    last word, and drops the partial word if that is not enough. Subclasses give `_start` (the prompt's last
    logits and a state), `_step` (one more character) and `_last_logits` (a whole prefix after a prompt of
    n_prompt ids, no state).
    """

    config: Any

    def _init_vocab(self) -> None:
        self.stoi = {c: i for i, c in enumerate(self.config.chars)}
        self._word_ids = np.array([is_word_char(c) and c not in "'-" for c in self.config.chars])

    def encode(self, text: str) -> list[int]:
        """Ids of `text`, normalised to the vocabulary; characters it still lacks become spaces or are dropped."""
        from models.own.texts import normalise

        space = self.stoi.get(" ")
        ids = [self.stoi.get(c, space) for c in normalise(text)]
        return [i for i in ids if i is not None]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.config.chars[i] for i in ids)

    def _prime(self, prompt: str, rng: np.random.Generator) -> list[int]:
        ids = self.encode(prompt)
        return ids or [int(self.stoi.get("\n", rng.integers(self.config.vocab_size)))]

    def _pick(self, logits: torch.Tensor, out: list[int], ends_in_word: bool, rng: np.random.Generator,
              temperature: float, top_k: int | None) -> int:
        z = logits.double().cpu().numpy().reshape(1, -1)
        if not out and ends_in_word:
            z = np.where(self._word_ids[None], -np.inf, z)
        return int(sample_logits(z, rng, temperature, top_k)[0])

    def _done(self, out: list[int], n: int, whole_words: bool) -> bool:
        if len(out) < n:
            return False
        return not whole_words or len(out) >= n + WORD_SLACK or not is_word_char(self.config.chars[out[-1]])

    def _finish(self, out: list[int], n: int, whole_words: bool) -> str:
        text = self.decode(out)
        return trim_to_word(text) if whole_words and len(out) >= n else text

    def _start(self, ids: list[int]) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def _step(self, nxt: int, state: Any, ids: list[int]) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def _last_logits(self, ids: list[int], n_prompt: int) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        callback: Callable[[str], bool | None] | None = None,
        whole_words: bool = False,
    ) -> str:
        """Continue `prompt`, carrying a state (the LSTM's, the GPT's key/value cache): one step a character.

        `callback(text_so_far)` runs after every character; returning True stops early.
        """
        self.eval()
        rng = np.random.default_rng(seed)
        ids = self._prime(prompt, rng)
        ends_in_word = bool(prompt) and prompt[-1].isalnum()
        logits, state = self._start(ids)
        out: list[int] = []
        while not self._done(out, max_new_tokens, whole_words):
            nxt = self._pick(logits, out, ends_in_word, rng, temperature, top_k)
            out.append(nxt)
            ids.append(nxt)
            if callback is not None and callback(self.decode(out)):
                return self.decode(out)
            if not self._done(out, max_new_tokens, whole_words):
                logits, state = self._step(nxt, state, ids)
        return self._finish(out, max_new_tokens, whole_words)

    @torch.no_grad()
    def generate_naive(
        self, prompt: str, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
        seed: int | None = None, whole_words: bool = False,
    ) -> str:
        """The same samples as `generate`, re-running the whole prefix for every character."""
        self.eval()
        rng = np.random.default_rng(seed)
        ids = self._prime(prompt, rng)
        ends_in_word = bool(prompt) and prompt[-1].isalnum()
        out: list[int] = []
        while not self._done(out, max_new_tokens, whole_words):
            nxt = self._pick(self._last_logits(ids + out, len(ids)), out, ends_in_word, rng, temperature, top_k)
            out.append(nxt)
        return self._finish(out, max_new_tokens, whole_words)


class CharRNN(CharLM):
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
        self._init_vocab()

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

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], device=self.lm_head.weight.device)

    def _start(self, ids: list[int]) -> tuple[torch.Tensor, State]:
        logits, _, state = self(self._tensor(ids))
        return logits[0, -1], state

    def _step(self, nxt: int, state: State, ids: list[int]) -> tuple[torch.Tensor, State]:
        logits, _, state = self(self._tensor([nxt]), state=state)
        return logits[0, -1], state

    def _last_logits(self, ids: list[int], n_prompt: int) -> torch.Tensor:
        return self(self._tensor(ids))[0][0, -1]
