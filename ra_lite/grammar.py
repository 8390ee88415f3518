"""The per-request output grammar: what a valid RewardAnything answer may be.

A valid output is a `<think>…</think>` block (or none, with thinking off) followed by exactly

    {
      "scores": {"model-1": 4, "model-2": 2, ...},
      "best-to-worst": ["model-1", "model-2", ...]
    }

with exactly the request's keys (in order model-1..N), integer scores 1–5, and a best-to-worst
list that names every key once and never places a lower score before a higher one. The layout
is the one the system prompt shows the model.

Almost all of that text is forced; the model only *chooses* at a few points: one digit per score
and, in the ranking, which of the equally-scored responses comes next. `AnswerGrammar` walks the
answer as a sequence of `Forced` spans and `Choice` points, and narrows later choices by earlier
ones (the ranking must follow the scores). This is stronger than any context-free grammar can be:
a CFG cannot remember the scores it produced. `to_gbnf()` exports the strongest CFG we can give to
engines that only take GBNF (exact keys, digits 1–5, the ranking a permutation); `parse_answer()`
then checks the score consistency that the GBNF cannot.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterator

SCORE_OPTIONS = ("1", "2", "3", "4", "5")
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Forced:
    """Text the answer must contain here."""

    text: str


@dataclass(frozen=True)
class Choice:
    """A point where the model picks one of `options` (texts, prefix-free).

    kind is "score" (key = the masked name being scored) or "rank" (key = the 0-based position).
    """

    kind: str
    key: str
    options: tuple[str, ...]


class AnswerGrammar:
    """Steps through one answer: iterate for Forced/Choice steps, `choose()` after each Choice."""

    def __init__(self, masked_names: list[str]):
        if not masked_names:
            raise ValueError("an answer needs at least one response")
        self.masked_names = list(masked_names)
        self.scores: dict[str, int] = {}
        self.ranking: list[str] = []
        self._pending: Choice | None = None

    def steps(self) -> Iterator[Forced | Choice]:
        names = self.masked_names
        for i, name in enumerate(names):
            lead = '{\n  "scores": {' if i == 0 else ", "
            # The space belongs to the choice, not the forced text: tokenizers that glue a space
            # to a digit (" 4" as one token) then see their natural tokens.
            yield Forced(f'{lead}"{name}":')
            yield self._ask(Choice("score", name, tuple(" " + d for d in SCORE_OPTIONS)))
        yield Forced('},\n  "best-to-worst": [')
        for position in range(len(names)):
            remaining = [n for n in names if n not in self.ranking]
            top = max(self.scores[n] for n in remaining)
            # Consistency: the next entry must carry the highest remaining score; the model
            # only chooses the order among ties.
            candidates = [n for n in remaining if self.scores[n] == top]
            lead = "" if position == 0 else ", "
            if len(candidates) == 1:
                yield Forced(f'{lead}"{candidates[0]}"')
                self.ranking.append(candidates[0])
            else:
                if lead:
                    yield Forced(lead)
                yield self._ask(Choice("rank", str(position), tuple(f'"{n}"' for n in candidates)))
        yield Forced("]\n}")

    def _ask(self, choice: Choice) -> Choice:
        self._pending = choice
        return choice

    def choose(self, option: str) -> None:
        """Record the option picked at the last Choice."""
        choice = self._pending
        if choice is None or option not in choice.options:
            raise ValueError(f"{option!r} is not an option here")
        self._pending = None
        if choice.kind == "score":
            self.scores[choice.key] = int(option.strip())
        else:
            self.ranking.append(option.strip('"'))

    def text(self) -> str:
        """The finished answer (valid only after the steps are exhausted)."""
        return render_answer(self.scores, self.ranking)


def render_answer(scores: dict[str, int], ranking: list[str]) -> str:
    """The canonical answer text, as AnswerGrammar produces it."""
    score_items = ", ".join(f'"{k}": {v}' for k, v in scores.items())
    rank_items = ", ".join(f'"{k}"' for k in ranking)
    return '{\n  "scores": {' + score_items + '},\n  "best-to-worst": [' + rank_items + "]\n}"


class AnswerError(ValueError):
    """Raised by parse_answer when a text is not a valid answer for the request."""


def split_reasoning(text: str) -> tuple[str, str]:
    """Split a raw output into (reasoning, answer text)."""
    start, end = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if end == -1:
        if start != -1:
            raise AnswerError("the <think> block is never closed")
        return "", text
    reasoning_start = start + len(THINK_OPEN) if start != -1 else 0
    return text[reasoning_start:end].strip(), text[end + len(THINK_CLOSE):]


def parse_answer(text: str, masked_names: list[str]) -> tuple[str, dict[str, int], list[str]]:
    """Strictly validate a raw output (from a remote engine or a fake) for this request.

    Returns (reasoning, scores, ranking) in masked names. Unlike the official parser, nothing is
    guessed or repaired: anything but a valid answer raises AnswerError saying what is wrong.
    """
    reasoning, answer = split_reasoning(text)
    answer = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", answer.strip())
    try:
        obj = json.loads(answer)
    except json.JSONDecodeError as e:
        raise AnswerError(f"the answer is not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(obj, dict) or set(obj) != {"scores", "best-to-worst"}:
        raise AnswerError('the answer must be an object with exactly "scores" and "best-to-worst"')
    scores, ranking = obj["scores"], obj["best-to-worst"]
    expected = set(masked_names)
    if not isinstance(scores, dict) or set(scores) != expected:
        raise AnswerError(f"scores must have exactly the keys {sorted(expected)}")
    for key, value in scores.items():
        if type(value) is not int or not 1 <= value <= 5:
            raise AnswerError(f"score of {key} is {value!r}, not an integer 1-5")
    if not isinstance(ranking, list) or sorted(map(str, ranking)) != sorted(expected) \
            or len(ranking) != len(expected):
        raise AnswerError("best-to-worst must name every response exactly once")
    for better, worse in zip(ranking, ranking[1:]):
        if scores[better] < scores[worse]:
            raise AnswerError(f"best-to-worst puts {better} ({scores[better]}) before "
                              f"{worse} ({scores[worse]})")
    ordered_scores = {name: scores[name] for name in masked_names}
    return reasoning, ordered_scores, list(ranking)


# Rankings are permutations; a CFG for "each name exactly once" needs one rule per subset of
# names already used, 2^N rules. Past this many responses the GBNF falls back to "any names"
# and parse_answer() does the permutation check.
GBNF_MAX_PERMUTATION = 10


def to_gbnf(masked_names: list[str], thinking: bool = True) -> str:
    """A GBNF grammar for engines that take one (llama.cpp server, llama-cpp-python's stock path).

    Enforces the think block (when thinking), the exact layout, keys and digits 1-5, and the
    ranking as a permutation (up to GBNF_MAX_PERMUTATION responses). It cannot enforce that the
    ranking follows the scores; parse_answer() checks that afterwards.
    """
    n = len(masked_names)
    lines = []
    think = 'think ::= "<think>" think-char* "</think>" [ \\t\\n]*\n' \
            'think-char ::= [^<] | "<" [^/] | "</" [^t] | "</t" [^h] | "</th" [^i] | ' \
            '"</thi" [^n] | "</thin" [^k] | "</think" [^>]'
    root = "root ::= think answer" if thinking else "root ::= answer"
    lines.append(root)
    if thinking:
        lines.append(think)
    score_parts = []
    for i, name in enumerate(masked_names):
        lead = '"{\\n  \\"scores\\": {' if i == 0 else '", '
        score_parts.append(f'{lead}\\"{name}\\":" score')
    lines.append('answer ::= ' + " ".join(score_parts) + ' "},\\n  \\"best-to-worst\\": [" ranking "]\\n}"')
    lines.append('score ::= " " [1-5]')
    names = [f'"\\"{name}\\""' for name in masked_names]
    if n <= GBNF_MAX_PERMUTATION:
        lines.append("ranking ::= perm-0")
        lines.extend(permutation_rules(names, "perm"))
    else:
        lines.append("name ::= " + " | ".join(names))
        lines.append('ranking ::= name' + ' ", " name' * (n - 1))
    return "\n".join(lines) + "\n"


def permutation_rules(names: list[str], rule: str) -> list[str]:
    """GBNF rules `<rule>-<mask>` deriving each of `names` (GBNF literals) exactly once,
    comma-separated; bit i of mask set = names[i] already used. Start symbol: `<rule>-0`."""
    full = (1 << len(names)) - 1
    rules = []
    for used in range(full):
        alts = []
        for i, name in enumerate(names):
            if used >> i & 1:
                continue
            nxt = used | 1 << i
            alts.append(name if nxt == full else f'{name} ", " {rule}-{nxt}')
        rules.append(f"{rule}-{used} ::= " + " | ".join(alts))
    return rules
