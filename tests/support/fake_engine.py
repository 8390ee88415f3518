"""A pure-Python engine for decoder tests: a small vocabulary and random logits.

Tokenization is greedy longest-match over a vocabulary that deliberately contains tokens which
straddle the answer's structure (`",`, `1"`, `</thi`, multi-digit numbers), so the decoder's
joint tokenization of forced text and options is exercised without a real model.
"""

from __future__ import annotations

import numpy as np

PIECES = (
    [chr(c) for c in range(32, 127)] + ["\n", "\n\n", "  "]
    + ['"model-', '":', '",', ', "', '1"', '10', '12', '{\n', ']\n', 'model', 'scores',
       'best-to-worst', "</thi", "nk>", "<think>", "</think>", "<|eot|>"]
)


class FakeEngine:
    def __init__(self, seed: int = 0, eog_bias: float = 0.0, close_bias: float = 0.0):
        self.vocab = PIECES
        self.ids = {piece: i for i, piece in enumerate(self.vocab)}
        self.rng = np.random.default_rng(seed)
        self.eog = self.ids["<|eot|>"]
        self.bias = np.zeros(len(self.vocab))
        self.bias[self.eog] = eog_bias
        self.bias[self.ids["</think>"]] = close_bias
        self.context: list[int] = []
        self.evaluated_batches: list[int] = []
        self.n_ctx = 100_000

    # tokenization: greedy longest match
    def tokenize(self, text: str) -> list[int]:
        tokens, i = [], 0
        longest = max(len(p) for p in self.vocab)
        while i < len(text):
            for size in range(min(longest, len(text) - i), 0, -1):
                piece = text[i:i + size]
                if piece in self.ids:
                    tokens.append(self.ids[piece])
                    i += size
                    break
            else:
                raise ValueError(f"untokenizable {text[i]!r}")
        return tokens

    def piece(self, token: int) -> bytes:
        return self.vocab[token].encode()

    def is_end_of_generation(self, token: int) -> bool:
        return token == self.eog

    def single_token(self, text: str) -> int | None:
        return self.ids.get(text)

    def start(self, prompt_tokens: list[int]) -> int:
        self.context = list(prompt_tokens)
        return 0

    def feed(self, tokens: list[int]) -> None:
        self.context.extend(tokens)
        self.evaluated_batches.append(len(tokens))

    def _logits(self) -> np.ndarray:
        # Deterministic in the context, so a replay sees the same distributions.
        seed = hash(tuple(self.context[-8:])) & 0xFFFFFFFF
        return np.random.default_rng(seed).standard_normal(len(self.vocab)) * 2 + self.bias

    def logits(self, token_ids: list[int]) -> np.ndarray:
        return self._logits()[token_ids]

    def set_sampling(self, settings) -> None:
        self.rng = np.random.default_rng(settings.seed)

    def sample(self) -> int:
        z = self._logits()
        p = np.exp(z - z.max())
        return int(self.rng.choice(len(p), p=p / p.sum()))
