"""Ranking metrics for mini-RABench, and agreement metrics between two models. Pure functions.

Definitions (every function below follows them; the tests check each against scipy, sklearn or a
brute-force implementation written differently):

Ground truth
    `gt_scores`: response name -> int 1..5. Responses with equal ground-truth scores are a *tie*:
    no metric rewards or punishes the order a prediction puts them in.

Prediction and its total order
    A prediction is the model's `scores` (name -> number, optional) and its `best-to-worst`
    ranking (a permutation of the names, required). Its *total order* sorts by predicted score,
    best first, and breaks predicted score ties by position in the predicted ranking — the ranking
    is the model's full order, so a predicted tie in scores is never left as a tie. Without scores
    the total order is the ranking itself. (If scores and ranking contradict each other, scores
    win; the ranking only breaks ties.) A prediction whose ranking is missing or not a
    permutation of the names, or whose scores do not cover exactly the names, is *invalid*.

Per-item metrics (`score_item`)
    pairwise accuracy  over the pairs the ground truth strictly orders (pairs tied in ground truth
                       are excluded), the fraction the total order puts the same way round.
                       Returned as (correct, total) so that aggregation can be micro or macro.
    Kendall tau-b      between ground-truth scores and the total order, tie-corrected, equal to
                       `scipy.stats.kendalltau(x, y, variant="b")`; NaN when undefined (all
                       ground-truth scores equal), and NaN items are left out of the mean.
    NDCG               linear gain (gain = ground-truth score, not 2**score - 1), discount
                       1 / log2(position + 1) with positions from 1, over the whole list unless
                       `k` is given; the same definition as `sklearn.metrics.ndcg_score`.
    top-1              1 if the total order's first response has the highest ground-truth score
                       (any of them, when several tie for the top), else 0.
    exact ranking      1 if the total order equals the ground-truth ranking up to ground-truth
                       ties, i.e. ground-truth scores never increase along the total order.
    An invalid prediction is kept in every denominator and scores 0 on all of these (pairwise: 0
    correct out of all its strictly ordered pairs; tau 0, i.e. "no information", not -1).

Aggregation (`aggregate`)
    `pairwise_accuracy` is the *micro* average (all pairs of all items pooled: correct / total);
    it is the headline number the report uses. `pairwise_accuracy_macro` is the per-item mean.
    Tau, NDCG, top-1 and exact ranking are per-item means. `valid_rate` is valid items / items.

Agreement between two models (quantized vs full-precision reference)
    pairwise agreement over *all* pairs, each side in its own total order; `score_mae`;
    `exact_match` (same scores and same ranking); `kendall_tau` between the two rankings; and
    `kl_divergence` for probability vectors (see its docstring for zeros).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

Scores = Mapping[str, float]


# ---------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    """One model's verdict on one item: scores (optional) and best-to-worst ranking."""

    scores: dict[str, float] | None
    ranking: list[str] | None

    @classmethod
    def from_mapping(cls, raw: Mapping) -> Prediction:
        """Accepts {"scores": ..., "best-to-worst" | "best_to_worst" | "ranking": ...}."""
        ranking = next((raw[k] for k in ("best-to-worst", "best_to_worst", "ranking") if k in raw), None)
        scores = raw.get("scores")
        return cls(dict(scores) if scores is not None else None, list(ranking) if ranking is not None else None)


def is_valid_prediction(names: Iterable[str], pred_scores: Scores | None, pred_ranking: Sequence[str] | None) -> bool:
    """True when the ranking is a permutation of `names` and the scores (if any) cover exactly them."""
    names = set(names)
    if pred_ranking is None or len(pred_ranking) != len(names) or set(pred_ranking) != names:
        return False
    if pred_scores is not None:
        if set(pred_scores) != names:
            return False
        for value in pred_scores.values():
            # bool is an int subclass; a True/False "score" is a parsing bug, not a score.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                return False
    return True


def total_order(pred_scores: Scores | None, pred_ranking: Sequence[str]) -> list[str]:
    """The prediction's total order, best first: by score, predicted score ties broken by ranking."""
    position = {name: i for i, name in enumerate(pred_ranking)}
    if pred_scores is None:
        return list(pred_ranking)
    return sorted(pred_ranking, key=lambda name: (-pred_scores[name], position[name]))


def _order_values(order: Sequence[str]) -> dict[str, int]:
    """Numeric values for a best-first order (higher = better), so orders and scores compare alike."""
    return {name: len(order) - i for i, name in enumerate(order)}


def _as_values(scores_or_order: Scores | Sequence[str]) -> Mapping[str, float]:
    if isinstance(scores_or_order, Mapping):
        return scores_or_order
    return _order_values(list(scores_or_order))


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


# ---------------------------------------------------------------------------- per-item metrics


@dataclass(frozen=True)
class PairwiseResult:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        """correct / total; NaN when there are no pairs to judge."""
        return self.correct / self.total if self.total else math.nan


def strict_pairs(gt_scores: Scores) -> int:
    """How many pairs the ground truth strictly orders (the pairwise-accuracy denominator)."""
    return sum(1 for a, b in combinations(gt_scores, 2) if gt_scores[a] != gt_scores[b])


def pairwise_accuracy(gt_scores: Scores, pred_scores: Scores | None, pred_ranking: Sequence[str]) -> PairwiseResult:
    """Pairs the ground truth strictly orders that the prediction's total order orders the same way."""
    rank = _order_values(total_order(pred_scores, pred_ranking))
    correct = total = 0
    for a, b in combinations(gt_scores, 2):
        gt = _sign(gt_scores[a] - gt_scores[b])
        if gt == 0:
            continue  # tied in ground truth: any predicted order is fine, so the pair is not counted
        total += 1
        correct += _sign(rank[a] - rank[b]) == gt
    return PairwiseResult(correct, total)


def kendall_tau_b(gt_scores: Scores, pred_scores_or_order: Scores | Sequence[str]) -> float:
    """Kendall tau-b (tie-corrected) between ground-truth scores and predicted scores or order.

    A sequence is read as a best-first order (no ties); a mapping as scores (ties possible).
    Equals scipy.stats.kendalltau(x, y, variant="b"); NaN when either side is all tied.
    """
    pred = _as_values(pred_scores_or_order)
    concordant = discordant = tied_x_only = tied_y_only = 0
    for a, b in combinations(gt_scores, 2):
        sx, sy = _sign(gt_scores[a] - gt_scores[b]), _sign(pred[a] - pred[b])
        if sx == 0 and sy == 0:
            continue  # tied on both sides: in neither denominator term
        if sx == 0:
            tied_x_only += 1
        elif sy == 0:
            tied_y_only += 1
        elif sx == sy:
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + tied_x_only) * (concordant + discordant + tied_y_only))
    return (concordant - discordant) / denominator if denominator else math.nan


def _dcg(gains: Sequence[float], k: int | None) -> float:
    cut = gains if k is None else gains[:k]
    return sum(g / math.log2(i + 2) for i, g in enumerate(cut))


def ndcg(gt_scores: Scores, pred_ranking: Sequence[str], k: int | None = None) -> float:
    """NDCG with linear gain (gain = ground-truth score), log2 discount, cut at k (None: all).

    Matches sklearn.metrics.ndcg_score(y_true=[gt], y_score=[strictly ordered scores], k=k).
    Returns 0.0 when every ground-truth gain is 0 (sklearn does the same).
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ideal = _dcg(sorted(gt_scores.values(), reverse=True), k)
    if ideal == 0:
        return 0.0
    return _dcg([gt_scores[name] for name in pred_ranking], k) / ideal


def top1_accuracy(gt_scores: Scores, pred_order: Sequence[str]) -> float:
    """1.0 when the predicted best has the highest ground-truth score (ties at the top: any counts)."""
    return float(gt_scores[pred_order[0]] == max(gt_scores.values()))


def exact_ranking(gt_scores: Scores, pred_order: Sequence[str]) -> float:
    """1.0 when the order equals the ground-truth ranking up to ground-truth ties."""
    values = [gt_scores[name] for name in pred_order]
    return float(all(x >= y for x, y in zip(values, values[1:])))


@dataclass(frozen=True)
class ItemMetrics:
    valid: bool
    pairwise_correct: int
    pairwise_total: int
    kendall_tau: float
    ndcg: float
    top1: float
    exact: float

    @property
    def pairwise_accuracy(self) -> float:
        return self.pairwise_correct / self.pairwise_total if self.pairwise_total else math.nan

    @classmethod
    def invalid(cls, gt_scores: Scores) -> ItemMetrics:
        # Keeps the item's pairs in the micro denominator so that invalid output costs accuracy.
        return cls(False, 0, strict_pairs(gt_scores), 0.0, 0.0, 0.0, 0.0)


def score_item(gt_scores: Scores, pred_scores: Scores | None, pred_ranking: Sequence[str] | None) -> ItemMetrics:
    """All per-item metrics for one prediction, computed on the prediction's total order."""
    if not is_valid_prediction(gt_scores, pred_scores, pred_ranking):
        return ItemMetrics.invalid(gt_scores)
    order = total_order(pred_scores, pred_ranking)
    pairs = pairwise_accuracy(gt_scores, pred_scores, pred_ranking)
    return ItemMetrics(
        valid=True,
        pairwise_correct=pairs.correct,
        pairwise_total=pairs.total,
        kendall_tau=kendall_tau_b(gt_scores, order),
        ndcg=ndcg(gt_scores, order),
        top1=top1_accuracy(gt_scores, order),
        exact=exact_ranking(gt_scores, order),
    )


# ---------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class ItemResult:
    """One item's metrics plus the labels that aggregation groups by."""

    id: str
    category: str
    domain: str
    metrics: ItemMetrics
    tags: tuple[str, ...] = ()


def valid_rate(results: Sequence[ItemResult]) -> float:
    """Valid predictions / items (NaN for no items)."""
    return sum(r.metrics.valid for r in results) / len(results) if results else math.nan


def _mean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _json_number(x: float) -> float | None:
    # JSON has no NaN; an undefined metric (empty group, no pairs) is written as null.
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass(frozen=True)
class MetricSummary:
    n_items: int
    n_valid: int
    valid_rate: float
    n_pairs: int
    pairwise_accuracy: float  # micro: the headline
    pairwise_accuracy_macro: float
    kendall_tau: float
    ndcg: float
    top1_accuracy: float
    exact_ranking: float

    @classmethod
    def of(cls, results: Sequence[ItemResult]) -> MetricSummary:
        ms = [r.metrics for r in results]
        n_pairs = sum(m.pairwise_total for m in ms)
        return cls(
            n_items=len(ms),
            n_valid=sum(m.valid for m in ms),
            valid_rate=valid_rate(results),
            n_pairs=n_pairs,
            pairwise_accuracy=sum(m.pairwise_correct for m in ms) / n_pairs if n_pairs else math.nan,
            pairwise_accuracy_macro=_mean(m.pairwise_accuracy for m in ms),
            kendall_tau=_mean(m.kendall_tau for m in ms),
            ndcg=_mean(m.ndcg for m in ms),
            top1_accuracy=_mean(m.top1 for m in ms),
            exact_ranking=_mean(m.exact for m in ms),
        )

    def to_dict(self) -> dict:
        return {name: _json_number(getattr(self, name)) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class BenchSummary:
    overall: MetricSummary
    # groups[field][value]: e.g. groups["category"]["tone"]; for "tags" an item counts under each tag.
    groups: dict[str, dict[str, MetricSummary]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "overall": self.overall.to_dict(),
            "groups": {by: {v: s.to_dict() for v, s in sorted(g.items())} for by, g in self.groups.items()},
        }


def aggregate(per_item_results: Sequence[ItemResult], by: Sequence[str] = ("category", "domain")) -> BenchSummary:
    """Overall summary plus one summary per value of each field in `by` ("category", "domain", "tags")."""
    groups: dict[str, dict[str, MetricSummary]] = {}
    for name in by:
        if name not in ("category", "domain", "tags"):
            raise ValueError(f"cannot group by {name!r}; use 'category', 'domain' or 'tags'")
        buckets: dict[str, list[ItemResult]] = {}
        for r in per_item_results:
            for value in r.tags if name == "tags" else (getattr(r, name),):
                buckets.setdefault(value, []).append(r)
        groups[name] = {value: MetricSummary.of(rs) for value, rs in buckets.items()}
    return BenchSummary(MetricSummary.of(per_item_results), groups)


# ---------------------------------------------------------------------------- agreement (model vs model)


def pairwise_agreement(
    ref_scores: Scores | None, ref_ranking: Sequence[str], pred_scores: Scores | None, pred_ranking: Sequence[str]
) -> PairwiseResult:
    """Over all pairs of names, how often both sides' total orders put the pair the same way round."""
    ref = _order_values(total_order(ref_scores, ref_ranking))
    pred = _order_values(total_order(pred_scores, pred_ranking))
    if set(ref) != set(pred):
        raise ValueError(f"the two rankings name different responses: {sorted(ref)} vs {sorted(pred)}")
    pairs = list(combinations(ref, 2))
    agree = sum(_sign(ref[a] - ref[b]) == _sign(pred[a] - pred[b]) for a, b in pairs)
    return PairwiseResult(agree, len(pairs))


def score_mae(ref_scores: Scores, pred_scores: Scores) -> float:
    """Mean absolute difference of the two sides' scores over the (identical) set of names."""
    if set(ref_scores) != set(pred_scores):
        raise ValueError(f"scores name different responses: {sorted(ref_scores)} vs {sorted(pred_scores)}")
    if not ref_scores:
        return math.nan
    return sum(abs(ref_scores[n] - pred_scores[n]) for n in ref_scores) / len(ref_scores)


def exact_match(ref: Prediction | Mapping, pred: Prediction | Mapping) -> bool:
    """Same scores for every name and the same ranking list (Prediction or {"scores", "best-to-worst"})."""
    ref = ref if isinstance(ref, Prediction) else Prediction.from_mapping(ref)
    pred = pred if isinstance(pred, Prediction) else Prediction.from_mapping(pred)
    return ref.scores == pred.scores and ref.ranking == pred.ranking


def kendall_tau(ref_ranking: Sequence[str], pred_ranking: Sequence[str]) -> float:
    """Kendall tau between two best-first rankings of the same names (no ties, so tau-a = tau-b)."""
    if set(ref_ranking) != set(pred_ranking) or len(ref_ranking) != len(pred_ranking):
        raise ValueError(f"rankings name different responses: {list(ref_ranking)} vs {list(pred_ranking)}")
    return kendall_tau_b(_order_values(list(ref_ranking)), list(pred_ranking))


def kl_divergence(p: Sequence[float] | Mapping[str, float], q: Sequence[float] | Mapping[str, float], eps: float = 1e-9) -> float:
    """KL(p || q) in nats for two probability vectors (sequences of equal length, or same-key mappings).

    Zeros: both vectors are first normalized to sum 1. Terms with p_i == 0 contribute exactly 0
    (the limit of x*log x); q is clipped to at least `eps` and renormalized, so a q_i of 0 where
    p_i > 0 gives a large finite value (about p_i * log(p_i / eps)) instead of infinity.
    Negative entries, or a vector summing to 0, raise ValueError.
    """
    if isinstance(p, Mapping) or isinstance(q, Mapping):
        if not (isinstance(p, Mapping) and isinstance(q, Mapping)) or set(p) != set(q):
            raise ValueError("p and q must both be mappings over the same keys")
        keys = sorted(p)
        p, q = [p[k] for k in keys], [q[k] for k in keys]
    if len(p) != len(q) or not p:
        raise ValueError(f"p and q must be non-empty and of equal length, got {len(p)} and {len(q)}")
    for name, vec in (("p", p), ("q", q)):
        if any(x < 0 for x in vec) or sum(vec) <= 0:
            raise ValueError(f"{name} must be non-negative with a positive sum")
    p_sum = sum(p)
    p = [x / p_sum for x in p]
    q_sum = sum(q)
    q = [max(x / q_sum, eps) for x in q]
    q_sum = sum(q)
    q = [x / q_sum for x in q]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
