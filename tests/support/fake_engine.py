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



class OneSequence:
    """A FakeEngine as the scheduler's MultiSequenceEngine with one slot, so the production
    driver (ra_lite.runtime.scheduler) runs the decoder on it as it runs every local judgment.
    Calls go to the FakeEngine itself: tests may script its sample() or bias its logits, and
    seed it with set_sampling() before driving (the driver leaves its RNG alone)."""

    def __init__(self, engine: FakeEngine, n_batch: int = 1 << 20):
        self.fake = engine
        self.n_ctx = engine.n_ctx
        self.n_batch = n_batch
        self._rows: dict[int, list[int]] = {}     # batch index -> the context at that row

    def load_prefix(self, tokens):
        raise AssertionError("OneSequence is used without a shared prefix")

    def attach_prefix(self, slot, n_tokens):
        raise AssertionError("OneSequence is used without a shared prefix")

    def copy_tokens(self, source, slot, n_tokens):
        raise AssertionError("OneSequence has one slot")

    def set_sampling(self, slot, settings):
        pass

    def decode(self, entries):
        (entry,) = entries
        assert entry.pos == len(self.fake.context), (entry.pos, len(self.fake.context))
        self.fake.feed(entry.tokens)
        first = len(entry.tokens) - entry.n_outputs
        self._rows = {j: self.fake.context[:entry.pos + j + 1]
                      for j in range(first, len(entry.tokens))}
        return 0

    def _read(self, batch_index, read):
        assert batch_index in self._rows, f"no logits at batch index {batch_index}"
        full, self.fake.context = self.fake.context, self._rows[batch_index]
        try:
            return read()
        finally:
            self.fake.context = full

    def sample(self, slot, batch_index):
        return self._read(batch_index, self.fake.sample)

    def logits(self, batch_index, token_ids):
        return self._read(batch_index, lambda: self.fake.logits(token_ids))

    def release(self, slot, from_pos=0):
        del self.fake.context[from_pos:]


def drive(engine: FakeEngine, steps):
    """Run one step generator on a FakeEngine through the production scheduler; its result."""
    from ra_lite.runtime.decode import SamplingSettings
    from ra_lite.runtime.scheduler import ListSource, SequenceTask, SlotScheduler

    outcome = {}

    def finish(result, error):
        outcome["result"], outcome["error"] = result, error

    task = SequenceTask([], SamplingSettings(), steps, engine.n_ctx, finish)
    SlotScheduler(OneSequence(engine), 1, []).run(ListSource([task]))
    if outcome["error"] is not None:
        raise outcome["error"]
    return outcome["result"]


def decode(engine: FakeEngine, prompt_tokens, masked_names, **kwargs):
    """ra_lite's decoder on a FakeEngine (one judgment, one sequence), as the scheduler runs it."""
    from ra_lite.runtime.decode import judgment_steps

    return drive(engine, judgment_steps(engine, prompt_tokens, masked_names, **kwargs))
