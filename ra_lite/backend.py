"""Backends: what turns one chat prompt into a DecodeResult, and the order plan that maps a
request's results back to one Judgment. Below the judge queue (ra_lite.judge_queue), which is
the only caller; above the runtime.

- LocalBackend: RewardAnything (or any chat GGUF) on llama.cpp. `prepare` gives a
  PreparedJudgment (prompt tokens, sampling, step generator) that the queue hands to the
  engine's slot scheduler (ra_lite.runtime.scheduler), one slot per response order.
- CallBackend: anything with `generate(chat, options, forcing, on_reasoning)` that returns a
  DecodeResult by itself: the remote client and pool (ra_lite.remote), FakeBackend in tests.
  The queue runs those calls in threads, one per slot.
- RequestBackend: a backend that judges whole requests itself (a running `ra-lite serve`, seen
  from ra_lite.rewards.server_client): `judge_request(request, options)`.
- OrderPlan / plan_orders: the chat prompts of one request under its K response orders (the
  first is the official seed-42 order) and how their results become one Judgment.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Generator, Protocol, runtime_checkable

from ra_lite.chat_template import CHATML_FALLBACK, render_chat
from ra_lite.errors import RaLiteError
from ra_lite.grammar import render_answer
from ra_lite.judgment import Judgment, TokenCounts
from ra_lite.options import JudgeOptions
from ra_lite.orders import check_orders, combine, order_design
from ra_lite.prompt import ChatPrompt, build_chat_prompt
from ra_lite.request import JudgeRequest
from ra_lite.runtime.decode import (DecodeResult, Forcing, SamplingSettings, common_prefix_length,
                                    judgment_steps)


@runtime_checkable
class CallBackend(Protocol):
    """A backend that runs a whole judgment per call. on_reasoning(text, tokens_so_far,
    budget) is told each reasoning token as generated; a backend that cannot stream accepts it
    and may never call it. One that takes `cancelled` (a callable) checks it between steps."""

    description: str

    def generate(self, chat: ChatPrompt, options: JudgeOptions,
                 forcing: Forcing | None = None, on_reasoning=None) -> DecodeResult: ...


@runtime_checkable
class RequestBackend(Protocol):
    """A backend that judges whole requests itself (masking included), e.g. a ra-lite server."""

    def judge_request(self, request: JudgeRequest, options: JudgeOptions | None = None): ...


# Backward-compatible name: the Backend protocol of earlier releases.
Backend = CallBackend


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
            # Told to the engine here, whoever asks first (prepare, or the slot sizing), so
            # every judgment's prefill starts after it and the prompt cache holds it.
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
        """Everything the scheduler needs to run one judgment: its prompt tokens, its sampling
        settings and its step generator (one per response order of a request)."""
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


def plan_orders(request: JudgeRequest, options: JudgeOptions, model: str,
                say_once: Callable[[str, str], None] = lambda key, message: None) -> OrderPlan:
    """The chat prompts of a request under options.orders orders (RaLiteError when there are
    more than N! of them; one response has one order, which is said once through say_once)."""
    n = len(request.responses)
    k = options.orders
    if k > 1 and n == 1:
        say_once("one-response-orders", f"--orders {k} has no effect on a request with one "
                 "response (there is one order); judging it once")
        k = 1
    design = order_design(n, check_orders(k, n))
    chats = [build_chat_prompt(request.principle, request.prompt, request.responses,
                               None if i == 0 else order) for i, order in enumerate(design)]
    return OrderPlan(chats, model, time.perf_counter())


def forcing_for(reference: Judgment, chat: ChatPrompt) -> Forcing:
    """Teacher-forcing of a reference judgment's official-order output onto `chat`."""
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
    if score_records and all(len(c.options) == 5 and c.measured for c in score_records):
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
        timings=result.timings,
        model=model,
        think_token_ids=list(result.think_tokens),
        think_closing=result.think_closing,
        speculative=asdict(result.speculative) if result.speculative is not None else None,
        server=result.server,
    )


