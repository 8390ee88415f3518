"""The Judge: principle + prompt + responses in, a valid Judgment out.

The facade on top of the layers below it, read top-down:

    Judge (this module)   the API: judge, judge_request, judge_many, judge_each, compare, replay
    JudgeQueue            ra_lite.judge_queue: the one place a request becomes a judgment
                          (judgment cache, response orders, slots, cancellation, streaming)
    backends              ra_lite.backend: LocalBackend (llama.cpp through the slot scheduler,
                          ra_lite.runtime), call backends (ra_lite.remote, FakeBackend in tests)
    JudgeOptions          ra_lite.options: the generation settings, defined once

A Judge holds a backend and its default options; every method submits to a JudgeQueue.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator

from ra_lite.backend import Backend, LocalBackend, OrderPlan, plan_orders
from ra_lite.defaults import DEFAULT_N_CTX
from ra_lite.embedded import EMBEDDED_NOTICE
from ra_lite.errors import RaLiteError
from ra_lite.judge_queue import Finished, JudgeQueue, as_request
from ra_lite.judgment import Comparison, Judgment
from ra_lite.notices import print_notice
from ra_lite.options import JudgeOptions
from ra_lite.request import JudgeRequest

__all__ = ["Backend", "Judge", "JudgeOptions", "LocalBackend", "load"]


class Judge:
    """Judges responses against a principle. Create with ra_lite.load()."""

    def __init__(self, backend: Backend, options: JudgeOptions | None = None,
                 model_name: str = "", notify=None):
        self.backend = backend
        self.options = options or JudgeOptions()
        self.model_name = model_name or getattr(backend, "description", "")
        self.notify = notify or print_notice
        self._said = set()              # notices given once per judge

    def say_once(self, key: str, message: str) -> None:
        """Tell `message` the first time `key` comes up on this judge."""
        if key not in self._said:
            self._said.add(key)
            self.notify(message)

    def queue(self, parallel: int | str = 1, options: JudgeOptions | None = None,
              cache=None) -> JudgeQueue:
        """A JudgeQueue on this judge's backend with `parallel` slots (auto, or a count; checked
        against the hardware and the KV memory at `options`' think budget), optionally in
        front of a judgment cache (ra_lite.judgment_cache.ModelCache)."""
        return JudgeQueue(self, parallel, cache, options)

    def resolve_slots(self, parallel: int | str = "auto",
                      options: JudgeOptions | None = None) -> int:
        """The slot count `parallel` means on this backend (ra_lite.slots): auto picks from the
        hardware and the KV memory (a server's own slots for a remote backend)."""
        from ra_lite.slots import resolve_slots

        return resolve_slots(self.backend, parallel, options or self.options)

    def judge(self, principle: str, prompt: str, responses: dict[str, str] | list,
              *, think_budget: int | None = None, temperature: float | None = None,
              top_p: float | None = None, seed: int | None = None,
              repetition_guard: bool | None = None, orders: int | None = None,
              speculative: bool | None = None, on_reasoning=None) -> Judgment:
        """on_reasoning(text, tokens_so_far, budget): called with each piece of reasoning as it
        is generated (whole characters), e.g. to stream it or show progress; with several
        orders, the official order's reasoning."""
        request = JudgeRequest.create(principle, prompt, responses)
        overrides = {k: v for k, v in dict(think_budget=think_budget, temperature=temperature,
                                           top_p=top_p, seed=seed, orders=orders,
                                           repetition_guard=repetition_guard,
                                           speculative=speculative).items()
                     if v is not None}
        return self.judge_request(request, replace(self.options, **overrides),
                                  on_reasoning=on_reasoning)

    def judge_request(self, request: JudgeRequest, options: JudgeOptions | None = None,
                      forcing_from: Judgment | None = None, on_reasoning=None,
                      cancelled=None) -> Judgment:
        """cancelled: a callable; when it turns True the judgment stops (between decode steps
        on a local model, before starting on a backend that cannot stop midway) and raises
        ra_lite.runtime.decode.JudgmentCancelled. The server uses it for clients that left.

        With options.orders = K the request is judged under K response orders (on a local
        model side by side in one context, the shared start of their prompts evaluated once;
        on a remote one as K requests) and aggregated (ra_lite.orders)."""
        options = options or self.options
        if forcing_from is not None:        # a replay: the reference's official-order verdict
            forcing_from = (forcing_from.orders or [forcing_from])[0]
            options = replace(options, orders=1)
        return JudgeQueue(self, 1).judge(request, options, on_reasoning=on_reasoning,
                                         cancelled=cancelled, forcing_from=forcing_from)

    def plan(self, request: JudgeRequest, options: JudgeOptions) -> OrderPlan:
        """The chat prompts of a request under options.orders orders (RaLiteError when there
        are more than N! of them; one response has one order, which is said once)."""
        return plan_orders(request, options, self.model_name, self.say_once)

    def judge_many(self, requests: Iterable[JudgeRequest | dict],
                   options: JudgeOptions | None = None, on_reasoning=None,
                   parallel: int | str = "auto") -> Iterator[Judgment]:
        """Judgments in request order, each yielded as soon as it and those before it are done.

        parallel: judgments decoded at once (on a local model in one llama.cpp context, shared
        batches; on a remote one, concurrent requests); "auto" picks from the hardware and the
        KV memory (1 when on_reasoning is given). Bad values raise RaLiteError.
        """
        if on_reasoning is not None:
            if parallel == "auto":
                parallel = 1
            elif self.resolve_slots(parallel, options) > 1:
                raise RaLiteError("on_reasoning streams one judgment at a time",
                                  "use parallel=1 to stream reasoning")
            for request in requests:
                yield self.judge_request(as_request(request), options,
                                         on_reasoning=on_reasoning)
            return
        yield from self.queue(parallel, options).in_order(requests, options)

    def judge_each(self, requests: Iterable[JudgeRequest | dict],
                   options: JudgeOptions | None = None, parallel: int | str = "auto",
                   cache=None) -> Iterator[Finished]:
        """Every request's outcome as it finishes (ra_lite.judge_queue.Finished: its index,
        the judgment or its own RaLiteError), `parallel` at a time, optionally in front of a
        judgment cache."""
        yield from self.queue(parallel, options, cache).each(requests, options)

    def compare(self, principle: str, prompt: str, a: str, b: str, **kwargs) -> Comparison:
        """Which of two responses the principle prefers (named "a" and "b")."""
        judgment = self.judge(principle, prompt, {"a": a, "b": b}, **kwargs)
        return Comparison(winner=judgment.best, score_a=judgment.scores["a"],
                          score_b=judgment.scores["b"], judgment=judgment)

    def replay(self, request: JudgeRequest, reference: Judgment,
               options: JudgeOptions | None = None) -> Judgment:
        """Teacher-force another model's judgment through this model: same output, this model's
        probabilities at every choice point (for measuring a quant against its reference).

        The reasoning is fed as one batch, and llama.cpp's numerics depend on batching, so a
        replay through the *same* model is bit-identical to other replays but only close to the
        sampled run. Compare models replay against replay: then a model against itself is 0.
        """
        # Thinking on/off and its length follow the reference, whatever this judge's defaults.
        thought = bool(reference.think_closing)
        budget = max(len(reference.think_token_ids), 1) if thought else 0
        options = replace(options or self.options, think_budget=budget)
        return self.judge_request(request, options, forcing_from=reference)

    def close(self) -> None:
        engine = getattr(self.backend, "engine", None)
        if engine is not None:
            engine.close()
        elif callable(getattr(self.backend, "close", None)):
            self.backend.close()              # a remote backend's local tokenizer, say

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(model: str | Path | None = None, *, n_ctx: int = DEFAULT_N_CTX, n_gpu_layers: int | str = "auto",
         n_threads: int | None = None, flash_attn: bool = True, verbose: bool = False,
         options: JudgeOptions | None = None, notify=None, prompt_cache: bool = True) -> Judge:
    """Load a GGUF judge. model=None uses the embedded smoke-test model (not a real judge).

    notify: called with one-line notices (which model, offload decision); default: stderr.
    prompt_cache: restore the shared prompt prefix's KV state saved by an earlier process (and
    save it after prefilling it), under the ra-lite cache directory; False never reads or writes.
    """
    from ra_lite.pull import resolve_model
    from ra_lite.runtime.engine import LlamaEngine

    notify = notify or print_notice
    path, embedded = resolve_model(model)
    if embedded:
        notify(EMBEDDED_NOTICE)
    engine = LlamaEngine.load(path, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads,
                              flash_attn=flash_attn, verbose=verbose, notify=notify,
                              prompt_cache=prompt_cache)
    notify(f"model {engine.describe()}")
    backend = LocalBackend(engine)
    if backend.template_is_fallback:
        notify("the GGUF has no chat template; using ChatML (Qwen3's format)")
    return Judge(backend, options, model_name=path.name, notify=notify)
