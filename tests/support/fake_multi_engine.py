"""A pure-Python multi-sequence engine for scheduler tests (the MultiSequenceEngine protocol).

Each slot behaves exactly like tests.support.fake_engine.FakeEngine on its own sequence (logits
from the sequence's last tokens, a per-judgment RNG), so a judgment scheduled among others must
reproduce the same tokens as on a FakeEngine alone. The fake also checks what llama.cpp would
refuse (positions that do not continue the sequence, batches over n_batch, reading a position
without logits) and simulates a unified KV cache of n_ctx cells: every evaluated token gets a
cell, and attaching the prefix or copying a slot's first tokens shares cells, as llama.cpp's
unified cache does, so the cells in use are the distinct cells any sequence holds.
"""

from __future__ import annotations

import numpy as np

from tests.support.fake_engine import FakeEngine


class FakeMultiEngine:
    def __init__(self, n_ctx: int = 100_000, n_batch: int = 64, refuse_decodes: int = 0):
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.vocab = FakeEngine()            # tokenizer side, for judgment_steps
        self.prefix: list[int] = []
        self.prefix_cells: list[int] = []
        self.seqs: dict[int, list[int]] = {}
        self.cells: dict[int, list[int]] = {}   # slot -> the cell id of each of its tokens
        self.copies: list[tuple[int, int, int]] = []   # (from slot, to slot, tokens) shared
        self._next_cell = 0
        self.engines: dict[int, FakeEngine] = {}
        self.batches: list[list[tuple[int, int, bool]]] = []   # (slot, tokens, output) per entry
        self.refused: list[int] = []         # sizes of batches answered "no KV slot"
        self.refuse_decodes = refuse_decodes  # answer 1 to this many multi-token batches
        self.max_active = 0
        self._outputs: dict[int, tuple[int, list[int]]] = {}

    def load_prefix(self, tokens: list[int]) -> None:
        self.prefix = list(tokens)
        self.prefix_cells = self._new_cells(len(tokens))

    def _new_cells(self, n: int) -> list[int]:
        self._next_cell += n
        return list(range(self._next_cell - n, self._next_cell))

    def attach_prefix(self, slot: int, n_tokens: int) -> None:
        assert not self.seqs.get(slot), "attach into a used slot"
        self.seqs[slot] = self.prefix[:n_tokens]
        self.cells[slot] = self.prefix_cells[:n_tokens]

    def copy_tokens(self, source: int, slot: int, n_tokens: int) -> None:
        assert not self.seqs.get(slot), "copy into a used slot"
        assert source != slot and 0 < n_tokens <= len(self.seqs.get(source, [])), \
            f"slot {source} has not evaluated {n_tokens} tokens"
        self.seqs[slot] = self.seqs[source][:n_tokens]
        self.cells[slot] = self.cells[source][:n_tokens]
        self.copies.append((source, slot, n_tokens))

    def set_sampling(self, slot: int, settings) -> None:
        engine = FakeEngine()
        engine.set_sampling(settings)
        self.engines[slot] = engine

    def used_cells(self, extra: dict[int, int] | None = None) -> int:
        extra = extra or {}
        held = set(self.prefix_cells)
        for cells in self.cells.values():
            held.update(cells)
        return len(held) + sum(extra.values())

    def decode(self, entries) -> int:
        n = sum(len(e.tokens) for e in entries)
        assert 0 < n <= self.n_batch, f"batch of {n} tokens (n_batch {self.n_batch})"
        assert len({e.slot for e in entries}) == len(entries), "a slot twice in one batch"
        adding = {e.slot: len(e.tokens) for e in entries}
        if self.used_cells(adding) > self.n_ctx or (self.refuse_decodes and n > 1):
            self.refuse_decodes = max(0, self.refuse_decodes - 1)
            self.refused.append(n)
            return 1
        self._outputs = {}
        index = 0
        for e in entries:
            seq = self.seqs.setdefault(e.slot, [])
            assert e.pos == len(seq), f"slot {e.slot}: position {e.pos}, sequence has {len(seq)}"
            seq.extend(e.tokens)
            self.cells.setdefault(e.slot, []).extend(self._new_cells(len(e.tokens)))
            for j in range(len(e.tokens) - e.n_outputs, len(e.tokens)):
                self._outputs[index + j] = (e.slot, seq[:e.pos + j + 1])
            index += len(e.tokens)
        self.batches.append([(e.slot, len(e.tokens), e.n_outputs) for e in entries])
        self.max_active = max(self.max_active, sum(1 for s in self.seqs.values() if s))
        return 0

    def _engine_at(self, index: int, slot: int | None = None) -> FakeEngine:
        assert index in self._outputs, f"no logits at batch index {index}"
        owner, context = self._outputs[index]
        assert slot is None or owner == slot, "sampled another slot's position"
        engine = self.engines[owner]
        engine.context = context
        return engine

    def sample(self, slot: int, batch_index: int) -> int:
        return self._engine_at(batch_index, slot).sample()

    def logits(self, batch_index: int, token_ids: list[int]) -> np.ndarray:
        return self._engine_at(batch_index).logits(token_ids)

    def release(self, slot: int, from_pos: int = 0) -> None:
        seq = self.seqs.get(slot, [])
        del seq[from_pos:]
        del self.cells.get(slot, [])[from_pos:]
