"""Order-robust verdicts: one request judged under K response orders, and one verdict from them.

A RewardAnything verdict is read off one presentation of the responses: the official seed-42
shuffle decides which response the model reads as model-1. Judges are position-biased (a weak
model's verdict is mostly its position preference), so ra-lite can judge the same request under
K orders and aggregate (permutation self-consistency, Tang et al. 2024; the swap test of
MT-Bench for pairs). Background: shared/notes/position-bias.md.

Which orders (`order_design`). Orders are permutations of the official order; order 1 is always
the official order itself, so K = 1 is exactly the plain judgment. `shift(o)` shows the response
at official position (i + o) mod N as model-(i+1).
- K = N: every cyclic shift, a Latin square: every response stands in every position exactly once,
  so a pure position preference adds the same to every response.
- K = 2 (N > 2): the official order and its reversal, the swap test generalised: every pair of
  responses is seen in both relative orders, and first and last trade places (primacy and
  recency, the strongest position effects, cancel; with N odd the middle one stays put).
- 2 < K < N: K cyclic shifts at evenly spaced offsets (round down j * N / K): no response is
  shown twice in the same position, and each one's positions spread over the whole list.
- N < K <= 2N: the Latin square, then reversed shifts at evenly spaced offsets; at K = 2N every
  response is in every position twice and every pair is seen equally often each way round.
- K > 2N: the above, then further distinct permutations drawn by a fixed-seed generator.
K is at most N! (the distinct orders there are); 0, negatives and more are refused.

Aggregation (`combine`), keeping the model's contract (integer scores 1-5, a ranking that never
puts a lower score first):
- each response's probability of every score is averaged over the orders, so its expected score
  is the mean of its per-order expected scores (integer scores where a backend gives no
  probabilities, e.g. a remote server); the integer score is that mean rounded half up
  (floor(mean + 0.5)), within 1-5;
- the ranking orders by those scores; responses with equal scores are ordered by the Kemeny
  consensus of the K rankings restricted to them (fewest pairwise disagreements with the
  orders, exact by dynamic programming over subsets up to KEMENY_MAX responses, Borda (mean
  position) beyond); equal consensus cost goes to the higher mean expected score, then the
  earlier official position.
- consistency: `pairwise_agreement` (share of response pairs ordered the same way in every
  order), `top1_agreement` (share of orders whose winner is the aggregated winner),
  `score_spread` (per response, max - min of its integer score over the orders) and, with
  probabilities, `expected_score_spread`.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import replace
from itertools import combinations

from ra_lite.errors import RaLiteError
from ra_lite.judgment import Consistency, Judgment, Timings, TokenCounts

KEMENY_MAX = 10          # exact Kemeny up to this many tied responses (2^N * N^2 steps)
EXTRA_ORDERS_SEED = 42   # the generator of orders beyond 2N (fixed: same orders every run)


def check_orders(orders, n_responses: int | None = None) -> int:
    """The number of orders as an int, or RaLiteError naming the limit (N! for N responses)."""
    if isinstance(orders, bool) or not isinstance(orders, int):
        try:
            value = int(str(orders).strip())
        except ValueError:
            raise RaLiteError(f"--orders {orders!r} is not a number of orders",
                              "use --orders 1 (the official order only) or more") from None
        orders = value
    if orders < 1:
        raise RaLiteError(f"--orders {orders} is below 1: order 1 is the official order",
                          "use --orders 1 (the official order only) or more")
    if n_responses is not None and n_responses >= 1:
        distinct = math.factorial(n_responses)
        if orders > distinct:
            raise RaLiteError(
                f"--orders {orders} is more than the {distinct} distinct order"
                f"{'s' if distinct > 1 else ''} of {n_responses} response"
                f"{'s' if n_responses > 1 else ''}",
                f"use --orders {distinct} or less for requests with {n_responses} responses")
    return orders


def shift(n: int, offset: int) -> tuple[int, ...]:
    return tuple((i + offset) % n for i in range(n))


def order_design(n: int, k: int) -> list[tuple[int, ...]]:
    """K orders of N responses (see the module docstring); order_design(n, k)[0] is the
    identity (the official order). Each order lists official indices in presentation order."""
    check_orders(k, n)
    if k == 1:
        return [shift(n, 0)]
    if k == 2 and n > 2:
        return [shift(n, 0), tuple(reversed(range(n)))]
    if k <= n:
        return [shift(n, (j * n) // k) for j in range(k)]
    rows = [shift(n, o) for o in range(n)]
    reversed_rows = min(k - n, n)
    rows += [tuple(reversed(shift(n, (j * n) // reversed_rows))) for j in range(reversed_rows)]
    seen = set(rows)
    rng = random.Random(EXTRA_ORDERS_SEED)
    while len(rows) < k:
        candidate = list(range(n))
        rng.shuffle(candidate)
        candidate = tuple(candidate)
        if candidate not in seen:
            seen.add(candidate)
            rows.append(candidate)
    return rows


def consistency(verdicts: list[Judgment], winner: str) -> Consistency:
    names = list(verdicts[0].scores)
    positions = [{name: i for i, name in enumerate(v.ranking)} for v in verdicts]
    pairs = list(combinations(names, 2))
    agreeing = sum(1 for a, b in pairs
                   if len({p[a] < p[b] for p in positions}) == 1)
    expected = [v.expected_scores for v in verdicts]
    return Consistency(
        n_orders=len(verdicts),
        pairwise_agreement=agreeing / len(pairs) if pairs else None,
        top1_agreement=sum(v.ranking[0] == winner for v in verdicts) / len(verdicts),
        score_spread={n: max(v.scores[n] for v in verdicts) - min(v.scores[n] for v in verdicts)
                      for n in names},
        expected_score_spread=None if any(e is None for e in expected) else
        {n: max(e[n] for e in expected) - min(e[n] for e in expected) for n in names})


def round_score(mean: float) -> int:
    """Half up, within the scale: 3.5 -> 4, 3.49 -> 3."""
    return min(5, max(1, math.floor(mean + 0.5)))


def consensus_ranking(scores: dict[str, int], rankings: list[list[str]],
                      tiebreak: dict[str, tuple]) -> list[str]:
    """Best to worst: by score, ties by Kemeny consensus of `rankings` (Borda past KEMENY_MAX),
    equal consensus by `tiebreak` (smaller first)."""
    ranked: list[str] = []
    for score in sorted(set(scores.values()), reverse=True):
        group = [n for n in scores if scores[n] == score]
        if len(group) == 1:
            ranked += group
        elif len(group) <= KEMENY_MAX:
            ranked += _kemeny(group, rankings, tiebreak)
        else:
            mean_position = {n: sum(r.index(n) for r in rankings) / len(rankings) for n in group}
            ranked += sorted(group, key=lambda n: (mean_position[n], tiebreak[n]))
    return ranked


def _kemeny(group: list[str], rankings: list[list[str]], tiebreak: dict[str, tuple]) -> list[str]:
    """The order of `group` with the fewest pairwise disagreements with `rankings`: f(R) = the
    least cost of ordering the set R, choosing its first element x (every y in R after x
    disagrees with the rankings that put y first)."""
    g = len(group)
    before = [[0] * g for _ in range(g)]      # before[a][b]: rankings putting a before b
    for ranking in rankings:
        position = {n: i for i, n in enumerate(ranking)}
        for a in range(g):
            for b in range(g):
                if a != b and position[group[a]] < position[group[b]]:
                    before[a][b] += 1
    order = sorted(range(g), key=lambda i: tiebreak[group[i]])   # ties: smallest key first
    best: dict[int, tuple[int, int]] = {0: (0, -1)}            # remaining mask -> (cost, first)
    for mask in range(1, 1 << g):
        choice = None
        for x in order:
            if not mask >> x & 1:
                continue
            rest = mask & ~(1 << x)
            cost = best[rest][0] + sum(before[y][x] for y in range(g) if rest >> y & 1)
            if choice is None or cost < choice[0]:
                choice = (cost, x)
        best[mask] = choice
    out, mask = [], (1 << g) - 1
    while mask:
        x = best[mask][1]
        out.append(group[x])
        mask &= ~(1 << x)
    return out


def combine(verdicts: list[Judgment], official_names: list[str], wall_s: float) -> Judgment:
    """One Judgment from the per-order verdicts (verdicts[0] is the official order's).

    official_names: the caller's names in the official masked order (model-1..N of order 1),
    the last tie-break. The result keeps order 1's reasoning, raw text and masking, carries
    every verdict in `orders` and their agreement in `consistency`.
    """
    if len(verdicts) == 1:
        return verdicts[0]
    first = verdicts[0]
    names = list(first.scores)
    probabilities = None
    if all(v.score_probabilities for v in verdicts):
        probabilities = {n: [sum(v.score_probabilities[n][d] for v in verdicts) / len(verdicts)
                             for d in range(5)] for n in names}
    means = {n: sum((v.expected_scores or v.scores)[n] for v in verdicts) / len(verdicts)
             for n in names}
    scores = {n: round_score(means[n]) for n in names}
    official = {n: i for i, n in enumerate(official_names)}
    ranking = consensus_ranking(scores, [v.ranking for v in verdicts],
                                {n: (-means[n], official[n]) for n in names})
    tokens = TokenCounts(**{f: sum(getattr(v.tokens, f) for v in verdicts)
                            for f in TokenCounts.__dataclass_fields__})
    timings = Timings(**{f: sum(getattr(v.timings, f) for v in verdicts)
                         for f in Timings.__dataclass_fields__})
    timings.total_s = wall_s            # the orders may run side by side: wall time, not a sum
    speculative = None
    if any(v.speculative for v in verdicts):
        counted = [v.speculative for v in verdicts if v.speculative]   # NgramDrafter.counts()
        speculative = {k: sum(c.get(k, 0) for c in counted) for k in counted[0]}
    server = None
    if all(v.server for v in verdicts):
        server = functools.reduce(lambda a, b: a.add(b), (v.server for v in verdicts))
    return replace(first, scores=scores, ranking=ranking, score_probabilities=probabilities,
                   tokens=tokens, timings=timings, orders=list(verdicts),
                   consistency=consistency(verdicts, ranking[0]), speculative=speculative,
                   server=server)
