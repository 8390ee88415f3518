"""The constrained decoder on a fake engine: validity, budgets, replay, batching."""

import numpy as np
import pytest

from ra_lite.runtime.decode import BUDGET_CLOSE, Forcing, SamplingSettings
from ra_lite.grammar import THINK_CLOSE, parse_answer
from tests.support.fake_engine import FakeEngine, decode


def names(n):
    return [f"model-{i}" for i in range(1, n + 1)]


def run(engine, n, budget=8, temperature=1.0, seed=0, **kw):
    settings = SamplingSettings(temperature=temperature, top_p=1.0, seed=seed)
    engine.set_sampling(settings)
    return decode(engine, [1, 2, 3], names(n), think_budget=budget, settings=settings, **kw)


@pytest.mark.parametrize("n", range(1, 13))
def test_every_output_is_a_valid_answer(n):
    for seed in range(25):
        result = run(FakeEngine(seed), n, budget=seed % 5 * 4, seed=seed)
        reasoning, scores, ranking = parse_answer(result.text, names(n))
        assert scores == result.scores and ranking == result.ranking
        assert reasoning == result.reasoning


def test_outputs_vary_with_the_seed():
    answers = {tuple(run(FakeEngine(s), 6, seed=s).ranking) for s in range(20)}
    assert len(answers) > 5


def test_think_budget_bounds_the_reasoning_and_closes_the_block():
    result = run(FakeEngine(1), 3, budget=5)
    assert len(result.think_tokens) <= 5
    assert result.think_end in ("budget", "model", "end_of_generation")
    assert (result.think_end == "budget") == (len(result.think_tokens) == 5)
    assert result.text.startswith("<think>\n")
    assert result.text.count(THINK_CLOSE) == 1
    if not result.think_closed_by_model:
        assert BUDGET_CLOSE in result.text


def test_thinking_off_emits_only_the_answer():
    result = run(FakeEngine(2), 4, budget=0)
    assert result.text.startswith('{\n  "scores": {"model-1": ')
    assert result.reasoning == "" and result.think_tokens == []


def test_end_of_generation_inside_reasoning_closes_it_instead_of_ending():
    engine = FakeEngine(3, eog_bias=50.0)
    result = run(engine, 3, budget=50)
    assert result.think_tokens == [] and result.think_end == "end_of_generation"
    parse_answer(result.text, names(3))


def test_model_closing_the_block_itself_is_kept():
    result = run(FakeEngine(4, close_bias=50.0), 3, budget=50)
    assert result.think_closed_by_model
    assert result.text.startswith("<think>\n</think>\n\n{")


def test_closing_tag_spelled_over_two_tokens_is_completed_cleanly():
    engine = FakeEngine(5)
    script = iter([engine.ids["a"], engine.ids["</thi"], engine.ids["nk>"]])
    engine.sample = lambda: next(script)
    result = run(engine, 2, budget=50)
    assert result.reasoning == "a"
    assert result.think_closed_by_model
    assert result.text.startswith("<think>\na</think>\n\n{")
    parse_answer(result.text, names(2))


def test_score_probabilities_cover_the_five_scores():
    result = run(FakeEngine(6), 4)
    scores = [c for c in result.choices if c.kind == "score"]
    assert len(scores) == 4
    for choice in scores:
        assert sorted(choice.options) == ["1", "2", "3", "4", "5"]
        assert np.isclose(sum(choice.probabilities), 1.0)


def test_greedy_picks_the_most_likely_score():
    result = run(FakeEngine(7), 5, temperature=0.0)
    for choice in (c for c in result.choices if c.kind == "score"):
        assert choice.chosen == choice.options[int(np.argmax(choice.probabilities))]


def test_forced_text_is_fed_in_batches_not_token_by_token():
    engine = FakeEngine(8)
    result = run(engine, 8, budget=0)
    # 8 scores and at most 7 rank decisions: far fewer evaluations than answer tokens.
    assert len(engine.evaluated_batches) <= 1 + 8 + 7 + 1
    assert result.answer_tokens_evaluated < result.answer_tokens


def test_replay_reproduces_the_output_and_its_probabilities():
    first = run(FakeEngine(9), 6, budget=10, seed=9)
    forcing = Forcing(first.think_tokens, first.think_closing, first.scores, first.ranking)
    replayed = run(FakeEngine(1234), 6, budget=10, forcing=forcing)
    assert replayed.text == first.text
    assert [c.probabilities for c in replayed.choices] == [c.probabilities for c in first.choices]


def test_replay_of_an_output_for_other_responses_is_refused():
    first = run(FakeEngine(10), 3)
    forcing = Forcing(first.think_tokens, first.think_closing,
                      {"model-1": 3, "model-2": 3, "model-9": 3}, first.ranking)
    with pytest.raises((ValueError, KeyError)):
        run(FakeEngine(10), 3, forcing=forcing)
