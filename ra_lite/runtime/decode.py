"""Constrained decoding that costs almost nothing over free decoding.

Stock grammar sampling in llama-cpp-python checks every vocabulary entry against the grammar at
every token (~150k checks/token for Qwen). We never need that:

* Inside `<think>` the text is free: tokens come from llama.cpp's native sampler untouched. We only
  watch for the end of the block (the `</think>` token or text), an end-of-generation token
  (which would end the output too early, so it closes the block instead), and the user's budget.
* The answer is forced text except at a few choice points (see grammar.py). Forced text is
  collected as *text* and tokenized together with each option, so the model sees the tokens its
  tokenizer would produce for the whole string; the tokens all options share are fed in one batch
  (prefill speed), and the model's logits are read only for the handful of tokens where the
  options differ. Those logits give, for free, the model's probability of each score.

The same loop replays a given output (teacher forcing) to read another model's distributions at
the same choice points, which is how mini-RABench measures a quant's damage.

The decoder is written as a *step generator* (`judgment_steps`): it never evaluates anything
itself, it yields what it needs next (`Start` a prompt, `Sample` a token, `ReadLogits` at a choice)
and is sent the answer. The slot scheduler (scheduler.py) drives every judgment, one or many at
once, in shared llama_decode batches, so all judgments follow exactly the same rules. Tokens a
step carries in `feed` are appended to the sequence and evaluated before the step's own read,
which is how forced spans and sampled tokens reach the KV cache without a call of their own.

Speculative reasoning (`speculative=True`): each reasoning Sample may carry a draft, the tokens
that followed the latest earlier occurrence of the last few tokens in the prompt or the
reasoning so far (drafts.py). The driver verifies the draft in the same batch and answers with
every token it sampled, 1 to len(draft) + 1 of them; the generator takes them one by one through
exactly the checks a single token gets (the think budget, `</think>`, end of generation, the
repetition guard, streaming), so the reasoning is the same token sequence the plain path would
produce from the same samples, and stops where it would.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ra_lite.grammar import THINK_CLOSE, THINK_OPEN, AnswerGrammar, Choice, Forced
from ra_lite.judgment import ServerWork, Timings
from ra_lite.runtime.drafts import DraftCounts
from ra_lite.runtime.repetition import RepetitionDetector

# Text that closes a think block cut short by the budget, and what follows a closed block.
BUDGET_CLOSE = "\n" + THINK_CLOSE + "\n\n"
AFTER_THINK = "\n\n"


def common_prefix_length(a, b) -> int:
    """How many leading tokens two sequences share (KV reuse is decided by it)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Vocabulary(Protocol):
    """The text side of a model, which the step generator calls directly (no evaluation)."""

    def tokenize(self, text: str) -> list[int]: ...          # special tokens parsed, no BOS
    def piece(self, token: int) -> bytes: ...                 # the token's bytes
    def is_end_of_generation(self, token: int) -> bool: ...
    def single_token(self, text: str) -> int | None: ...      # id if `text` is one special token


# --- the steps a judgment asks its driver for ---------------------------------------------------
@dataclass
class Start:
    """Begin the judgment's sequence with this prompt. Answer: how many prompt tokens were
    already in the KV cache. A driver may defer evaluating the rest until the next step."""

    tokens: list[int]


@dataclass
class Sample:
    """Append and evaluate `feed`, then sample at the last position with the judgment's native
    sampler chain. Answer: the sampled token ids, a list.

    draft: tokens expected next. A driver may verify them (evaluate them after `feed`, sample
    their rows in order, stop at the first sample that is not the draft's token) and answer
    with every token it sampled; it sets `verified` to how many draft tokens it evaluated (0
    when it ignored the draft: the answer is then one token)."""

    feed: list[int]
    draft: list[int] = field(default_factory=list)
    verified: int = 0


@dataclass
class ReadLogits:
    """Append and evaluate `feed`, then read the logits of `token_ids` at the last position.
    Answer: a float array in the order of `token_ids` (log-probabilities do as well: only their
    differences matter; -inf for a token that cannot be chosen).

    measured: a driver that could not read the distribution sets it False and answers 0 for
    the token it picked some other way and -inf for the rest (ChoiceRecord.measured)."""

    feed: list[int]
    token_ids: list[int]
    measured: bool = True


Step = Start | Sample | ReadLogits


class ReasoningListener(Protocol):
    """Told about every reasoning token as it is generated (progress, streaming)."""

    def __call__(self, text: str, tokens_so_far: int, budget: int) -> None: ...


@dataclass
class SamplingSettings:
    temperature: float = 0.1
    top_p: float = 0.9
    seed: int = 0


@dataclass
class ChoiceRecord:
    """What the model chose at one choice point, and with what probabilities.

    `options` are the distinct option texts; `probabilities` the model's distribution over them
    (softmax of its logits restricted to them, temperature 1). Forced-by-replay choices record the
    same distribution for the option the reference took. `measured` is False where the driver
    could not read the distribution and answered with the option it picked some other way (a
    server's grammar fallback, ra_lite.remote.choice_route): its probabilities are then 1 for that
    option and mean nothing.
    """

    kind: str
    key: str
    options: list[str]
    probabilities: list[float]
    chosen: str
    measured: bool = True


@dataclass
class Forcing:
    """A previous output to replay instead of sampling (teacher forcing)."""

    think_tokens: list[int]
    think_closing: str
    scores: dict[str, int]
    ranking: list[str]


@dataclass
class DecodeResult:
    text: str                      # everything generated after the prompt
    reasoning: str
    scores: dict[str, int]         # masked names
    ranking: list[str]
    choices: list[ChoiceRecord]
    think_tokens: list[int]        # the reasoning's own tokens (not the closing)
    think_closing: str             # forced text from the end of reasoning to the answer
    think_end: str                 # why reasoning ended: off, model, budget, end_of_generation,
                                   # repetition (an exact loop, see repetition.py), or replayed
    prompt_tokens: int
    prompt_tokens_reused: int
    answer_tokens: int
    answer_tokens_evaluated: int
    timings: Timings = field(default_factory=Timings)
    speculative: DraftCounts | None = None      # drafted, accepted, steps (None: off)
    server: ServerWork | None = None            # a remote server's work (None: local)

    @property
    def think_closed_by_model(self) -> bool:
        return self.think_end == "model"


class _Emitter:
    """Accumulates forced text and queues its tokens, so spans are tokenized as a whole; the
    queue travels with the next step that evaluates anything."""

    def __init__(self, vocab: Vocabulary):
        self.engine = vocab
        self.pending = ""
        self.text_parts: list[str] = []
        self.tokens_committed = 0
        self.tokens_evaluated = 0
        self._queue: list[int] = []
        self._answer_tokens_queued = 0

    def force(self, text: str) -> None:
        self.pending += text

    def commit(self, tokens: list[int], text: str) -> None:
        self._queue.extend(tokens)
        self.text_parts.append(text)
        self.tokens_committed += len(tokens)
        self._answer_tokens_queued += len(tokens)

    def queue(self, tokens: list[int]) -> None:
        """Tokens to evaluate (not part of the answer's forced text, e.g. reasoning)."""
        self._queue.extend(tokens)

    def take_queue(self) -> list[int]:
        """The tokens the next evaluating step must feed first."""
        queued, self._queue = self._queue, []
        self.tokens_evaluated += self._answer_tokens_queued
        self._answer_tokens_queued = 0
        return queued

    def finish(self) -> None:
        """The tail after the last choice is never evaluated: nothing reads its logits."""
        if self.pending:
            self.commit(self.engine.tokenize(self.pending), self.pending)
            self.pending = ""

    def decide(self, options: tuple[str, ...], pick, target: str | None = None):
        """Resolve a choice among option texts; returns (option, distinct first texts, probs,
        whether every distribution it used was measured).

        Each round tokenizes pending+option for every live option, commits the tokens they all
        share, and lets `pick` choose among the first tokens where they differ — or, replaying,
        takes the branch that leads to `target`. A generator: it yields ReadLogits steps.
        """
        live = {o: o for o in options}          # remaining text -> original option
        first_options, first_probs, measured = None, None, True
        pending = self.pending
        while True:
            if len(live) == 1:
                (rest, original), = live.items()
                self.pending = pending + rest
                return original, first_options, first_probs, measured
            tokenized = {rest: self.engine.tokenize(pending + rest) for rest in live}
            shared = _common_prefix(list(tokenized.values()))
            branch = {rest: toks[len(shared)] for rest, toks in tokenized.items()}
            distinct = list(dict.fromkeys(branch.values()))
            shared_text = self._text_of(shared)
            self.commit(shared, shared_text)
            feed = self.take_queue()
            read = ReadLogits(feed, distinct)
            logits = np.asarray((yield read), dtype=np.float64)
            measured = measured and read.measured
            if target is None:
                index = pick(logits)
            else:
                index = distinct.index(next(tok for rest, tok in branch.items()
                                            if live[rest] == target))
            probs = _softmax(logits)
            token = distinct[index]
            token_text = self._text_of([token])
            if first_options is None:
                labels = {}
                for rest, tok in branch.items():
                    labels.setdefault(tok, live[rest])
                first_options = [labels[t] for t in distinct]
                first_probs = probs.tolist()
            self.commit([token], token_text)
            consumed = len(shared_text) + len(token_text)
            live = {(pending + rest)[consumed:]: original for rest, original in live.items()
                    if branch[rest] == token}
            pending = ""

    def _text_of(self, tokens: list[int]) -> str:
        return b"".join(self.engine.piece(t) for t in tokens).decode("utf-8")


def _common_prefix(sequences: list[list[int]]) -> list[int]:
    shortest = min(sequences, key=len)
    for i, token in enumerate(shortest):
        if any(seq[i] != token for seq in sequences):
            return shortest[:i]
    return list(shortest)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


def _picker(settings: SamplingSettings, rng: np.random.Generator):
    """Choose among choice-point logits with the same temperature/top-p as free text."""

    def pick(logits: np.ndarray) -> int:
        if settings.temperature <= 0:
            return int(np.argmax(logits))
        probs = _softmax(logits / settings.temperature)
        order = np.argsort(-probs)
        keep = np.cumsum(probs[order]) - probs[order] < settings.top_p   # always keeps the top
        kept = order[keep]
        return int(rng.choice(kept, p=probs[kept] / probs[kept].sum()))

    return pick


class JudgmentCancelled(Exception):
    """The judgment's requester went away (e.g. a server client disconnected); its work stops
    between two steps. Not a user error: nobody is left to read a message."""


def judgment_steps(vocab: Vocabulary, prompt_tokens: list[int], masked_names: list[str], *,
                   think_budget: int, prompt_opens_think: bool = False,
                   settings: SamplingSettings | None = None, forcing: Forcing | None = None,
                   on_reasoning: ReasoningListener | None = None, repetition_guard: bool = True,
                   speculative: bool = False):
    """The judgment as a generator of steps (see the module docstring); returns a DecodeResult.

    on_reasoning(text, tokens_so_far, budget) is called for every reasoning token as sampled.
    repetition_guard: close the reasoning early (think_end "repetition") once it has fallen into
    an exact loop (ra_lite.runtime.repetition); the steps themselves are the same either way.
    speculative: draft reasoning tokens by n-gram lookup for the driver to verify (module doc).
    """
    settings = settings or SamplingSettings()
    rng = np.random.default_rng(settings.seed)
    started = time.perf_counter()
    reused = yield Start(list(prompt_tokens))
    # The driver evaluates the prompt with the first step that needs it: the prefill ends when
    # that step's answer arrives.
    clock: dict[str, float] = {}

    out = _Emitter(vocab)
    reasoning, think_tokens, closing, think_end = "", [], "", "off"
    drafts = None
    if think_budget > 0:
        if not prompt_opens_think:
            out.force(THINK_OPEN + "\n")
        out.finish()
        if speculative and forcing is None:
            from ra_lite.runtime.drafts import NgramDrafter

            drafts = NgramDrafter(prompt_tokens)
        reasoning, think_tokens, closing, think_end = yield from _stamped(_think(
            vocab, out, think_budget, forcing, on_reasoning, repetition_guard, drafts), clock)
    thought = time.perf_counter()

    grammar = AnswerGrammar(masked_names)
    pick = _picker(settings, rng)
    records: list[ChoiceRecord] = []
    for step in grammar.steps():
        if isinstance(step, Forced):
            out.force(step.text)
            continue
        target = None if forcing is None else _replay_target(step, forcing)
        chosen, options, probs, measured = yield from _stamped(
            out.decide(step.options, pick, target), clock)
        grammar.choose(chosen)
        records.append(ChoiceRecord(step.kind, step.key, [o.strip().strip('"') for o in options],
                                    probs, chosen.strip().strip('"'), measured))
    out.finish()
    done = time.perf_counter()
    prefilled = clock.get("first_answer", done)    # with thinking off, inside the answer
    answering = max(thought, prefilled)
    return DecodeResult(
        text="".join(out.text_parts), reasoning=reasoning, scores=dict(grammar.scores),
        ranking=list(grammar.ranking), choices=records, think_tokens=think_tokens,
        think_closing=closing, think_end=think_end, prompt_tokens=len(prompt_tokens),
        prompt_tokens_reused=reused, answer_tokens=out.tokens_committed,
        answer_tokens_evaluated=out.tokens_evaluated,
        timings=Timings(prefill_s=prefilled - started, think_s=max(0.0, thought - prefilled),
                        answer_s=done - answering, total_s=done - started),
        speculative=drafts.counts() if drafts is not None else None,
    )


def forwarded(steps, on_answer):
    """Forward a step generator unchanged, calling on_answer(step, answer) after each answer.

    One way to watch a judgment's steps from outside (timing here, tests' records) without a
    second copy of the send/yield protocol.
    """
    answer = None
    while True:
        try:
            step = steps.send(answer)
        except StopIteration as done:
            return done.value
        answer = yield step
        on_answer(step, answer)


def _stamped(steps, clock: dict):
    """Forward a step generator, noting when its first answer arrives (the prefill's end)."""
    return forwarded(steps, lambda step, answer: clock.setdefault("first_answer",
                                                                  time.perf_counter()))


def _replay_target(step: Choice, forcing: Forcing) -> str:
    """The option text the replayed output took at this choice."""
    if step.kind == "score":
        target = f" {forcing.scores[step.key]}"
    else:
        target = f'"{forcing.ranking[int(step.key)]}"'
    if target not in step.options:
        raise ValueError(f"the replayed output is not valid here ({step.kind} {step.key})")
    return target


def _think(vocab: Vocabulary, out: _Emitter, budget: int, forcing: Forcing | None,
           on_reasoning: ReasoningListener | None, repetition_guard: bool = True, drafts=None):
    """Free-running reasoning (a step generator). Returns (reasoning, content tokens, closing
    text, why it ended).

    The closing text is what follows the content up to the answer; it is forced (tokenized with
    the answer's first text), so a replay reproduces it exactly from (tokens, closing text).
    """
    if forcing is not None:
        tokens = list(forcing.think_tokens)
        out.queue(tokens)
        text = b"".join(vocab.piece(t) for t in tokens)
        closing = forcing.think_closing
        reasoning = _reasoning_text(text + closing.encode())
        end = "replayed"
    else:
        tokens, text, closing, reasoning, end = yield from _sample_thought(
            vocab, out, budget, on_reasoning, repetition_guard, drafts)
    out.text_parts.append(text.decode("utf-8", errors="replace"))
    out.force(closing)
    return reasoning, tokens, closing, end


def _sample_thought(vocab: Vocabulary, out: _Emitter, budget: int,
                    on_reasoning: ReasoningListener | None, repetition_guard: bool = True,
                    drafts=None):
    close_token = vocab.single_token(THINK_CLOSE)
    loops = RepetitionDetector() if repetition_guard else None
    tag = THINK_CLOSE.encode()
    tokens: list[int] = []
    text = b""
    # A character may span tokens: listeners get whole characters only.
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    sampled: list[int] = []
    while len(tokens) < budget:
        if not sampled:
            # A draft never reaches past the budget: every token sampled for it can be used.
            draft = drafts.propose(budget - len(tokens) - 1) if drafts is not None else []
            step = Sample(out.take_queue(), draft)
            sampled = list((yield step))
            if drafts is not None:
                drafts.verified(step.verified, len(sampled) - 1)
        token = sampled.pop(0)
        if token == close_token:
            return tokens, text, THINK_CLOSE + AFTER_THINK, _reasoning_text(text), "model"
        if vocab.is_end_of_generation(token):
            # Ending here would give no answer: close the block instead.
            return tokens, text, BUDGET_CLOSE, _reasoning_text(text), "end_of_generation"
        piece = vocab.piece(token)
        # Only a tag that ends in this token is new: search the tail, not all the reasoning.
        tail_start = max(0, len(text) - len(tag) + 1)
        at = (text[tail_start:] + piece).find(tag)
        at = at + tail_start if at != -1 else -1
        if at != -1:
            # The model spelled the closing tag over several tokens. Everything evaluated so far
            # stays; the rest of the tag is forced instead of this token (which may carry text
            # past the tag that would break the answer).
            rest = (text + piece)[len(text):at + len(tag)].decode("utf-8", "replace")
            return tokens, text, rest + AFTER_THINK, _reasoning_text((text + piece)[:at]), "model"
        tokens.append(token)
        text += piece
        out.queue([token])
        if drafts is not None:
            drafts.extend(token)
        if on_reasoning is not None:
            on_reasoning(utf8.decode(piece), len(tokens), budget)
        if loops is not None and loops.feed(token) is not None and len(tokens) < budget:
            # An exact loop: the model would repeat it to the budget. Close it like the budget
            # does (the loop's tokens stay: they are evaluated, and a replay needs them).
            return tokens, text, BUDGET_CLOSE, _reasoning_text(text), "repetition"
    return tokens, text, BUDGET_CLOSE, _reasoning_text(text), "budget"


def _reasoning_text(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text.split(THINK_CLOSE)[0].strip()
