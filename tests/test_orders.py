"""Order-robust verdicts: the order design, the aggregation (against an independent
recomputation), the judge under K orders on a fake backend and on llama.cpp, the CLI."""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import replace

import pytest
from click.testing import CliRunner

import ra_lite.cli as cli
from ra_lite.errors import RaLiteError
from ra_lite.grammar import render_answer
from ra_lite.judge import Judge, JudgeOptions
from ra_lite.judgment import Judgment
from ra_lite.orders import check_orders, combine, order_design
from ra_lite.prompt import build_chat_prompt
from ra_lite.testing import FakeBackend, ascending_answer


# --- the design -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", range(1, 9))
def test_k_equal_n_is_a_latin_square_starting_with_the_official_order(n):
    rows = order_design(n, n)
    assert rows[0] == tuple(range(n))
    for response in range(n):
        assert sorted(row.index(response) for row in rows) == list(range(n))


@pytest.mark.parametrize("n", range(3, 9))
def test_two_orders_are_the_swap_test_every_pair_seen_both_ways(n):
    first, second = order_design(n, 2)
    assert first == tuple(range(n)) and second == tuple(reversed(range(n)))
    for a, b in itertools.combinations(range(n), 2):
        assert (first.index(a) < first.index(b)) != (second.index(a) < second.index(b))


@pytest.mark.parametrize("n, k", [(4, 3), (5, 3), (6, 4), (8, 5), (6, 2)])
def test_fewer_orders_than_responses_never_repeat_a_position(n, k):
    rows = order_design(n, k)
    assert len(set(rows)) == k and rows[0] == tuple(range(n))
    for response in range(n):
        positions = [row.index(response) for row in rows]
        assert len(set(positions)) == k


@pytest.mark.parametrize("n", range(3, 7))
def test_two_n_orders_show_every_position_twice_and_every_pair_equally_both_ways(n):
    rows = order_design(n, 2 * n)
    assert len(set(rows)) == 2 * n
    for response in range(n):
        assert sorted(row.index(response) for row in rows) == sorted(list(range(n)) * 2)
    for a, b in itertools.combinations(range(n), 2):
        assert sum(row.index(a) < row.index(b) for row in rows) == n


@pytest.mark.parametrize("n", range(2, 6))
def test_all_n_factorial_orders_are_reachable_and_distinct(n):
    rows = order_design(n, math.factorial(n))
    assert sorted(rows) == sorted(itertools.permutations(range(n)))
    assert order_design(n, math.factorial(n)) == rows          # deterministic


@pytest.mark.parametrize("bad, message", [(0, "below 1"), (-2, "below 1"), ("many", "not a number"),
                                          (7, "more than the 6 distinct orders of 3 responses")])
def test_bad_order_counts_name_the_limit(bad, message):
    with pytest.raises(RaLiteError, match=message) as caught:
        check_orders(bad, 3)
    assert "--orders" in caught.value.one_line()


def test_order_one_is_the_official_prompt_byte_for_byte():
    responses = {"x": "one", "y": "two", "z": "three"}
    judge = Judge(FakeBackend(fallback=ascending_answer))
    plan = judge.plan(judge_request(responses), JudgeOptions(orders=3))
    official = build_chat_prompt("P", "Q", responses)
    assert plan.chats[0] == official
    for chat, order in zip(plan.chats, order_design(3, 3)):
        shown = [chat.masked_to_real[m] for m in chat.masked_names]
        assert shown == [official.masked_to_real[official.masked_names[i]] for i in order]
        # Only the responses' order differs: the text before them is the same.
        before = chat.messages[1]["content"].split('"responses"')[0]
        assert before == official.messages[1]["content"].split('"responses"')[0]
        assert chat.messages[0] == official.messages[0]


def judge_request(responses, principle="P", prompt="Q"):
    from ra_lite.request import JudgeRequest

    return JudgeRequest.create(principle, prompt, responses)


# --- aggregation, against an independent recomputation ------------------------------------
def random_verdict(names, rng, with_probabilities=True):
    probabilities = None
    if with_probabilities:
        probabilities = {}
        for name in names:
            weights = [rng.random() ** 3 for _ in range(5)]
            probabilities[name] = [w / sum(weights) for w in weights]
    scores = {n: rng.randint(1, 5) for n in names}
    ranking = sorted(names, key=lambda n: (-scores[n], rng.random()))
    return Judgment(scores=scores, ranking=ranking, reasoning="r", raw_text="t",
                    masked_to_real={f"model-{i + 1}": n for i, n in enumerate(names)},
                    score_probabilities=probabilities)


def expected_aggregate(verdicts, official_names):
    """The documented rule, written independently: brute force over every permutation."""
    names = list(verdicts[0].scores)

    def expected(v, n):
        if v.score_probabilities:
            return sum((d + 1) * p for d, p in enumerate(v.score_probabilities[n]))
        return v.scores[n]

    mean = {n: sum(expected(v, n) for v in verdicts) / len(verdicts) for n in names}
    scores = {n: min(5, max(1, int(math.floor(mean[n] + 0.5)))) for n in names}

    def disagreements(order):
        return sum(1 for v in verdicts for a, b in itertools.combinations(order, 2)
                   if v.ranking.index(a) > v.ranking.index(b))

    candidates = [p for p in itertools.permutations(names)
                  if all(scores[a] >= scores[b] for a, b in zip(p, p[1:]))]
    best = min(disagreements(p) for p in candidates)
    tied = [p for p in candidates if disagreements(p) == best]
    key = {n: (-mean[n], official_names.index(n)) for n in names}
    ranking = min(tied, key=lambda p: [key[n] for n in p])
    pairs = list(itertools.combinations(names, 2))
    alike = sum(1 for a, b in pairs
                if len({v.ranking.index(a) < v.ranking.index(b) for v in verdicts}) == 1)
    return scores, list(ranking), {
        "pairwise_agreement": alike / len(pairs) if pairs else None,
        "top1_agreement": sum(v.ranking[0] == ranking[0] for v in verdicts) / len(verdicts),
        "score_spread": {n: max(v.scores[n] for v in verdicts) - min(v.scores[n] for v in verdicts)
                         for n in names}}


@pytest.mark.parametrize("seed", range(60))
def test_aggregate_matches_the_documented_rule(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    names = [f"r{i}" for i in range(n)]
    verdicts = [random_verdict(names, rng, with_probabilities=seed % 3 != 0)
                for _ in range(rng.randint(2, 5))]
    official = names[::-1]
    result = combine(verdicts, official, wall_s=1.5)
    scores, ranking, consistency = expected_aggregate(verdicts, official)
    assert result.scores == scores
    assert result.ranking == ranking
    assert [result.scores[x] for x in result.ranking] == \
        sorted(result.scores.values(), reverse=True)            # the contract holds
    c = result.consistency
    assert c.n_orders == len(verdicts)
    assert c.pairwise_agreement == consistency["pairwise_agreement"]
    assert c.top1_agreement == pytest.approx(consistency["top1_agreement"])
    assert c.score_spread == consistency["score_spread"]
    assert result.orders == verdicts and result.timings.total_s == 1.5
    if verdicts[0].score_probabilities:
        for name in names:
            mean = sum(v.expected_scores[name] for v in verdicts) / len(verdicts)
            assert result.expected_scores[name] == pytest.approx(mean)


def test_many_tied_responses_fall_back_to_borda():
    names = [f"r{i}" for i in range(12)]
    rng = random.Random(5)
    verdicts = []
    for _ in range(3):
        order = names[:]
        rng.shuffle(order)
        verdicts.append(Judgment(scores={n: 3 for n in names}, ranking=order, reasoning="",
                                 raw_text="", masked_to_real={}))
    result = combine(verdicts, names, 0.0)
    mean_position = {n: sum(v.ranking.index(n) for v in verdicts) / 3 for n in names}
    assert result.ranking == sorted(names, key=lambda n: (mean_position[n], names.index(n)))


def test_a_multi_order_judgment_round_trips_its_record():
    rng = random.Random(1)
    verdicts = [random_verdict(["a", "b", "c"], rng) for _ in range(3)]
    result = combine(verdicts, ["a", "b", "c"], 2.0)
    again = Judgment.from_record(json.loads(json.dumps(result.to_record())))
    assert again == result
    shown = result.to_dict()["ra_lite"]
    assert [o["order"] for o in shown["orders"]] == [1, 2, 3]
    assert set(shown["orders"][0]) >= {"masked_to_real", "results"}
    assert set(shown["consistency"]) >= {"pairwise_agreement", "top1_agreement", "score_spread"}


# --- the judge on a fake backend ------------------------------------------------------------
def test_k_orders_send_k_prompts_each_response_in_each_position_once():
    backend = FakeBackend(fallback=ascending_answer)
    judge = Judge(backend)
    result = judge.judge("P", "Q", {"a": "1", "b": "2", "c": "3"}, orders=3)
    assert len(backend.calls) == 3
    positions = {name: [] for name in "abc"}
    for chat, _ in backend.calls:
        for i, masked in enumerate(chat.masked_names):
            positions[chat.masked_to_real[masked]].append(i)
    assert all(sorted(p) == [0, 1, 2] for p in positions.values())
    # ascending_answer always prefers model-1: each response wins once, every pair disagrees.
    assert result.consistency.top1_agreement == pytest.approx(1 / 3)
    assert result.consistency.pairwise_agreement == 0
    assert [result.scores[n] for n in result.ranking] == sorted(result.scores.values(), reverse=True)


def test_one_order_is_todays_result_field_for_field():
    plain = Judge(FakeBackend(fallback=ascending_answer)).judge("P", "Q", {"a": "x", "b": "y"})
    one = Judge(FakeBackend(fallback=ascending_answer)).judge("P", "Q", {"a": "x", "b": "y"},
                                                              orders=1)
    assert one.to_dict() == plain.to_dict() and one.orders is None and one.consistency is None
    assert "orders" not in one.to_dict()["ra_lite"]


def test_compare_with_two_orders_is_the_swap_test():
    judge = Judge(FakeBackend(fallback=ascending_answer))
    swapped = judge.compare("P", "Q", "first", "second", orders=2)
    assert swapped.order_consistent is False            # the fake prefers whatever is first
    assert swapped.tie and swapped.judgment.consistency.n_orders == 2
    assert judge.compare("P", "Q", "first", "second").order_consistent is None


def test_one_response_says_once_that_orders_do_nothing():
    notices = []
    judge = Judge(FakeBackend(fallback=ascending_answer), notify=notices.append)
    for _ in range(3):
        result = judge.judge("P", "Q", {"only": "x"}, orders=4)
        assert result.orders is None
    assert len(notices) == 1 and "one response" in notices[0]


def test_more_orders_than_permutations_is_refused_before_judging():
    backend = FakeBackend(fallback=ascending_answer)
    with pytest.raises(RaLiteError, match="more than the 2 distinct orders of 2 responses"):
        Judge(backend).judge("P", "Q", {"a": "x", "b": "y"}, orders=3)
    assert backend.calls == []


def test_cli_refuses_bad_orders_in_one_line(monkeypatch):
    monkeypatch.setattr(cli, "load_judge", lambda **s: pytest.fail("loaded a model"))
    result = CliRunner().invoke(cli.main, ["judge", "-p", "P", "--prompt", "Q", "-r", "a=1",
                                           "-r", "b=2", "--orders", "0"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: --orders 0 is below 1")


def test_cli_table_shows_the_consistency(monkeypatch):
    monkeypatch.setattr(cli, "load_judge", lambda **s: Judge(FakeBackend(fallback=ascending_answer)))
    result = CliRunner().invoke(cli.main, ["judge", "-p", "P", "--prompt", "Q", "-r", "a=1",
                                           "-r", "b=2", "-r", "c=3", "--orders", "3"])
    assert result.exit_code == 0, result.output
    assert "3 orders: pairs ordered alike 0%, same winner in 1/3" in result.output
    as_json = CliRunner().invoke(cli.main, ["judge", "-p", "P", "--prompt", "Q", "-r", "a=1",
                                            "-r", "b=2", "--orders", "2", "--json"])
    shown = json.loads(as_json.output)["ra_lite"]
    assert len(shown["orders"]) == 2 and shown["consistency"]["n_orders"] == 2


# --- on llama.cpp ---------------------------------------------------------------------------
@pytest.mark.slow
def test_orders_on_llama_cpp_share_the_prompt_and_stay_valid(smollm_judge):
    responses = {"a": "Paris.", "b": "Lyon.", "c": "The capital of France is Paris."}
    options = JudgeOptions(think_budget=16, temperature=0.0, orders=3)
    result = smollm_judge.judge_request(judge_request(responses, "Prefer correct, short "
                                                      "answers over long ones, always.",
                                                      "What is the capital of France?"), options)
    assert len(result.orders) == 3
    for verdict in result.orders:
        assert set(verdict.scores) == set(responses)
        ranked = [verdict.scores[n] for n in verdict.ranking]
        assert ranked == sorted(ranked, reverse=True)
        assert verdict.score_probabilities is not None
    prefix = len(smollm_judge.backend.shared_prefix_tokens())
    # Orders 2 and 3 take the principle and prompt from order 1's cells (they share everything
    # up to the responses), so each reuses more than the shared system prefix.
    assert all(v.tokens.prompt_reused > prefix for v in result.orders[1:])
    ranked = [result.scores[n] for n in result.ranking]
    assert ranked == sorted(ranked, reverse=True)
    # K = 1 of the same request is order 1's verdict (greedy; batching may move late digits).
    single = smollm_judge.judge_request(
        judge_request(responses, "Prefer correct, short answers over long ones, always.",
                      "What is the capital of France?"),
        JudgeOptions(think_budget=16, temperature=0.0))
    assert single.masked_to_real == result.orders[0].masked_to_real


def test_the_aggregate_counts_every_orders_drafts():
    rng = random.Random(5)
    names = ["a", "b", "c"]
    verdicts = [replace(random_verdict(names, rng), speculative=counts) for counts in
                ({"drafted": 5, "accepted": 3, "steps": 9}, None,
                 {"drafted": 2, "accepted": 2, "steps": 4})]
    assert combine(verdicts, names, 1.0).speculative == {"drafted": 7, "accepted": 5, "steps": 13}
    plain = [replace(v, speculative=None) for v in verdicts]
    assert combine(plain, names, 1.0).speculative is None
