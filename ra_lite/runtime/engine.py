"""The llama.cpp runtime behind a local Judge (with multi_sequence_context.py, the modules that run
llama_cpp).

One LlamaEngine holds one loaded model and the one llama.cpp context every judgment on it runs
in: a multi-sequence context with a unified KV cache (multi_sequence_context.py), driven by the slot
scheduler (scheduler.py) for one judgment, a judgment under several response orders, or many
at once. llama-cpp-python's Llama object loads the weights and the vocabulary; its own context is
made minimal (LOADER_N_CTX cells), since no judgment runs in it, so the KV memory is the one
context's n_ctx cells, as the offload plan assumes.

Successive judgments reuse the longest shared token prefix already in the KV cache (the chat
header and system prompt always; the principle too when it repeats): the scheduler keeps a
finished judgment's cells for the next one. A fresh process restores the shared prefix's KV from
the prompt cache (prefix_state.py) instead of prefilling it, and stores it after prefilling once.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from ra_lite.defaults import DEFAULT_N_CTX
from ra_lite.errors import RaLiteError
from ra_lite.notices import print_notice
from ra_lite.runtime.devices import default_threads
from ra_lite.runtime.gguf_info import GGUFInfo, read_gguf_info
from ra_lite.runtime.offload import OffloadDecision

# The loader Llama's own context: only its weights and vocabulary are used, so its KV cache and
# compute buffers are kept tiny (llama.cpp pads a context to 256 cells).
LOADER_N_CTX, LOADER_N_BATCH = 256, 32
# Judgment slots the context is made with (plus the prefix sequence); more are made on demand.
# With a unified KV cache extra sequence ids cost almost nothing (measured: +3 MiB for 17
# sequences instead of 2 at 8192 cells), so one context serves --parallel up to this and K
# response orders without being rebuilt.
DEFAULT_SLOTS = 16
MAX_SEQUENCES = 256         # llama.cpp's LLAMA_MAX_SEQ
# Speculative drafts are verified only while at most this many judgments run at once: beside a
# batch of several slots, the spare compute a draft needs is already used (benchmarks/README.md,
# "Speculative reasoning").
DRAFTING_SLOTS_CPU, DRAFTING_SLOTS_GPU = 1, 4


class LlamaEngine:
    """A loaded GGUF model and its one multi-sequence context."""

    def __init__(self, llm, sequences, info: GGUFInfo, offload: OffloadDecision, n_threads: int,
                 prompt_cache: bool = True, notify=None):
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm                      # weights and vocabulary
        self.sequences = sequences          # the MultiSequenceContext judgments run in
        self.info = info
        self.offload = offload
        self.n_threads = n_threads
        self.n_ctx = sequences.n_ctx
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._pieces: dict[int, bytes] = {}
        self._prompt_tokenizer = None
        self.prompt_cache = prompt_cache
        self._notify = notify or print_notice
        self._shared_prefix: list[int] = []
        self._prefix_caches: dict = {}     # KVLayout -> PrefixStateCache, made on first use
        self._scheduler = None
        self._lock = threading.Lock()      # one run of the scheduler at a time
        self._running_in: int | None = None
        self._attach_prompt_cache(self.sequences)

    @classmethod
    def load(cls, path: str | Path, *, n_ctx: int = DEFAULT_N_CTX, n_gpu_layers: int | str = "auto",
             n_threads: int | None = None, flash_attn: bool = True,
             verbose: bool = False, notify=None, prompt_cache: bool = True) -> "LlamaEngine":
        from ra_lite.runtime.multi_sequence_context import MultiSequenceContext
        from ra_lite.runtime.offload import decide_offload, load_with_fallback, plan_offload

        info = read_gguf_info(path)
        info.require_causal_lm()
        try:
            import llama_cpp
        except ImportError as e:  # pragma: no cover - install problem
            raise RaLiteError(f"llama-cpp-python is not installed ({e})",
                              "run scripts/install.sh (see README)") from None
        threads = n_threads or default_threads()
        # A context longer than the model was trained on only wastes memory.
        ctx = min(n_ctx, info.context_length) if info.context_length else n_ctx
        gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
        fit = plan_offload(path, ctx) if n_gpu_layers == "auto" and gpu_build else None
        offload = decide_offload(n_gpu_layers, gpu_build, info.block_count or 0, fit=fit)

        def load(layers: int):
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=LOADER_N_CTX, n_batch=LOADER_N_BATCH,
                n_ubatch=LOADER_N_BATCH, n_gpu_layers=layers, n_threads=threads,
                n_threads_batch=threads, flash_attn=flash_attn, verbose=verbose,
            )
            try:   # the real context: out of memory here retries as for the weights
                return llm, MultiSequenceContext(llm, ctx, DEFAULT_SLOTS)
            except BaseException:
                llm.close()
                raise

        try:
            # An out-of-memory load on the GPU retries with half the layers, finally the CPU.
            (llm, sequences), offload = load_with_fallback(load, offload, info.block_count or 0,
                                                           notify or print_notice)
        except (ValueError, RuntimeError) as e:
            raise RaLiteError(f"llama.cpp could not load {path} ({e})",
                              "the file may be truncated or use an architecture this llama.cpp "
                              "build does not know, or the context may not fit in memory "
                              "(lower --n-ctx); run with --verbose to see llama.cpp's log"
                              ) from None
        return cls(llm, sequences, info, offload, threads, prompt_cache=prompt_cache,
                   notify=notify)

    # --- tokens -------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def prompt_tokens(self, rendered: str, contents: list[str]) -> list[int]:
        """Tokens for a rendered chat prompt, with BOS when the model wants one.

        contents: the messages' texts; they never become control tokens (see prompt_tokens.py).
        """
        if self._prompt_tokenizer is None:
            from ra_lite.runtime.prompt_tokens import PromptTokenizer

            self._prompt_tokenizer = PromptTokenizer(self.llm)
        tokens = self._prompt_tokenizer.tokenize(rendered, contents)
        if self.llm._model.add_bos_token():
            bos = self.llm.token_bos()
            if bos >= 0 and (not tokens or tokens[0] != bos):
                tokens.insert(0, bos)
        return tokens

    def piece(self, token: int) -> bytes:
        cached = self._pieces.get(token)
        if cached is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self._lib.llama_token_to_piece(self._vocab, token, buf, size, 0, True)
                if n >= 0:
                    break
                size = -n   # the buffer was too small; llama.cpp says how much it needs
            cached = self._pieces[token] = buf.raw[:n]
        return cached

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def single_token(self, text: str) -> int | None:
        tokens = self.tokenize(text)
        return tokens[0] if len(tokens) == 1 else None

    # --- running judgments --------------------------------------------------------------------
    def set_shared_prefix(self, tokens: list[int]) -> None:
        """The tokens every judgment on this model starts with (LocalBackend computes them):
        they live in the context's prefix sequence, restored from or saved to the prompt cache."""
        if list(tokens) != self._shared_prefix:
            self._shared_prefix = list(tokens)
            self._scheduler = None

    def scheduler(self, slots: int = 1):
        """The engine's slot scheduler, with room for at least `slots` judgments at once (the
        context is rebuilt with more sequences if needed; its KV contents are then lost)."""
        from ra_lite.runtime.scheduler import MAX_SLOTS, SlotScheduler

        if not 1 <= slots <= MAX_SLOTS:
            raise RaLiteError(f"{slots} parallel sequences requested",
                              f"use between 1 and {MAX_SLOTS}")
        if slots > self.sequences.slots:
            self._rebuild(min(max(slots, 2 * self.sequences.slots), MAX_SEQUENCES - 1))
        if self._scheduler is None:
            gpu = bool(getattr(self.offload, "n_gpu_layers", 0))
            self._scheduler = SlotScheduler(
                self.sequences, self.sequences.slots, self._shared_prefix, keep_finished=True,
                max_drafting_slots=DRAFTING_SLOTS_GPU if gpu else DRAFTING_SLOTS_CPU)
        return self._scheduler

    def _rebuild(self, slots: int) -> None:
        from ra_lite.runtime.multi_sequence_context import MultiSequenceContext

        n_ctx = self.sequences.n_ctx
        self.sequences.close()
        try:
            self.sequences = MultiSequenceContext(self.llm, n_ctx, slots)
        except ValueError as e:
            raise RaLiteError(f"llama.cpp could not create a context for {slots} parallel "
                              f"sequences of {n_ctx} tokens ({e})",
                              "lower --parallel or --n-ctx; run with --verbose for llama.cpp's "
                              "log") from None
        self._attach_prompt_cache(self.sequences)
        self._scheduler = None

    def run(self, source, concurrency: int = 1) -> None:
        """Drive the scheduler over a TaskSource (every task's finish() is called) with at most
        `concurrency` judgments at once."""
        for _ in self.rounds(source, concurrency):
            pass

    def rounds(self, source, concurrency: int = 1):
        """run(), one decode round per iteration (callers hand out results between rounds).
        One run at a time: another thread waits for the lock; a run started from inside a
        running one on the same thread (judging inside a judge_many loop) is refused."""
        me = threading.get_ident()
        if self._running_in == me:
            raise RaLiteError("this judge is already judging (a judgment was started inside "
                              "judge_many's or a runner's loop)",
                              "finish the loop first, or load a second judge")
        with self._lock:
            self._running_in = me
            try:
                scheduler = self.scheduler(concurrency)
                while scheduler.step(source, concurrency):
                    yield
            finally:
                self._running_in = None

    def abort(self, error: BaseException | None = None) -> None:
        """End every running judgment (finish(None, error) for each)."""
        if self._scheduler is not None:
            self._scheduler.abort(error)

    # --- the prompt cache -----------------------------------------------------------------------
    def _attach_prompt_cache(self, sequences) -> None:
        sequences._notify = self._notify
        sequences.prefix_cache = self._prompt_state_cache if self.prompt_cache else None

    def _prompt_state_cache(self, layout):
        """One PrefixStateCache per KV layout (the model's hash is then looked up once)."""
        from ra_lite.runtime.prefix_state import PrefixStateCache

        if layout not in self._prefix_caches:
            self._prefix_caches[layout] = PrefixStateCache(self.info.path, layout)
        return self._prefix_caches[layout]

    @property
    def prompt_cache_event(self) -> str:
        """What the prompt cache last did: hit, stored, miss, rejected: …"""
        return self.sequences.prompt_cache_event

    def describe(self) -> str:
        cache = "" if self.prompt_cache else ", prompt cache off"
        return f"{self.info.path.name} ({self.info.quant}, {self.offload.reason}, " \
               f"{self.n_threads} threads, n_ctx {self.n_ctx}{cache})"

    def close(self) -> None:
        self.sequences.close()
        self.llm.close()

