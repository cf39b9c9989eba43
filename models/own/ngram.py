"""Character n-gram baselines for natty's own text models: the numbers the char-RNN and the GPT must beat.

`CharNGram(n)` is an interpolated Kneser-Ney model (Chen and Goodman 1998) with one discount D = 0.75 per order:
the highest order uses counts, the lower orders continuation counts (how many different characters precede a
string), and order 0 is uniform over the vocabulary, so no character of the vocabulary has probability zero.
n = 1 is the unigram model (frequencies interpolated with the uniform). Pure Python and dictionaries: counting
the Shakespeare training split (4.4 M characters) to order 5 takes a few tens of seconds.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

DISCOUNT = 0.75


class CharNGram:
    def __init__(self, n: int, vocab: str, discount: float = DISCOUNT) -> None:
        self.n, self.vocab, self.d = n, vocab, discount
        # per order k (1..n): counts of k-character strings (raw at k = n, continuation below), and per
        # context (k - 1 characters): the total of those counts and how many distinct characters follow
        self.counts: list[dict[str, int]] = []
        self.totals: list[dict[str, int]] = []
        self.types: list[dict[str, int]] = []

    def fit(self, text: str) -> CharNGram:
        raw = Counter(text[i : i + self.n] for i in range(len(text) - self.n + 1))
        by_order: dict[int, dict[str, int]] = {self.n: dict(raw)}
        for k in range(self.n - 1, 0, -1):  # continuation counts: the distinct characters seen before a string
            cont: dict[str, int] = defaultdict(int)
            for s in by_order[k + 1]:
                cont[s[1:]] += 1
            by_order[k] = dict(cont)
        self.counts, self.totals, self.types = [], [], []
        for k in range(1, self.n + 1):
            totals: dict[str, int] = defaultdict(int)
            types: dict[str, int] = defaultdict(int)
            for s, c in by_order[k].items():
                totals[s[:-1]] += c
                types[s[:-1]] += 1
            self.counts.append(by_order[k])
            self.totals.append(dict(totals))
            self.types.append(dict(types))
        return self

    def prob(self, history: str, ch: str) -> float:
        """P(ch | the last n - 1 characters of history)."""
        p = 1.0 / len(self.vocab)
        history = history[-(self.n - 1) :] if self.n > 1 else ""
        for k in range(1, self.n + 1):  # from the unigram up, each order interpolated with the one below
            ctx = history[len(history) - (k - 1) :] if k > 1 else ""
            if len(ctx) < k - 1:
                break
            total = self.totals[k - 1].get(ctx, 0)
            if total == 0:
                break  # an unseen context: the orders above it are unseen too
            c = self.counts[k - 1].get(ctx + ch, 0)
            p = max(c - self.d, 0.0) / total + self.d * self.types[k - 1][ctx] / total * p
        return p

    def bits_per_char(self, text: str, start: int = 1) -> float:
        """Mean -log2 P of text[start:], each character given the text before it."""
        total = 0.0
        for i in range(start, len(text)):
            total -= math.log2(self.prob(text[max(0, i - self.n + 1) : i], text[i]))
        return total / max(1, len(text) - start)

    def nll_bits(self, context: str, continuation: str) -> float:
        """-log2 P(continuation | context), summed."""
        text = context + continuation
        return -sum(math.log2(self.prob(text[max(0, i - self.n + 1) : i], text[i]))
                    for i in range(len(context), len(text)))
