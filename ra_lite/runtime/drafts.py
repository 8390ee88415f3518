"""Drafts for speculative reasoning: n-gram lookup over the prompt and the reasoning so far.

A judge's reasoning quotes the responses, the principle and itself ("Response model-2 says
..."), so the tokens that followed the latest earlier occurrence of the last NGRAM tokens are a
good guess of what comes next (prompt-lookup decoding). The guess costs nothing to make; what it
costs is verification: the driver evaluates the draft beside the token it had to evaluate
anyway, and on a compute-bound CPU every extra token of a batch costs time (the verify-cost
curve in benchmarks/README.md). So the drafter drafts only on a match, and sizes each draft
from how much of the recent ones was accepted: a run of full acceptances (a quoted span, a
loop) doubles the length up to MAX_DRAFT, a rejection shrinks it to what was accepted plus one,
and after REJECT_PAUSE drafts in a row that were rejected outright it stays silent for PAUSE
steps before trying again.

The numbers were chosen from benchmarks/speculative.py on the 2-core reference machine (see
benchmarks/README.md, "Speculative reasoning").
"""

from __future__ import annotations

NGRAM = 3            # tokens that must match before anything is drafted
MAX_DRAFT = 8        # most tokens in one draft
FIRST_DRAFT = 4      # the first draft's length, before anything is known about acceptance
REJECT_PAUSE = 3     # drafts rejected at their first token in a row before pausing
PAUSE = 16           # steps without drafts after that


class NgramDrafter:
    """Drafts from `context` (the prompt's tokens) and every token extend() adds."""

    def __init__(self, context: list[int], ngram: int = NGRAM, max_draft: int = MAX_DRAFT):
        self.ngram, self.max_draft = ngram, max_draft
        self.tokens: list[int] = []
        self.follows: dict[tuple[int, ...], int] = {}   # n-gram -> where its latest next token is
        self.length = min(FIRST_DRAFT, max_draft)
        self.rejected_in_a_row = 0
        self.paused = 0
        self.drafted = self.accepted = self.steps = 0
        for token in context:
            self.extend(token)

    def extend(self, token: int) -> None:
        """One more token of the sequence (the n-gram before it now has a continuation)."""
        n = self.ngram
        if len(self.tokens) >= n:
            self.follows[tuple(self.tokens[-n:])] = len(self.tokens)
        self.tokens.append(token)

    def propose(self, most: int) -> list[int]:
        """A draft of at most `most` tokens ([] when there is no match or drafting pays not)."""
        self.steps += 1
        if self.paused:
            self.paused -= 1
            return []
        if most <= 0 or len(self.tokens) < self.ngram:
            return []
        start = self.follows.get(tuple(self.tokens[-self.ngram:]))
        if start is None:
            return []
        return self.tokens[start:start + min(self.length, most)]

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

    def counts(self) -> dict[str, int]:
        """What ra_lite.speculative records: tokens drafted (verified), accepted, and steps."""
        return {"drafted": self.drafted, "accepted": self.accepted, "steps": self.steps}
