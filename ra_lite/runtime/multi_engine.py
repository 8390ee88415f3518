"""A llama.cpp context with several sequences, for the slot scheduler (scheduler.py).

Built on the model a LlamaEngine already loaded (no second copy of the weights) with the
engine's own context settings (n_ctx, n_batch, threads, flash attention), plus `n_seq_max` =
slots + 1 and a unified KV cache: sequence 0 holds the shared prompt prefix, sequence s + 1 is
slot s. The unified cache is what makes sharing the prefix cheap: `llama_memory_seq_cp` then only
tags the prefix's cells with the slot's id (see /work/shared/notes/llama-cpp-lowlevel.md), and all
sequences draw on the same n_ctx cells, which the scheduler budgets.

The context has its own KV cache beside the engine's single-sequence one (llama-cpp-python's
Llama cannot create a multi-sequence context), so parallel judging costs one more n_ctx of KV.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ra_lite.errors import RaLiteError
from ra_lite.runtime.decode import SamplingSettings
from ra_lite.runtime.scheduler import BatchEntry

PREFIX_SEQ = 0


class MultiSequenceContext:
    """The MultiSequenceEngine protocol (scheduler.py) on llama.cpp."""

    def __init__(self, engine, slots: int):
        import llama_cpp

        self._lib = llama_cpp
        llm = engine.llm
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_seq_max = slots + 1
        params.kv_unified = True
        self._params = params
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RaLiteError(f"llama.cpp could not create a context for {slots} parallel "
                              f"sequences of {params.n_ctx} tokens",
                              "lower --parallel or --n-ctx; run with --verbose for llama.cpp's log")
        self.slots = slots
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._samplers: dict[int, object] = {}
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
        # The engine's prompt cache setting and model file: the prefix sequence is restored from
        # (and saved to) the same saved states as the sequential path. A unified KV cache has
        # one stream, so its layout key equals the single-sequence engine's for the same n_ctx.
        self._prompt_cache = bool(getattr(engine, "prompt_cache", False))
        self._model_path = getattr(getattr(engine, "info", None), "path", None)
        self._notify = getattr(engine, "_notify", None) or (lambda message: None)
        self.prefix_event = ""        # what loading the prefix did: hit, stored, evaluated…

    # --- the prefix sequence ------------------------------------------------------------------
    def load_prefix(self, tokens: list[int]) -> None:
        """Put the shared prefix into its own sequence once: restored from the prompt cache when
        a saved state matches, else evaluated (no logits needed) and saved for the next run."""
        cache = self._prefix_state_cache() if tokens else None
        if cache is not None and cache.restore(self.ctx, tokens, PREFIX_SEQ):
            self.prefix_event = "hit"
            self._notify(f"prompt cache: restored the {len(tokens)}-token shared prefix")
            return
        self._lib.llama_memory_seq_rm(self._memory, PREFIX_SEQ, -1, -1)
        self._evaluate_prefix(tokens)
        self.prefix_event = "evaluated"
        if cache is not None and cache.store(self.ctx, tokens, PREFIX_SEQ):
            self.prefix_event = "stored"
            self._notify(f"prompt cache: stored the {len(tokens)}-token shared prefix")

    def _prefix_state_cache(self):
        if not self._prompt_cache or self._model_path is None:
            return None
        from ra_lite.runtime.prefix_state import KVLayout, PrefixStateCache

        return PrefixStateCache(self._model_path, KVLayout.of(self.ctx, self._params))

    def _evaluate_prefix(self, tokens: list[int]) -> None:
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            status = self.decode([BatchEntry(-1, chunk, start, False)])
            if status != 0:
                raise RaLiteError(f"llama_decode failed on the shared prompt prefix "
                                  f"(status {status})", "raise --n-ctx or lower --parallel")

    def attach_prefix(self, slot: int, n_tokens: int) -> None:
        self._lib.llama_memory_seq_cp(self._memory, PREFIX_SEQ, slot + 1, 0, n_tokens)

    def copy_tokens(self, source: int, slot: int, n_tokens: int) -> None:
        """Give `slot` the first n_tokens cells of `source` (tags only, in a unified cache)."""
        self._lib.llama_memory_seq_cp(self._memory, source + 1, slot + 1, 0, n_tokens)

    def release(self, slot: int, from_pos: int = 0) -> None:
        self._lib.llama_memory_seq_rm(self._memory, slot + 1, from_pos, -1)

    # --- decoding -----------------------------------------------------------------------------
    def decode(self, entries: list[BatchEntry]) -> int:
        """One llama_decode over every entry (slot -1 is the prefix sequence)."""
        batch = self._batch
        token, pos, n_seq, seq, logits = (batch.token, batch.pos, batch.n_seq_id, batch.seq_id,
                                          batch.logits)
        i = 0
        for entry in entries:
            seq_id = entry.slot + 1
            last = len(entry.tokens) - 1
            for j, t in enumerate(entry.tokens):
                token[i] = t
                pos[i] = entry.pos + j
                n_seq[i] = 1
                seq[i][0] = seq_id
                logits[i] = entry.output and j == last
                i += 1
        if i > self.n_batch:
            raise ValueError(f"batch of {i} tokens exceeds n_batch {self.n_batch}")
        batch.n_tokens = i
        return self._lib.llama_decode(self.ctx, batch)

    def set_sampling(self, slot: int, settings: SamplingSettings) -> None:
        """A fresh native chain per judgment, the same as the sequential engine's."""
        from ra_lite.runtime.engine import native_sampler

        sampler = native_sampler(settings)
        old = self._samplers.pop(slot, None)
        if old is not None:
            old.close()
        self._samplers[slot] = sampler

    def sample(self, slot: int, batch_index: int) -> int:
        return self._lib.llama_sampler_sample(self._samplers[slot].sampler, self.ctx, batch_index)

    def logits(self, batch_index: int, token_ids: list[int]) -> np.ndarray:
        row = self._lib.llama_get_logits_ith(self.ctx, batch_index)
        if not row:
            raise RaLiteError(f"llama.cpp returned no logits for batch position {batch_index}",
                              "report this as a bug")
        view = np.ctypeslib.as_array(ctypes.cast(row, ctypes.POINTER(ctypes.c_float)),
                                     shape=(self.n_vocab,))
        return view[np.asarray(token_ids, dtype=np.int64)].astype(np.float32)

    def close(self) -> None:
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
        if self.ctx:
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self.ctx)
            self.ctx = None
