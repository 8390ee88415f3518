"""Drafts for speculative reasoning: n-gram lookup over the prompt and the reasoning so far.

A judge's reasoning quotes the responses, the principle and itself ("Response model-2 says
..."), so the tokens that followed the latest earlier occurrence of the last few tokens are a
good guess of what comes next (prompt-lookup decoding). The guess costs nothing to make; what it
costs is verification: the driver evaluates the draft beside the token it had to evaluate
anyway, and on a compute-bound CPU every extra token of a batch costs time (the verify-cost
curve in benchmarks/README.md). So the drafter drafts only on a match, and sizes each draft
from how much of the recent ones was accepted: a run of full acceptances (a quoted span, a
loop) doubles the length up to MAX_DRAFT, a rejection shrinks it to what was accepted plus one,
and after REJECT_PAUSE drafts in a row that were rejected outright it stays silent for PAUSE
steps before trying again.

The numbers were chosen on the 2-core reference machine by replaying the reasoning of 12
mini-RABench judgments of the embedded model through the drafter against the measured
verify-cost curve (a decode of n tokens there costs about 20 + 10.5 (n - 1) ms, so a drafted
token pays only when more than half of them are accepted): longest match 4 backing off to 2,
drafts of at most 3, and a pause after 3 outright rejections scored best (1.23x predicted;
longer drafts and single-n lookups scored lower). See benchmarks/README.md, "Speculative
reasoning", for what it measured.
"""

from __future__ import annotations

from dataclasses import dataclass

NGRAM_LONGEST, NGRAM_SHORTEST = 4, 2   # match the longest context first, down to this
MAX_DRAFT = 3        # most tokens in one draft
FIRST_DRAFT = 1      # the first draft's length, before anything is known about acceptance
REJECT_PAUSE = 3     # drafts rejected at their first token in a row before pausing
PAUSE = 16           # steps without drafts after that


class NgramDrafter:
    """Drafts from `context` (the prompt's tokens) and every token extend() adds: the tokens
    that followed the latest earlier occurrence of the longest suffix (NGRAM_LONGEST tokens,
    backing off to NGRAM_SHORTEST) that occurred before."""

    def __init__(self, context: list[int], longest: int = NGRAM_LONGEST,
                 shortest: int = NGRAM_SHORTEST, max_draft: int = MAX_DRAFT):
        self.sizes = list(range(longest, shortest - 1, -1))
        self.max_draft = max_draft
        self.tokens: list[int] = []
        # n -> {n-gram: where the token after its latest occurrence is}
        self.follows: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in self.sizes}
        self.length = min(FIRST_DRAFT, max_draft)
        self.rejected_in_a_row = 0
        self.paused = 0
        self.drafted = self.accepted = self.steps = 0
        for token in context:
            self.extend(token)

    def extend(self, token: int) -> None:
        """One more token of the sequence (the n-grams before it now have a continuation)."""
        at = len(self.tokens)
        for n, table in self.follows.items():
            if at >= n:
                table[tuple(self.tokens[at - n:])] = at
        self.tokens.append(token)

    def propose(self, most: int) -> list[int]:
        """A draft of at most `most` tokens ([] when there is no match or drafting pays not)."""
        self.steps += 1
        if self.paused:
            self.paused -= 1
            return []
        if most <= 0:
            return []
        for n in self.sizes:
            if len(self.tokens) < n:
                continue
            start = self.follows[n].get(tuple(self.tokens[-n:]))
            if start is not None:
                return self.tokens[start:start + min(self.length, most)]
        return []

    def verified(self, drafted: int, accepted: int) -> None:
        """The driver evaluated `drafted` draft tokens and `accepted` of them were sampled."""
        if drafted <= 0:
            return
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.length = min(self.max_draft, self.length * 2)
            self.rejected_in_a_row = 0
            return
        self.length = max(1, accepted + 1)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if accepted == 0 else 0
        if self.rejected_in_a_row >= REJECT_PAUSE:
            self.paused, self.rejected_in_a_row = PAUSE, 0

    def counts(self) -> "DraftCounts":
        """What ra_lite.speculative records: tokens drafted (verified), accepted, and steps."""
        return DraftCounts(self.drafted, self.accepted, self.steps)


@dataclass(frozen=True)
class DraftCounts:
    """A judgment's speculation: tokens drafted (and verified), accepted, and reasoning steps.
    Its dict (asdict) is the `ra_lite.speculative` record of a result."""

    drafted: int = 0
    accepted: int = 0
    steps: int = 0
