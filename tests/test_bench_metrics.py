"""mini-RABench metrics, each checked against scipy/sklearn or a brute-force version written differently."""

from __future__ import annotations

import json
import math
import random

import pytest
from scipy.stats import entropy, kendalltau

from ra_lite.bench import metrics as m

import sklearn.metrics as sklearn_metrics

SEED = 20250603
N_CASES = 400


def random_case(rng: random.Random, max_n: int = 8):
    """gt scores 1..5 (ties likely), predicted scores 1..5 (ties likely) and a predicted ranking."""
    n = rng.randint(2, max_n)
    names = [chr(ord("a") + i) for i in range(n)]
    gt = {k: rng.randint(1, 5) for k in names}
    pred = {k: rng.randint(1, 5) for k in names}
    ranking = names[:]
    rng.shuffle(ranking)
    return gt, pred, ranking


def cases(seed: int = SEED, n: int = N_CASES):
    rng = random.Random(seed)
    return [random_case(rng) for _ in range(n)]


# ---------------------------------------------------------------- brute-force references (independent)


def ahead(pred, ranking, x, y) -> bool:
    """Is x ahead of y in the predicted total order? Compare directly, no sorting."""
    if pred is not None and pred[x] != pred[y]:
        return pred[x] > pred[y]
    return ranking.index(x) < ranking.index(y)


def brute_pairwise(gt, pred, ranking):
    correct = total = 0
    for x in gt:
        for y in gt:
            if gt[x] > gt[y]:  # each strictly ordered pair seen once, from its better side
                total += 1
                correct += ahead(pred, ranking, x, y)
    return correct, total


def brute_order(pred, ranking):
    names = list(ranking)
    # selection sort using the pairwise comparison: a different path from the module's sorted(key=...)
    out = []
    while names:
        best = names[0]
        for c in names[1:]:
            if ahead(pred, ranking, c, best):
                best = c
        out.append(best)
        names.remove(best)
    return out


def nan_equal(a, b, tol=1e-9):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---------------------------------------------------------------- total order and validity


def test_total_order_breaks_score_ties_by_ranking_and_scores_win():
    assert m.total_order({"a": 3, "b": 5, "c": 3}, ["a", "c", "b"]) == ["b", "a", "c"]
    assert m.total_order({"a": 3, "b": 5, "c": 3}, ["c", "a", "b"]) == ["b", "c", "a"]
    assert m.total_order(None, ["c", "a", "b"]) == ["c", "a", "b"]


def test_total_order_matches_brute_force():
    for gt, pred, ranking in cases(n=200):
        _check_total_order_matches_brute_force(gt, pred, ranking)


def _check_total_order_matches_brute_force(gt, pred, ranking):
    assert m.total_order(pred, ranking) == brute_order(pred, ranking)


@pytest.mark.parametrize(
    "scores, ranking, ok",
    [
        ({"a": 1, "b": 2}, ["b", "a"], True),
        (None, ["b", "a"], True),
        ({"a": 1, "b": 2}, None, False),
        ({"a": 1, "b": 2}, ["b"], False),
        ({"a": 1, "b": 2}, ["b", "b"], False),
        ({"a": 1, "b": 2}, ["b", "a", "c"], False),
        ({"a": 1}, ["b", "a"], False),
        ({"a": 1, "b": "2"}, ["b", "a"], False),
        ({"a": 1, "b": True}, ["b", "a"], False),
        ({"a": 1, "b": float("nan")}, ["b", "a"], False),
        ({"a": 1.5, "b": 2}, ["b", "a"], True),
    ],
)
def test_is_valid_prediction(scores, ranking, ok):
    assert m.is_valid_prediction(["a", "b"], scores, ranking) is ok


# ---------------------------------------------------------------- pairwise accuracy


def test_pairwise_accuracy_matches_brute_force():
    for gt, pred, ranking in cases():
        _check_pairwise_accuracy_matches_brute_force(gt, pred, ranking)


def _check_pairwise_accuracy_matches_brute_force(gt, pred, ranking):
    got = m.pairwise_accuracy(gt, pred, ranking)
    assert (got.correct, got.total) == brute_pairwise(gt, pred, ranking)
    # Without predicted scores the ranking alone is the order.
    got = m.pairwise_accuracy(gt, None, ranking)
    assert (got.correct, got.total) == brute_pairwise(gt, None, ranking)


def test_pairwise_accuracy_edge_cases():
    gt = {"a": 5, "b": 3, "c": 1}
    assert m.pairwise_accuracy(gt, None, ["a", "b", "c"]) == m.PairwiseResult(3, 3)
    assert m.pairwise_accuracy(gt, None, ["c", "b", "a"]) == m.PairwiseResult(0, 3)
    # all tied in ground truth: no pairs to judge, accuracy undefined
    tied = m.pairwise_accuracy({"a": 3, "b": 3, "c": 3}, None, ["a", "b", "c"])
    assert tied.total == 0 and math.isnan(tied.accuracy)
    # two responses
    assert m.pairwise_accuracy({"a": 4, "b": 2}, {"a": 1, "b": 5}, ["a", "b"]).accuracy == 0.0
    # a predicted score tie is broken by the ranking
    assert m.pairwise_accuracy({"a": 4, "b": 2}, {"a": 3, "b": 3}, ["a", "b"]).accuracy == 1.0
    assert m.pairwise_accuracy({"a": 4, "b": 2}, {"a": 3, "b": 3}, ["b", "a"]).accuracy == 0.0
    # pairs tied in ground truth are excluded whatever the prediction says
    assert m.pairwise_accuracy({"a": 4, "b": 4, "c": 1}, None, ["b", "a", "c"]) == m.PairwiseResult(2, 2)


# ---------------------------------------------------------------- Kendall tau-b


def test_kendall_tau_b_matches_scipy():
    for gt, pred, ranking in cases():
        _check_kendall_tau_b_matches_scipy(gt, pred, ranking)


def _check_kendall_tau_b_matches_scipy(gt, pred, ranking):
    names = list(gt)
    x = [gt[k] for k in names]
    # scores vs scores: ties on both sides
    expected = kendalltau(x, [pred[k] for k in names], variant="b").statistic
    assert nan_equal(m.kendall_tau_b(gt, pred), expected)
    # scores vs an order (no ties on the predicted side)
    order_value = {k: -i for i, k in enumerate(ranking)}
    expected = kendalltau(x, [order_value[k] for k in names], variant="b").statistic
    assert nan_equal(m.kendall_tau_b(gt, ranking), expected)


def test_kendall_tau_b_edge_cases():
    gt = {"a": 5, "b": 3, "c": 1}
    assert m.kendall_tau_b(gt, ["a", "b", "c"]) == pytest.approx(1.0)
    assert m.kendall_tau_b(gt, ["c", "b", "a"]) == pytest.approx(-1.0)
    assert m.kendall_tau_b({"a": 2, "b": 1}, ["a", "b"]) == pytest.approx(1.0)
    assert math.isnan(m.kendall_tau_b({"a": 3, "b": 3, "c": 3}, ["a", "b", "c"]))  # all tied: undefined
    assert math.isnan(m.kendall_tau_b(gt, {"a": 2, "b": 2, "c": 2}))


# ---------------------------------------------------------------- NDCG


def test_ndcg_matches_sklearn():
    for gt, pred, ranking in cases(n=300):
        _check_ndcg_matches_sklearn(gt, pred, ranking)


def _check_ndcg_matches_sklearn(gt, pred, ranking):
    names = list(gt)
    y_true = [[gt[k] for k in names]]
    # sklearn takes scores; strictly decreasing scores along the ranking encode the order exactly
    y_score = [[len(ranking) - ranking.index(k) for k in names]]
    assert m.ndcg(gt, ranking) == pytest.approx(sklearn_metrics.ndcg_score(y_true, y_score))
    k = 1 + (len(names) * 7) % len(names)  # some k in 1..n, varying across cases
    assert m.ndcg(gt, ranking, k=k) == pytest.approx(sklearn_metrics.ndcg_score(y_true, y_score, k=k))


def test_ndcg_edge_cases():
    gt = {"a": 5, "b": 3, "c": 1}
    assert m.ndcg(gt, ["a", "b", "c"]) == pytest.approx(1.0)
    assert m.ndcg({"a": 3, "b": 3}, ["b", "a"]) == pytest.approx(1.0)  # ties: any order is ideal
    worst = (1 + 3 / math.log2(3) + 5 / 2) / (5 + 3 / math.log2(3) + 1 / 2)  # linear gain, log2 discount
    assert m.ndcg(gt, ["c", "b", "a"]) == pytest.approx(worst)
    assert m.ndcg({"a": 0, "b": 0}, ["a", "b"]) == 0.0
    with pytest.raises(ValueError):
        m.ndcg(gt, ["a", "b", "c"], k=0)


# ---------------------------------------------------------------- top-1 and exact ranking


def test_top1_and_exact_match_brute_force():
    for gt, pred, ranking in cases(n=200):
        _check_top1_and_exact_match_brute_force(gt, pred, ranking)


def _check_top1_and_exact_match_brute_force(gt, pred, ranking):
    order = brute_order(pred, ranking)
    top = max(gt.values())
    assert m.top1_accuracy(gt, order) == float(gt[order[0]] == top)
    correct, total = brute_pairwise(gt, pred, ranking)
    # exact up to gt ties <=> every strictly ordered pair is the right way round
    assert m.exact_ranking(gt, order) == float(correct == total)


def test_top1_and_exact_edge_cases():
    gt = {"a": 5, "b": 5, "c": 1}
    assert m.top1_accuracy(gt, ["b", "a", "c"]) == 1.0  # either of the tied best counts
    assert m.top1_accuracy(gt, ["c", "a", "b"]) == 0.0
    assert m.exact_ranking(gt, ["b", "a", "c"]) == 1.0  # permutation within a gt tie group
    assert m.exact_ranking(gt, ["a", "c", "b"]) == 0.0
    assert m.exact_ranking({"a": 2, "b": 2}, ["b", "a"]) == 1.0


# ---------------------------------------------------------------- per item, invalid, aggregation


def test_score_item_valid_and_invalid():
    gt = {"a": 5, "b": 3, "c": 1}
    ok = m.score_item(gt, {"a": 5, "b": 2, "c": 4}, ["a", "c", "b"])
    assert ok.valid and (ok.pairwise_correct, ok.pairwise_total) == (2, 3)
    assert ok.top1 == 1.0 and ok.exact == 0.0
    assert ok.kendall_tau == pytest.approx(1 / 3)
    bad = m.score_item(gt, {"a": 5}, ["a", "b", "c"])
    assert not bad.valid and (bad.pairwise_correct, bad.pairwise_total) == (0, 3)
    assert (bad.kendall_tau, bad.ndcg, bad.top1, bad.exact) == (0.0, 0.0, 0.0, 0.0)
    assert not m.score_item(gt, None, None).valid


def _result(id_, category, domain, gt, pred, ranking, tags=()):
    return m.ItemResult(id_, category, domain, m.score_item(gt, pred, ranking), tuple(tags))


def test_aggregate_micro_macro_groups_and_json():
    gt3 = {"a": 5, "b": 3, "c": 1}
    results = [
        _result("1", "tone", "chat", gt3, None, ["a", "b", "c"]),  # 3/3
        _result("2", "tone", "code", {"a": 2, "b": 1}, None, ["b", "a"], ["adversarial"]),  # 0/1
        _result("3", "logic", "chat", gt3, None, None, ["adversarial"]),  # invalid: 0/3
        _result("4", "logic", "chat", {"a": 3, "b": 3}, None, ["a", "b"]),  # no pairs
    ]
    s = m.aggregate(results, by=("category", "domain", "tags"))
    o = s.overall
    assert (o.n_items, o.n_valid, o.n_pairs) == (4, 3, 7)
    assert o.valid_rate == 0.75
    assert o.pairwise_accuracy == pytest.approx(3 / 7)  # micro
    assert o.pairwise_accuracy_macro == pytest.approx((1 + 0 + 0) / 3)  # the no-pair item is undefined, skipped
    assert o.top1_accuracy == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert s.groups["category"]["tone"].n_items == 2
    assert s.groups["domain"]["chat"].n_pairs == 6
    assert s.groups["tags"]["adversarial"].n_items == 2
    text = json.dumps(s.to_dict(), allow_nan=False)  # NaN must not leak into JSON
    assert json.loads(text)["overall"]["n_items"] == 4
    empty = m.MetricSummary.of([]).to_dict()
    assert empty["pairwise_accuracy"] is None and empty["n_items"] == 0
    with pytest.raises(ValueError):
        m.aggregate(results, by=("colour",))


# ---------------------------------------------------------------- agreement between two models


def test_pairwise_agreement_brute_force():
    for gt, pred, ranking in cases(n=200):
        _check_pairwise_agreement_brute_force(gt, pred, ranking)


def _check_pairwise_agreement_brute_force(gt, pred, ranking):
    rng = random.Random(len(ranking) + sum(pred.values()))
    ref_ranking = ranking[:]
    rng.shuffle(ref_ranking)
    ref_scores = {k: rng.randint(1, 5) for k in gt}
    agree = total = 0
    names = list(gt)
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            total += 1
            agree += ahead(ref_scores, ref_ranking, x, y) == ahead(pred, ranking, x, y)
    got = m.pairwise_agreement(ref_scores, ref_ranking, pred, ranking)
    assert (got.correct, got.total) == (agree, total)
    assert m.kendall_tau(ref_ranking, ranking) == pytest.approx(
        kendalltau([ref_ranking.index(k) for k in names], [ranking.index(k) for k in names]).statistic
    )


def test_agreement_edge_cases():
    assert m.pairwise_agreement(None, ["a", "b", "c"], None, ["a", "b", "c"]) == m.PairwiseResult(3, 3)
    assert m.pairwise_agreement(None, ["a", "b", "c"], None, ["c", "b", "a"]) == m.PairwiseResult(0, 3)
    assert m.kendall_tau(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        m.pairwise_agreement(None, ["a", "b"], None, ["a", "c"])
    with pytest.raises(ValueError):
        m.kendall_tau(["a", "b"], ["a", "b", "c"])
    assert m.score_mae({"a": 5, "b": 1}, {"a": 4, "b": 3}) == pytest.approx(1.5)
    with pytest.raises(ValueError):
        m.score_mae({"a": 5}, {"b": 5})


def test_exact_match():
    ref = {"scores": {"a": 5, "b": 2}, "best-to-worst": ["a", "b"]}
    assert m.exact_match(ref, {"scores": {"a": 5, "b": 2}, "ranking": ["a", "b"]})
    assert not m.exact_match(ref, {"scores": {"a": 5, "b": 3}, "best-to-worst": ["a", "b"]})
    assert not m.exact_match(m.Prediction({"a": 3, "b": 3}, ["a", "b"]), m.Prediction({"a": 3, "b": 3}, ["b", "a"]))
    assert m.exact_match(m.Prediction({"a": 3, "b": 3}, ["a", "b"]), {"scores": {"a": 3, "b": 3}, "best_to_worst": ["a", "b"]})


def test_kl_divergence_matches_scipy_and_handles_zeros():
    rng = random.Random(SEED)
    for _ in range(200):
        n = rng.randint(2, 8)
        p = [rng.random() + 1e-3 for _ in range(n)]
        q = [rng.random() + 1e-3 for _ in range(n)]
        assert m.kl_divergence(p, q) == pytest.approx(entropy(p, q), rel=1e-6)  # scipy normalizes too
    assert m.kl_divergence([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    # p has zeros: those terms contribute exactly 0, as in scipy
    assert m.kl_divergence([0, 1, 0], [0.2, 0.6, 0.2]) == pytest.approx(entropy([0, 1, 0], [0.2, 0.6, 0.2]))
    # q has a zero where p > 0: scipy says inf; we clip q to eps and stay finite and large
    clipped = m.kl_divergence([0.5, 0.5], [1.0, 0.0], eps=1e-9)
    assert math.isfinite(clipped) and clipped == pytest.approx(0.5 * math.log(0.5 / 1e-9) + 0.5 * math.log(0.5), rel=1e-6)
    assert math.isinf(entropy([0.5, 0.5], [1.0, 0.0]))
    assert m.kl_divergence({"x": 1, "y": 3}, {"y": 3, "x": 1}) == pytest.approx(0.0)
    for p, q in (([1, -1], [1, 1]), ([0, 0], [1, 1]), ([1], [1, 1]), ([], []), ({"x": 1}, {"y": 1})):
        with pytest.raises(ValueError):
            m.kl_divergence(p, q)
