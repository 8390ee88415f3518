"""Remote judging at choice points: the local decoder's own steps, answered by a server.

A judgment is the step generator of ra_lite.runtime.decode (`judgment_steps`), the same one the
local slot scheduler drives. Here a server answers its steps:

    Start       the prompt ids (nothing is sent yet)
    Sample      the reasoning: one request for the whole think block (n_predict = what is left
                of the budget, stop at </think>, the sampled ids returned); the generator takes
                the ids one by one through exactly the checks a local token gets (the budget,
                </think> as a token or spelled out, end of generation, the repetition guard)
    ReadLogits  a choice point (a score digit, the next name inside a tie): one one-token request
                whose prompt is everything so far (prompt + reasoning ids + the forced answer
                text up to the choice); the server's raw next-token log-probabilities of the
                allowed ids come back, and the generator renormalises them over those ids and
                samples with ra-lite's own sampler settings and seed (decode._picker)

So only choices go over the wire: N score requests plus one per name inside a tie (the last name
of a tie group and all fixed text are forced; nothing after the final choice is sent), each an
extension of the previous prompt that the server's prompt cache serves (pinned to one slot).
The result carries the probabilities a local judgment carries (expected scores, probability-
averaged --orders, replay for mini-RABench's KL divergence).

What each server offers for a choice point (read from their sources; see the README):
    llama.cpp   /completion "n_probs": the top-N of the raw distribution (before grammar,
                temperature); an allowed id outside the top N counts as probability 0 (it had
                less than the N-th token); when none is inside, the choice is answered by a
                one-token grammar request instead (ChoiceRecord.measured False, counted in
                ServerWork.choices_by_grammar; the judgment then has no expected scores)
    vllm        /v1/completions "logprob_token_ids" (exactly the allowed ids' raw log-probs)
"""

from __future__ import annotations

import math

from ra_lite.errors import RaLiteError
from ra_lite.judgment import ServerWork
from ra_lite.runtime.decode import (DecodeResult, Forcing, JudgmentCancelled, ReadLogits, Sample,
                                    Start, judgment_steps)

# A follow-up request must find at least the previous request's prompt in the server's cache.
CACHE_SLACK = 1


class ServerVocabulary:
    """The Vocabulary protocol (ra_lite.runtime.decode) over a remote judgment's token source.

    Pieces (a token's bytes) are fetched for many ids in one call and kept: the vocabulary is the
    server's and never changes. End-of-generation ids are the token source's where it knows them
    (a local GGUF), else learned from the server's own stops (the last id of a completion that
    stopped at end of generation)."""

    def __init__(self, tokens):
        self.tokens = tokens
        self._pieces: dict[int, bytes] = {}
        self.end_tokens: set[int] = set()
        self._single: dict[str, int | None] = {}

    def learn(self, ids: list[int]) -> None:
        unknown = list(dict.fromkeys(t for t in ids if t not in self._pieces))
        if unknown:
            pieces = self.tokens.pieces(unknown)
            if len(pieces) != len(unknown):
                raise RaLiteError("the server's /tokenize gave pieces for other tokens than asked",
                                  "check --remote-kind: is this llama.cpp's llama-server?")
            self._pieces.update(zip(unknown, pieces))

    def tokenize(self, text: str) -> list[int]:
        # The forced answer text: its pieces come with it (the decoder reads them right after).
        pairs = self.tokens.forced_pieces(text)
        self._pieces.update(pairs)
        return [t for t, _ in pairs]

    def piece(self, token: int) -> bytes:
        if token not in self._pieces:
            self.learn([token])
        return self._pieces[token]

    def is_end_of_generation(self, token: int) -> bool:
        return token in self.end_tokens or bool(self.tokens.end_of_generation(token))

    def single_token(self, text: str) -> int | None:
        if text not in self._single:
            ids = self.tokenize(text)
            self._single[text] = ids[0] if len(ids) == 1 else None
        return self._single[text]


class _Session:
    """One judgment's requests on one server slot, and what they cost."""

    def __init__(self, backend, vocab: ServerVocabulary, options, slot: int | None):
        self.backend, self.vocab, self.options, self.slot = backend, vocab, options, slot
        self.work = ServerWork(route="choices")
        self.previous_prompt = 0
        self.first_reused: int | None = None

    def _count(self, completion, prompt_length: int) -> None:
        work = self.work
        cached = completion.cached_tokens
        work.count(completion.completion_tokens, prompt_length, cached)
        if cached is not None:
            if self.first_reused is None:
                self.first_reused = cached
            elif cached + CACHE_SLACK < self.previous_prompt:
                work.cache_lost += 1
                self.backend.cache_was_lost(self.previous_prompt, cached)
        elif self.first_reused is None:
            self.first_reused = 0
        self.previous_prompt = prompt_length

    def reason(self, sequence: list[int], max_tokens: int) -> list[int]:
        completion = self.backend.reason(sequence, max(1, max_tokens), self.options, self.slot)
        self._count(completion, len(sequence))
        ids = completion.token_ids
        if not ids:
            raise RaLiteError(f"{self.backend.base_url} returned the reasoning without its token "
                              "ids", "use llama.cpp's llama-server or vLLM >= 0.12 (they return "
                              "them), or --remote-route grammar")
        self.vocab.learn(ids)
        if completion.stop == "eos":
            self.vocab.end_tokens.add(ids[-1])
        return list(ids)

    def read(self, sequence: list[int], step: ReadLogits) -> list[float]:
        completion = self.backend.choice_logprobs(sequence, step.token_ids, self.slot)
        self._count(completion, len(sequence))
        found = completion.logprobs or {}
        if any(t in found for t in step.token_ids):
            # Renormalised by the generator's softmax over the allowed ids; one missing from
            # the server's top N had less than the N-th token's probability: counted as 0.
            return [found.get(t, -math.inf) for t in step.token_ids]
        return self._by_grammar(sequence, step)

    def _by_grammar(self, sequence: list[int], step: ReadLogits) -> list[float]:
        """No allowed id among the returned probabilities: one grammar request picks one."""
        self.vocab.learn(step.token_ids)
        texts = [self.vocab.piece(t).decode("utf-8", "replace") for t in step.token_ids]
        completion = self.backend.choose_by_grammar(sequence, texts, self.options, self.slot)
        self._count(completion, len(sequence))
        if completion.text not in texts:
            raise self.backend.outside_grammar("choice", completion.text)
        self.work.choices_by_grammar += 1
        step.measured = False
        picked = texts.index(completion.text)
        return [0.0 if i == picked else -math.inf for i in range(len(texts))]


def judge_at_choices(backend, chat, options, forcing: Forcing | None = None,
                     on_reasoning=None, cancelled=None) -> DecodeResult:
    """One judgment of `chat` on the backend's server, answered at choice points (module doc).

    forcing: replay a reference output (its reasoning ids, scores and ranking) to read this
    server's probabilities at the same choices, as a local replay does."""
    rendered = backend.render(chat, options.think_budget > 0)
    prompt = backend.prompt_ids(chat, rendered)
    vocab = backend.vocabulary()
    steps = judgment_steps(vocab, prompt, chat.masked_names, think_budget=options.think_budget,
                           prompt_opens_think=rendered.rstrip().endswith("<think>"),
                           settings=options.sampling, forcing=forcing, on_reasoning=on_reasoning,
                           repetition_guard=options.repetition_guard, speculative=False)
    with backend.pinned_slot() as slot:
        session = _Session(backend, vocab, options, slot)
        result = _drive(steps, session, options.think_budget, cancelled)
    result.server = session.work
    result.prompt_tokens_reused = min(session.first_reused or 0, len(prompt))
    return result


def _drive(steps, session: _Session, think_budget: int, cancelled) -> DecodeResult:
    sequence: list[int] = []
    given = 0                       # reasoning ids handed to the generator so far
    answer = None
    try:
        while True:
            try:
                step = steps.send(answer)
            except StopIteration as done:
                return done.value
            if cancelled is not None and cancelled():
                raise JudgmentCancelled()
            if isinstance(step, Start):
                sequence, answer = list(step.tokens), 0
            # A new list each time: a request body (or a caller watching them) keeps its own.
            elif isinstance(step, Sample):
                sequence = sequence + step.feed
                answer = session.reason(sequence, think_budget - given)
                given += len(answer)
            elif isinstance(step, ReadLogits):
                sequence = sequence + step.feed
                answer = session.read(sequence, step)
            else:                               # pragma: no cover - a new kind of step
                raise TypeError(f"unknown decode step {step!r}")
    finally:
        steps.close()
