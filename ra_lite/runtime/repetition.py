"""Detects reasoning that has fallen into an exact loop, so the decoder can close it early.

A small model (and a large one, now and then) can fall into a loop inside `<think>`: one sentence,
word for word, back to back, until the think budget runs out. At temperature 0.1 it almost never
climbs out again, and every looped token is wasted time: on the embedded model, 3 of 4 outside
requests spent ~45 s each looping to the 2,048-token budget.

What counts as a loop: the last L tokens are periodic with a period p in [min_period, max_period]
(token i equals token i-p throughout), where L = max(min_repeats * p, min_span). That is, a span
of p tokens written out `min_repeats` times back to back, and at least `min_span` tokens of pure
repetition in all.

How it is found, O(max_period) vectorized work per token, independent of the reasoning's length
(no rescans): for every candidate period p the detector keeps `run[p]`, the number of consecutive
latest tokens with token[i] == token[i-p]. Each new token extends or resets every counter at once
(one numpy comparison against a ring buffer of the last max_period tokens). The last L tokens are
periodic with period p exactly when run[p] >= L - p.

The thresholds, and why (DEFAULT_* below). A false positive cuts real reasoning short, so they
are conservative; a missed loop only costs what it cost before (the budget still stops it).

* Legitimate text (measured, benchmarks/repetition_false_positives.py): the detector was run
  over 280k tokens of legitimate text, tokenized with the embedded model's tokenizer: every response in mini-RABench (code, lists,
  tables, math) and every .py/.md file of this repository (markdown tables, hex strings, test
  tables of near-identical lines). With the defaults: 0 detections. Looser settings do fire:
  2 repeats / 24-token span: 7 (a 12-column `|---|` rule, `0123456789abcdef` twice, rows of a
  test table); 3 repeats / 24 or 32 tokens: 1 (a markdown table rule of 12 to 16 columns);
  2 repeats / 48 tokens: 1. Only 3 repeats with a 48-token span left all of it alone.
* Real loops (measured, the embedded SmolLM2-135M at the default sampling and budget on 7
  mini-RABench quick items; benchmarks/repetition_guard.py): without the guard all 7 ran to the
  2,048-token budget, each in a loop of whole sentences or clauses (periods of 10 to 153 tokens,
  e.g. "The response must not include a referral score, and ..."). The detector would have fired
  at token 75 to 957. In 6 of the 7 the span then repeated without a single deviation up to the
  budget; the 7th deviated in 2 tokens and still ran to the budget. At temperature 0.1 the
  sampler nearly always takes the argmax, and the argmax repeats.

Hence: min_repeats 3 (a span written three times identically: the loop is established),
min_span 48 (short periods need many repeats, e.g. a 4-token span 12 times, so table rules and
separators do not trigger; a single token 48 times is a degenerate loop and does), min_period 1,
max_period 256 (a loop of whole paragraphs is caught too: with 3 repeats it fires after at most
768 tokens, well before the 2,048 budget). The thresholds were fixed before the benchmark run
above, not fitted to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_PERIOD = 1
DEFAULT_MAX_PERIOD = 256
DEFAULT_MIN_REPEATS = 3
DEFAULT_MIN_SPAN = 48


@dataclass(frozen=True)
class Loop:
    """A detected loop: the last `span` tokens repeat a `period`-token span back to back."""

    period: int
    span: int            # tokens of pure repetition at detection (>= the thresholds)
    at_token: int        # tokens seen when it was detected

    @property
    def repeats(self) -> float:
        return self.span / self.period


class RepetitionDetector:
    """Fed token ids one at a time; `feed` returns a Loop once the latest tokens form one."""

    def __init__(self, *, min_period: int = DEFAULT_MIN_PERIOD,
                 max_period: int = DEFAULT_MAX_PERIOD, min_repeats: int = DEFAULT_MIN_REPEATS,
                 min_span: int = DEFAULT_MIN_SPAN):
        if not 1 <= min_period <= max_period or min_repeats < 2:
            raise ValueError("need 1 <= min_period <= max_period and min_repeats >= 2")
        self.min_period, self.max_period = min_period, max_period
        self.periods = np.arange(1, max_period + 1)
        # run[p-1] must reach this for period p: span L = max(repeats*p, min_span), run >= L - p.
        needed = np.maximum(min_repeats * self.periods, min_span) - self.periods
        needed[: min_period - 1] = np.iinfo(np.int64).max          # periods below the minimum
        self._needed = needed
        self._runs = np.zeros(max_period, dtype=np.int64)
        self._ring = np.full(max_period, -1, dtype=np.int64)        # the last max_period tokens
        self.count = 0
        self.found: Loop | None = None

    def feed(self, token: int) -> Loop | None:
        """Add the next token; the Loop if the tokens so far now end in one, else None."""
        size = self.max_period
        previous = self._ring[(self.count - self.periods) % size]   # token[i - p] for every p
        same = previous == token
        same[self.periods > self.count] = False                     # before the first token
        self._runs = np.where(same, self._runs + 1, 0)
        self._ring[self.count % size] = token
        self.count += 1
        hits = np.flatnonzero(self._runs >= self._needed)
        if hits.size == 0:
            return None
        period = int(hits[0]) + 1                                    # the shortest period
        self.found = Loop(period=period, span=int(self._runs[hits[0]]) + period,
                          at_token=self.count)
        return self.found
