"""The llama.cpp runtime behind a local Judge (the only module that imports llama_cpp).

One LlamaEngine holds one loaded model and one context. Successive judgments on it reuse the
longest shared token prefix already in the KV cache (the chat header and system prompt always;
the principle too when it repeats), so only the new part of each prompt is evaluated. A fresh
process restores the shared prefix's KV from the prompt cache (prefix_state.py) instead of
prefilling it, and stores it after prefilling it once.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from ra_lite.runtime.decode import SamplingSettings
from ra_lite.errors import RaLiteError
from ra_lite.runtime.devices import default_threads
from ra_lite.runtime.gguf_info import GGUFInfo, read_gguf_info
from ra_lite.runtime.offload import OffloadDecision


class LlamaEngine:
    """A loaded GGUF model and its context, with the primitives decode.py needs."""

    def __init__(self, llm, info: GGUFInfo, offload: OffloadDecision, n_threads: int,
                 prompt_cache: bool = True, notify=None):
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.info = info
        self.offload = offload
        self.n_threads = n_threads
        self.n_ctx = llm.n_ctx()
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._pieces: dict[int, bytes] = {}
        self._sampler = None
        self._prompt_tokenizer = None
        self.prompt_cache = prompt_cache
        self._notify = notify or print_notice
        self._shared_prefix: list[int] = []
        self._prefix_cache = None          # a PrefixStateCache, made on first use
        self.prompt_cache_event = ""       # what the prompt cache last did: hit, stored, miss…

    @classmethod
    def load(cls, path: str | Path, *, n_ctx: int = 8192, n_gpu_layers: int | str = "auto",
             n_threads: int | None = None, flash_attn: bool = True,
             verbose: bool = False, notify=None, prompt_cache: bool = True) -> "LlamaEngine":
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
            return llama_cpp.Llama(
                model_path=str(path), n_ctx=ctx, n_batch=512, n_gpu_layers=layers,
                n_threads=threads, n_threads_batch=threads, flash_attn=flash_attn,
                verbose=verbose,
            )

        try:
            # An out-of-memory load on the GPU retries with half the layers, finally the CPU.
            llm, offload = load_with_fallback(load, offload, info.block_count or 0,
                                              notify or print_notice)
        except (ValueError, RuntimeError) as e:
            raise RaLiteError(f"llama.cpp could not load {path} ({e})",
                              "the file may be truncated or use an architecture this llama.cpp "
                              "build does not know; run with --verbose to see llama.cpp's log"
                              ) from None
        return cls(llm, info, offload, threads, prompt_cache=prompt_cache, notify=notify)

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

    # --- evaluation ---------------------------------------------------------------------------
    def set_shared_prefix(self, tokens: list[int]) -> None:
        """The tokens every judgment on this model starts with (LocalBackend computes them).

        Prompts that start with them are prefilled in two parts, the prefix then the rest, with
        or without the prompt cache, so a restored prefix gives the same numbers as a fresh one.
        """
        self._shared_prefix = list(tokens)

    def start(self, prompt_tokens: list[int]) -> int:
        """Evaluate a prompt, reusing the longest prefix already in the KV cache (or restored
        from the prompt cache); returns how many prompt tokens were not evaluated."""
        cached = self.llm.input_ids[: self.llm.n_tokens]
        reuse = 0
        for a, b in zip(cached, prompt_tokens):
            if a != b:
                break
            reuse += 1
        # At least one token must be evaluated to have logits to sample from.
        reuse = min(reuse, len(prompt_tokens) - 1)
        self.llm.n_tokens = reuse
        prefix = self._shared_prefix
        if prefix and reuse < len(prefix) < len(prompt_tokens) and \
                prompt_tokens[:len(prefix)] == prefix:
            reuse = self._start_prefix(prefix, reuse)
        self.feed(prompt_tokens[self.llm.n_tokens:])
        return reuse

    def _start_prefix(self, prefix: list[int], reuse: int) -> int:
        """Put the shared prefix in the KV cache: restored if saved, else evaluated (and saved).
        Returns how many of its tokens were not evaluated."""
        cache = self._prompt_state_cache()
        if cache is not None:
            if cache.restore(self.llm.ctx, prefix, 0):
                self.llm.input_ids[: len(prefix)] = prefix
                self.llm.n_tokens = len(prefix)
                self._cache_event(cache, len(prefix))
                return len(prefix)
            self._cache_event(cache, len(prefix))   # a miss, or a damaged file rejected
            self.llm.n_tokens = reuse = 0       # restore() emptied the sequence
        self.feed(prefix[reuse:])
        if cache is not None:
            cache.store(self.llm.ctx, prefix, 0)
            self._cache_event(cache, len(prefix))
        return reuse

    def _prompt_state_cache(self):
        if not self.prompt_cache:
            return None
        if self._prefix_cache is None:
            from ra_lite.runtime.prefix_state import KVLayout, PrefixStateCache

            layout = KVLayout.of(self.llm.ctx, self.llm.context_params)
            self._prefix_cache = PrefixStateCache(self.info.path, layout)
        return self._prefix_cache

    def _cache_event(self, cache, n_tokens: int) -> None:
        self.prompt_cache_event = cache.last_event
        if cache.last_event == "hit":
            self._notify(f"prompt cache: restored the {n_tokens}-token shared prefix")
        elif cache.last_event == "stored":
            self._notify(f"prompt cache: stored the {n_tokens}-token shared prefix")
        elif cache.last_event.startswith("rejected") or cache.last_event.startswith("not stored"):
            self._notify(f"prompt cache: {cache.last_event}")

    def feed(self, tokens: list[int]) -> None:
        if self.llm.n_tokens + len(tokens) > self.n_ctx:
            raise RaLiteError(f"the judgment outgrew the context ({self.n_ctx} tokens)",
                              "raise --n-ctx or lower --think-budget")
        self.llm.eval(tokens)

    def logits(self, token_ids: list[int]) -> np.ndarray:
        row = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.array([row[t] for t in token_ids], dtype=np.float32)

    def set_sampling(self, settings: SamplingSettings) -> None:
        """A fresh native sampler chain for one judgment (its RNG then advances token by token)."""
        self._sampler = native_sampler(settings)

    def sample(self) -> int:
        return self._sampler.sample(self.llm._ctx, -1)

    def describe(self) -> str:
        cache = "" if self.prompt_cache else ", prompt cache off"
        return f"{self.info.path.name} ({self.info.quant}, {self.offload.reason}, " \
               f"{self.n_threads} threads, n_ctx {self.n_ctx}{cache})"

    def close(self) -> None:
        self.llm.close()


def print_notice(message: str) -> None:
    print(f"ra-lite: {message}", file=sys.stderr)


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
