"""The llama.cpp context every local judgment runs in: several sequences, one unified KV cache.

A LlamaEngine owns exactly one of these (engine.py). The slot scheduler (scheduler.py) drives it
for every judgment: one slot for a plain judgment, K for a judgment under K response orders, P
for `--parallel P`. Sequence 0 holds the shared prompt prefix, sequence s + 1 is slot s. The
unified cache is what makes sharing cheap: `llama_memory_seq_cp` then only tags cells with
another sequence id (see shared/notes/llama-cpp-lowlevel.md), and all sequences draw on the same
n_ctx cells, which the scheduler budgets. So judging P at once costs no second KV cache: only the
cells the P judgments use.

The prefix sequence is restored from the prompt cache (prefix_state.py) when a saved state
matches, else evaluated once and saved for the next process.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ra_lite.errors import RaLiteError
from ra_lite.runtime.decode import SamplingSettings
from ra_lite.runtime.scheduler import BatchEntry

PREFIX_SEQ = 0
N_BATCH = 512            # tokens per llama_decode call (prompt chunks, forced spans, drafts)


class MultiSequenceContext:
    """The MultiSequenceEngine protocol (scheduler.py) on llama.cpp.

    Built on a model llama-cpp-python already loaded (no second copy of the weights) with that
    Llama's context settings (threads, flash attention, K/V types) except n_ctx, the batch size,
    `n_seq_max` = slots + 1 and a unified KV cache. Raises ValueError when llama.cpp cannot
    create it (the loader's out-of-memory fallback catches that, as for the weights).
    """

    def __init__(self, llm, n_ctx: int, slots: int, prefix_cache=None, notify=None):
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = min(N_BATCH, n_ctx)
        params.n_seq_max = slots + 1
        params.kv_unified = True
        self.params = params
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise ValueError(f"llama.cpp could not create a context of {n_ctx} tokens for "
                             f"{slots} sequences")
        self.slots = slots
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        self.n_batch = llama_cpp.llama_n_batch(self.ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._memory = llama_cpp.llama_get_memory(self.ctx)
        self._samplers: dict[int, object] = {}
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
        self.prefix_cache = prefix_cache      # make(layout) -> PrefixStateCache, or None (off)
        self._notify = notify or (lambda message: None)
        self.prompt_cache_event = ""          # what loading the prefix did: hit, stored, miss…

    # --- the prefix sequence ------------------------------------------------------------------
    def load_prefix(self, tokens: list[int]) -> None:
        """Put the shared prefix into its own sequence: restored when a saved state matches,
        else evaluated (no logits needed) and saved for the next run."""
        self._lib.llama_memory_seq_rm(self._memory, PREFIX_SEQ, -1, -1)
        if not tokens:
            return
        cache = self._prefix_state_cache()
        if cache is not None and cache.restore(self.ctx, tokens, PREFIX_SEQ):
            self._cache_event(cache, len(tokens))
            return
        if cache is not None:
            self._cache_event(cache, len(tokens))      # a miss, or a damaged file rejected
        self.prefill(-1, tokens, "the shared prompt prefix")
        if cache is not None:
            cache.store(self.ctx, tokens, PREFIX_SEQ)
            self._cache_event(cache, len(tokens))

    def _prefix_state_cache(self):
        if self.prefix_cache is None:
            return None
        from ra_lite.runtime.prefix_state import KVLayout

        return self.prefix_cache(KVLayout.of(self.ctx, self.params))

    def _cache_event(self, cache, n_tokens: int) -> None:
        self.prompt_cache_event = event = cache.last_event
        if event == "hit":
            self._notify(f"prompt cache: restored the {n_tokens}-token shared prefix")
        elif event == "stored":
            self._notify(f"prompt cache: stored the {n_tokens}-token shared prefix")
        elif event.startswith("rejected") or event.startswith("not stored"):
            self._notify(f"prompt cache: {event}")

    def attach_prefix(self, slot: int, n_tokens: int) -> None:
        self._lib.llama_memory_seq_cp(self._memory, PREFIX_SEQ, slot + 1, 0, n_tokens)

    def copy_tokens(self, source: int, slot: int, n_tokens: int) -> None:
        """Give `slot` the first n_tokens cells of `source` (tags only, in a unified cache)."""
        self._lib.llama_memory_seq_cp(self._memory, source + 1, slot + 1, 0, n_tokens)

    def release(self, slot: int, from_pos: int = 0) -> None:
        self._lib.llama_memory_seq_rm(self._memory, slot + 1, from_pos, -1)

    # --- decoding -----------------------------------------------------------------------------
    def prefill(self, slot: int, tokens: list[int], what: str = "a prompt",
                logits: bool = False) -> int:
        """Evaluate `tokens` into `slot` (-1: the prefix sequence) from position 0, n_batch at a
        time; with `logits`, the last token's are kept. Returns that token's row in the last
        batch (for sample())."""
        row = 0
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start:start + self.n_batch]
            last = start + len(chunk) == len(tokens)
            status = self.decode([BatchEntry(slot, chunk, start, 1 if logits and last else 0)])
            if status != 0:
                raise RaLiteError(f"llama_decode failed on {what} (status {status})",
                                  "raise --n-ctx or lower --parallel")
            row = len(chunk) - 1
        return row

    def decode(self, entries: list[BatchEntry]) -> int:
        """One llama_decode over every entry (slot -1 is the prefix sequence); logits only for
        each entry's last n_outputs tokens (never for a whole prompt)."""
        n_tokens = sum(len(entry.tokens) for entry in entries)
        if n_tokens > self.n_batch:      # checked first: the C arrays have no bounds checks
            raise ValueError(f"batch of {n_tokens} tokens exceeds n_batch {self.n_batch}")
        batch = self._batch
        token, pos, n_seq, seq, logits = (batch.token, batch.pos, batch.n_seq_id, batch.seq_id,
                                          batch.logits)
        i = 0
        for entry in entries:
            seq_id = entry.slot + 1
            first_output = len(entry.tokens) - entry.n_outputs
            for j, t in enumerate(entry.tokens):
                token[i] = t
                pos[i] = entry.pos + j
                n_seq[i] = 1
                seq[i][0] = seq_id
                logits[i] = j >= first_output
                i += 1
        batch.n_tokens = i
        return self._lib.llama_decode(self.ctx, batch)

    def set_sampling(self, slot: int, settings: SamplingSettings) -> None:
        """A fresh native chain per judgment (its RNG then advances token by token)."""
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


def native_sampler(settings: SamplingSettings):
    """llama.cpp's sampler chain for one judgment (a llama_cpp._internals.LlamaSampler).

    Order as in Hugging Face's generate (the official runtime): temperature, top-k 50, top-p.
    """
    from llama_cpp._internals import LlamaSampler

    sampler = LlamaSampler()
    if settings.temperature <= 0:
        sampler.add_greedy()
    else:
        sampler.add_temp(settings.temperature)
        sampler.add_top_k(50)
        sampler.add_top_p(settings.top_p, 1)
        sampler.add_dist(settings.seed & 0xFFFFFFFF)
    return sampler
