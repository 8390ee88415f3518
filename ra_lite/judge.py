"""The Judge: principle + prompt + responses in, a valid Judgment out.

A Judge delegates generation to a backend: LocalBackend (llama.cpp, this module) or any object
with the same `generate(chat, options)` method (ra_lite.testing.FakeBackend in tests). The Judge
itself does what every backend shares: validating the request, masking names with the official
seed-42 shuffle, and mapping the result back to the caller's names.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Generator, Iterable, Iterator, Protocol

from ra_lite.chat_template import CHATML_FALLBACK, render_chat
from ra_lite.defaults import DEFAULT_N_CTX, DEFAULT_TEMPERATURE, DEFAULT_THINK_BUDGET, DEFAULT_TOP_P
from ra_lite.runtime.decode import (DecodeResult, Forcing, JudgmentCancelled, SamplingSettings,
                                    common_prefix_length, judgment_steps)
from ra_lite.embedded import EMBEDDED_NOTICE
from ra_lite.errors import RaLiteError
from ra_lite.grammar import render_answer
from ra_lite.judgment import Comparison, Judgment, Timings, TokenCounts
from ra_lite.orders import check_orders, combine, order_design
from ra_lite.parallel_judge import is_local_backend
from ra_lite.prompt import ChatPrompt, build_chat_prompt
from ra_lite.request import JudgeRequest


@dataclass(frozen=True)
class JudgeOptions:
    """Generation settings. The official runtime samples at temperature 0.1, top-p 0.9.

    think_budget: the most tokens the reasoning may take before ra-lite closes it; 0 turns
    thinking off (the paper reports ~8 accuracy points lost without it).
    repetition_guard: close the reasoning early when it has fallen into an exact loop (a span
    repeated back to back; see ra_lite.runtime.repetition), recorded as think_end "repetition".
    orders: judge each request under this many response orders and aggregate them
    (ra_lite.orders); 1 is the official order alone. At most N! for N responses.
    speculative: draft reasoning tokens by n-gram lookup and verify them in the same decode
    (local models; the output is distributed exactly as without it; see runtime/drafts.py).
    """

    think_budget: int = DEFAULT_THINK_BUDGET
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    seed: int = 0
    repetition_guard: bool = True
    orders: int = 1
    speculative: bool = False

    def __post_init__(self):
        if self.think_budget < 0:
            raise RaLiteError(f"think budget {self.think_budget} is negative",
                              "use 0 to turn thinking off, or a positive token count")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise RaLiteError("temperature must be >= 0 and top_p in (0, 1]",
                              "e.g. temperature 0.1, top_p 0.9 (the official settings)")
        object.__setattr__(self, "orders", check_orders(self.orders))

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_p, self.seed)


@dataclass
class PreparedJudgment:
    prompt_tokens: list[int]
    sampling: SamplingSettings
    steps: Generator          # ra_lite.runtime.decode.judgment_steps; returns a DecodeResult
    kv_tokens: int = 0        # the most KV cells it can take: prompt + think budget + answer

    def task(self, finish, cancelled=None):
        """This judgment as a ra_lite.runtime.scheduler.SequenceTask."""
        from ra_lite.runtime.scheduler import SequenceTask

        extra = {"cancelled": cancelled} if cancelled is not None else {}
        return SequenceTask(self.prompt_tokens, self.sampling, self.steps, self.kv_tokens,
                            finish, **extra)


@dataclass
class PreparedRequest:
    """A local request ready for the scheduler: one PreparedJudgment per response order, and
    `finish(results)`, which turns their DecodeResults (in order) into the Judgment."""

    parts: list[PreparedJudgment]
    finish: Callable[[list[DecodeResult]], Judgment]

    def close(self) -> None:
        for part in self.parts:
            part.steps.close()


@dataclass
class OrderPlan:
    """One request under its K response orders: the chat prompts the model sees (the first is
    the official one) and how their results become one Judgment (ra_lite.orders.combine)."""

    chats: list[ChatPrompt]
    model: str
    started: float

    def to_judgment(self, results: list[DecodeResult]) -> Judgment:
        verdicts = [_to_judgment(r, chat, self.model) for r, chat in zip(results, self.chats)]
        official = self.chats[0]
        names = [official.masked_to_real[m] for m in official.masked_names]
        return combine(verdicts, names, time.perf_counter() - self.started)


class Backend(Protocol):
    """on_reasoning(text, tokens_so_far, budget) is told each reasoning token as generated; a
    backend that cannot stream accepts it and may never call it."""

    description: str

    def generate(self, chat: ChatPrompt, options: JudgeOptions,
                 forcing: Forcing | None = None, on_reasoning=None) -> DecodeResult: ...


class LocalBackend:
    """RewardAnything (or any chat GGUF) on llama.cpp, with ra-lite's constrained decoder."""

    def __init__(self, engine):
        self.engine = engine
        self.description = engine.describe()
        info = engine.info
        self.template = info.chat_template or CHATML_FALLBACK
        self.template_is_fallback = info.chat_template is None
        self._answer_reserve: dict[int, int] = {}
        self._shared_prefix: list[int] | None = None

    def shared_prefix_tokens(self) -> list[int]:
        """The tokens every judgment on this model starts with: the chat header, the official
        system prompt and the user turn's opening, up to where two different requests first
        differ. The prompt cache saves their KV; the parallel engine shares them across
        sequences. (The engine checks that a prompt really starts with them before relying on it.)
        """
        if self._shared_prefix is None:
            probes = [build_chat_prompt(principle, "p", {"a": "x", "b": "y"})
                      for principle in ("A", "Z")]
            token_lists = [self.engine.prompt_tokens(self.render(chat, True),
                                                     [m["content"] for m in chat.messages])
                           for chat in probes]
            shared = common_prefix_length(*token_lists)
            self._shared_prefix = token_lists[0][:shared]
            # Told to the engine here, whoever asks first (prepare, or the parallel runner's
            # slot sizing), so the sequential path always splits its prefill and uses the cache.
            self.engine.set_shared_prefix(self._shared_prefix)
        return self._shared_prefix

    def render(self, chat: ChatPrompt, thinking: bool) -> str:
        return render_chat(self.template, chat.messages, enable_thinking=thinking,
                           bos_token=self._special_text("bos"), eos_token=self._special_text("eos"))

    def _special_text(self, which: str) -> str:
        llm = self.engine.llm
        token = llm.token_bos() if which == "bos" else llm.token_eos()
        return self.engine.piece(token).decode("utf-8", "replace") if token >= 0 else ""

    def prepare(self, chat: ChatPrompt, options: JudgeOptions, forcing: Forcing | None = None,
                on_reasoning=None) -> PreparedJudgment:
        """Everything a driver needs to run one judgment: its prompt tokens, its sampling
        settings and its step generator. The sequential path (generate) and the parallel
        scheduler both start here, so both judge by the same rules."""
        thinking = options.think_budget > 0
        self.shared_prefix_tokens()
        rendered = self.render(chat, thinking)
        prompt_tokens = self.engine.prompt_tokens(rendered, [m["content"] for m in chat.messages])
        kv_tokens = self._check_fits(prompt_tokens, chat.masked_names, options.think_budget)
        steps = judgment_steps(self.engine, prompt_tokens, chat.masked_names,
                               think_budget=options.think_budget,
                               prompt_opens_think=rendered.rstrip().endswith("<think>"),
                               settings=options.sampling, forcing=forcing,
                               on_reasoning=on_reasoning,
                               repetition_guard=options.repetition_guard,
                               speculative=options.speculative)
        return PreparedJudgment(prompt_tokens, options.sampling, steps, kv_tokens)

    def run(self, prepared: list[PreparedJudgment], cancelled=None) -> list[DecodeResult]:
        """Run judgments side by side on the engine's scheduler (one slot each, as many at once
        as the KV cells allow); their results in order, or the first one's error raised."""
        from ra_lite.runtime.scheduler import ListSource

        outcomes: list = [None] * len(prepared)

        def finisher(i):
            def finish(result, error):
                outcomes[i] = (result, error)
            return finish

        tasks = [p.task(finisher(i), cancelled) for i, p in enumerate(prepared)]
        self.engine.run(ListSource(tasks), concurrency=len(tasks))
        for result, error in outcomes:
            if error is not None:
                raise error
        return [result for result, _ in outcomes]

    def generate(self, chat: ChatPrompt, options: JudgeOptions,
                 forcing: Forcing | None = None, on_reasoning=None,
                 cancelled=None) -> DecodeResult:
        """cancelled: polled between decode steps; True stops with JudgmentCancelled."""
        return self.run([self.prepare(chat, options, forcing, on_reasoning)], cancelled)[0]

    def _check_fits(self, prompt_tokens: list[int], names: list[str], think_budget: int) -> int:
        """Refuse up front what cannot fit, instead of truncating the prompt like the official
        runtime does (it silently cut prompts to 4096 tokens). Returns the worst case in tokens."""
        n = len(names)
        if n not in self._answer_reserve:
            # The longest answer: its token count plus room for the think-block closing text.
            longest = render_answer({k: 5 for k in names}, list(names))
            self._answer_reserve[n] = len(self.engine.tokenize(longest)) + 16
        answer = self._answer_reserve[n]
        needed = len(prompt_tokens) + think_budget + answer
        n_ctx = self.engine.n_ctx
        if needed <= n_ctx:
            return needed
        trained = self.engine.info.context_length
        room = f"raise --n-ctx (this model was trained on up to {trained})" if trained and \
            trained > n_ctx else "shorten the responses"
        raise RaLiteError(
            f"the request needs {needed} tokens (prompt {len(prompt_tokens)} + think budget "
            f"{think_budget} + answer {answer}) but the context holds {n_ctx}",
            f"{room}, or lower --think-budget")


class Judge:
    """Judges responses against a principle. Create with ra_lite.load()."""

    def __init__(self, backend: Backend, options: JudgeOptions | None = None,
                 model_name: str = "", notify=None):
        self.backend = backend
        self.options = options or JudgeOptions()
        self.model_name = model_name or getattr(backend, "description", "")
        self.notify = notify or _print_notice
        self._said = set()              # notices given once per judge

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
        if cancelled is not None and cancelled():
            raise JudgmentCancelled()
        if forcing_from is not None:        # a replay: the reference's official-order verdict
            forcing_from = (forcing_from.orders or [forcing_from])[0]
            options = replace(options, orders=1)
        plan = self.plan(request, options)
        forcing = _forcing(forcing_from, plan.chats[0]) if forcing_from is not None else None
        if is_local_backend(self.backend):
            prepared = [self.backend.prepare(chat, options, forcing,
                                             on_reasoning if i == 0 else None)
                        for i, chat in enumerate(plan.chats)]
            return plan.to_judgment(self.backend.run(prepared, cancelled))
        results = []
        for i, chat in enumerate(plan.chats):
            # Passed only when given, so a backend written before streaming existed still works.
            extra = {"on_reasoning": on_reasoning} if on_reasoning is not None and i == 0 else {}
            if cancelled is not None:
                if cancelled():
                    raise JudgmentCancelled()
                if _accepts_keyword(self.backend.generate, "cancelled"):
                    extra["cancelled"] = cancelled
            results.append(self.backend.generate(chat, options, forcing, **extra))
        return plan.to_judgment(results)

    def plan(self, request: JudgeRequest, options: JudgeOptions) -> OrderPlan:
        """The chat prompts of a request under options.orders orders (RaLiteError when there
        are more than N! of them; one response has one order, which is said once)."""
        n = len(request.responses)
        k = options.orders
        if k > 1 and n == 1:
            if "one-response-orders" not in self._said:
                self._said.add("one-response-orders")
                self.notify(f"--orders {k} has no effect on a request with one response "
                            "(there is one order); judging it once")
            k = 1
        design = order_design(n, check_orders(k, n))
        chats = [build_chat_prompt(request.principle, request.prompt, request.responses,
                                   None if i == 0 else order) for i, order in enumerate(design)]
        return OrderPlan(chats, self.model_name, time.perf_counter())

    def judge_many(self, requests: Iterable[JudgeRequest | dict],
                   options: JudgeOptions | None = None, on_reasoning=None,
                   parallel: int | str = "auto") -> Iterator[Judgment]:
        """Judgments in request order, each yielded as soon as it and those before it are done.

        parallel: judgments decoded at once on a local model (one llama.cpp context, shared
        batches; see ra_lite.parallel_judge); "auto" picks from the hardware and the KV memory
        (1 when on_reasoning is given), 1 judges one at a time. Bad values raise RaLiteError.
        """
        from ra_lite.parallel_judge import judge_in_order, resolve_parallel

        if on_reasoning is not None and parallel == "auto":
            parallel = 1
        slots = resolve_parallel(self, parallel, options)
        if slots > 1:
            if on_reasoning is not None:
                raise RaLiteError("on_reasoning streams one judgment at a time",
                                  "use parallel=1 to stream reasoning")
            yield from judge_in_order(self, requests, options, slots)
            return
        for request in requests:
            if isinstance(request, dict):
                request = JudgeRequest.from_dict(request)
            yield self.judge_request(request, options, on_reasoning=on_reasoning)

    def prepare_request(self, request: JudgeRequest, options: JudgeOptions | None = None
                        ) -> PreparedRequest:
        """A local request ready for the scheduler: its judgments (one per response order) and
        the function that maps their DecodeResults back to one Judgment (the parallel runner's
        entry; judge_request runs the same parts itself)."""
        plan = self.plan(request, options or self.options)
        parts = [self.backend.prepare(chat, options or self.options) for chat in plan.chats]
        return PreparedRequest(parts, plan.to_judgment)

    def parallel_runner(self, slots: int):
        """A ra_lite.parallel_judge.ParallelRunner with `slots` (>= 2) sequences on this judge's
        local model; RaLiteError for a remote backend or a bad slot count. Close it when done."""
        from ra_lite.parallel_judge import ParallelRunner

        return ParallelRunner(self, slots)

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


def _print_notice(message: str) -> None:
    print(f"ra-lite: {message}", file=sys.stderr)


def _accepts_keyword(function, name: str) -> bool:
    """Whether `function` takes keyword `name` (backends written before it existed do not)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)


def _forcing(reference: Judgment, chat: ChatPrompt) -> Forcing:
    if set(reference.masked_to_real.values()) != set(chat.masked_to_real.values()):
        raise RaLiteError("the reference judgment is for other responses",
                          "replay a judgment of the same request")
    real_to_masked = {real: masked for masked, real in chat.masked_to_real.items()}
    return Forcing(think_tokens=reference.think_token_ids, think_closing=reference.think_closing,
                   scores={real_to_masked[k]: v for k, v in reference.scores.items()},
                   ranking=[real_to_masked[k] for k in reference.ranking])


def _to_judgment(result: DecodeResult, chat: ChatPrompt, model: str) -> Judgment:
    real = chat.masked_to_real
    probabilities = None
    score_records = [c for c in result.choices if c.kind == "score"]
    if score_records and all(len(c.options) == 5 for c in score_records):
        probabilities = {}
        for record in score_records:
            by_digit = dict(zip(record.options, record.probabilities))
            probabilities[real[record.key]] = [by_digit[d] for d in "12345"]
    return Judgment(
        scores={real[k]: v for k, v in result.scores.items()},
        ranking=[real[k] for k in result.ranking],
        reasoning=result.reasoning,
        raw_text=result.text,
        masked_to_real=dict(real),
        score_probabilities=probabilities,
        think_truncated=result.think_end == "budget",
        think_end=result.think_end,
        tokens=TokenCounts(prompt=result.prompt_tokens, prompt_reused=result.prompt_tokens_reused,
                           think=len(result.think_tokens), answer=result.answer_tokens,
                           answer_evaluated=result.answer_tokens_evaluated),
        timings=Timings(**result.timings) if result.timings else Timings(),
        model=model,
        think_token_ids=list(result.think_tokens),
        think_closing=result.think_closing,
        speculative=dict(result.speculative) if result.speculative is not None else None,
    )


def load(model: str | Path | None = None, *, n_ctx: int = DEFAULT_N_CTX, n_gpu_layers: int | str = "auto",
         n_threads: int | None = None, flash_attn: bool = True, verbose: bool = False,
         options: JudgeOptions | None = None, notify=None, prompt_cache: bool = True) -> Judge:
    """Load a GGUF judge. model=None uses the embedded smoke-test model (not a real judge).

    notify: called with one-line notices (which model, offload decision); default: stderr.
    prompt_cache: restore the shared prompt prefix's KV state saved by an earlier process (and
    save it after prefilling it), under the ra-lite cache directory; False never reads or writes.
    """
    from ra_lite.pull import resolve_model
    from ra_lite.runtime.engine import LlamaEngine, print_notice

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
