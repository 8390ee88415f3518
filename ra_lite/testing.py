"""A fake backend for tests: returns queued model outputs instead of running a model.

    from ra_lite import Judge
    from ra_lite.testing import FakeBackend

    judge = Judge(FakeBackend(['{"scores": {"model-1": 5, "model-2": 1}, '
                               '"best-to-worst": ["model-1", "model-2"]}']))

Outputs are written as the model would write them (masked names model-1..N, optional
<think> block) and go through the same strict parser as outputs from remote engines, so tests
exercise masking, unmasking and validation exactly as in production.
"""

from __future__ import annotations

from typing import Callable

from ra_lite.runtime.decode import BUDGET_CLOSE, ChoiceRecord, DecodeResult
from ra_lite.grammar import THINK_CLOSE, parse_answer, render_answer
from ra_lite.judgment import Timings


def ascending_answer(masked_names: list[str]) -> str:
    """A valid default output: model-1 scores 5, the rest 1 (so masking is visible in tests)."""
    scores = {name: 5 if i == 0 else 1 for i, name in enumerate(masked_names)}
    return "<think>\nfake reasoning\n</think>\n\n" + render_answer(scores, list(masked_names))


class FakeBackend:
    description = "fake backend"

    def __init__(self, outputs: list[str] = (),
                 fallback: Callable[[list[str]], str] | None = None):
        self.outputs = list(outputs)
        self.fallback = fallback
        self.calls: list = []      # (ChatPrompt, JudgeOptions) per generate()

    def queue(self, *outputs: str) -> None:
        self.outputs.extend(outputs)

    def generate(self, chat, options, forcing=None, on_reasoning=None) -> DecodeResult:
        self.calls.append((chat, options))
        if self.outputs:
            text = self.outputs.pop(0)
        elif self.fallback is not None:
            text = self.fallback(chat.masked_names)
        else:
            raise AssertionError("FakeBackend has no queued output left")
        reasoning, scores, ranking = parse_answer(text, chat.masked_names)
        closed = THINK_CLOSE in text
        if on_reasoning is not None:
            # Streamed word by word, as a model would (a word standing in for a token).
            words = reasoning.split(" ")
            for count, word in enumerate(words, 1):
                on_reasoning(word + (" " if count < len(words) else ""), count,
                             options.think_budget)
        return DecodeResult(
            text=text, reasoning=reasoning, scores=scores, ranking=ranking,
            choices=[ChoiceRecord("score", k, [str(v)], [1.0], str(v)) for k, v in scores.items()],
            think_tokens=[], think_closing=THINK_CLOSE if closed else "",
            think_end=("budget" if BUDGET_CLOSE in text else "model") if closed else "off",
            prompt_tokens=0, prompt_tokens_reused=0, answer_tokens=0, answer_tokens_evaluated=0,
            timings=Timings(),
        )
