"""Real llama.cpp: the embedded SmolLM2 model and a random-weight model."""

import pytest

import ra_lite
from ra_lite.grammar import parse_answer
from ra_lite.judge import JudgeOptions

PRINCIPLE = "Prefer the answer that is correct and as short as possible."
PROMPT = "What is the capital of France?"
RESPONSES = {"terse": "Paris.", "wrong": "Lyon.", "long": "It is Paris, on the Seine, famous for..."}


def test_judgment_is_valid_and_uses_the_callers_names(smollm_judge):
    result = smollm_judge.judge(PRINCIPLE, PROMPT, RESPONSES, think_budget=24)
    assert set(result.scores) == set(RESPONSES) and sorted(result.ranking) == sorted(RESPONSES)
    assert all(1 <= s <= 5 for s in result.scores.values())
    masked = list(result.masked_to_real)
    parse_answer(result.raw_text, masked)                   # what the model wrote is valid
    assert result.tokens.think <= 24
    official = result.to_dict()
    assert set(official) >= {"thoughts", "results"}
    assert official["results"]["best-to-worst"] == result.ranking
    for probs in result.score_probabilities.values():
        assert abs(sum(probs) - 1) < 1e-6


def test_thinking_off_has_no_reasoning(smollm_judge):
    result = smollm_judge.judge(PRINCIPLE, PROMPT, RESPONSES, think_budget=0)
    assert result.reasoning == "" and result.tokens.think == 0
    assert result.raw_text.startswith("{")


def test_same_seed_same_judgment_and_prefix_is_reused(smollm_judge):
    first = smollm_judge.judge(PRINCIPLE, PROMPT, RESPONSES, think_budget=16, seed=5, temperature=0.8)
    second = smollm_judge.judge(PRINCIPLE, PROMPT, RESPONSES, think_budget=16, seed=5, temperature=0.8)
    assert first.raw_text == second.raw_text
    # The whole prompt but its last token came from the KV cache the second time.
    assert second.tokens.prompt_reused == second.tokens.prompt - 1
    other = smollm_judge.judge("Another principle entirely.", PROMPT, RESPONSES, think_budget=0)
    # The chat header and the system prompt are still shared.
    assert other.tokens.prompt_reused > 250


def test_single_response_gets_an_absolute_score(smollm_judge):
    result = smollm_judge.judge(PRINCIPLE, PROMPT, {"only": "Paris."}, think_budget=0)
    assert list(result.scores) == ["only"] and result.ranking == ["only"]


def test_compare_names_a_winner(smollm_judge):
    comparison = smollm_judge.compare(PRINCIPLE, PROMPT, "Paris.", "Berlin.", think_budget=0)
    assert comparison.winner in ("a", "b")
    assert comparison.judgment.scores == {"a": comparison.score_a, "b": comparison.score_b}


def test_judge_many_keeps_request_order(smollm_judge):
    requests = [{"principle": PRINCIPLE, "prompt": PROMPT, "responses": {f"x{i}": "Paris.", "y": "Rome."}}
                for i in range(3)]
    results = list(smollm_judge.judge_many(requests, JudgeOptions(think_budget=0)))
    assert [next(n for n in r.scores if n.startswith("x")) for r in results] == ["x0", "x1", "x2"]


def test_replay_reproduces_the_output_and_is_deterministic(smollm_judge):
    from ra_lite.request import JudgeRequest

    request = JudgeRequest.create(PRINCIPLE, PROMPT, RESPONSES)
    original = smollm_judge.judge_request(request, JudgeOptions(think_budget=12, seed=3))
    replayed = smollm_judge.replay(request, original)
    again = smollm_judge.replay(request, original)
    assert replayed.raw_text == original.raw_text
    assert replayed.scores == original.scores and replayed.ranking == original.ranking
    # Replays are bit-identical to each other (both models are compared this way) ...
    assert again.score_probabilities == replayed.score_probabilities
    # ... but only close to the sampled run: llama.cpp's numerics depend on how tokens were
    # batched (the reasoning was evaluated token by token, the replay feeds it at once).
    for name, probs in original.score_probabilities.items():
        assert replayed.score_probabilities[name] == pytest.approx(probs, abs=0.05)


def test_replay_without_reasoning_is_bit_exact(smollm_judge):
    from ra_lite.request import JudgeRequest

    request = JudgeRequest.create(PRINCIPLE, PROMPT, RESPONSES)
    original = smollm_judge.judge_request(request, JudgeOptions(think_budget=0))
    assert smollm_judge.replay(request, original).score_probabilities == original.score_probabilities


def test_request_longer_than_the_context_is_refused_with_numbers(smollm_judge):
    with pytest.raises(ra_lite.RaLiteError) as err:
        smollm_judge.judge(PRINCIPLE, PROMPT, {"a": "word " * 5000, "b": "x"}, think_budget=100)
    message = str(err.value)
    assert "tokens" in message and "context holds 4096" in message and "--n-ctx" in message


@pytest.mark.parametrize("n", range(2, 11))
def test_random_weight_model_always_gives_valid_judgments(random_judge, n):
    responses = {f"resp{i}": f"answer number {i} " * (i % 3 + 1) for i in range(n)}
    for seed in range(6):
        result = random_judge.judge("Any principle.", "Any prompt.", responses,
                                    think_budget=seed * 3, seed=seed, temperature=1.5)
        assert sorted(result.ranking) == sorted(responses)
        assert all(result.scores[a] >= result.scores[b]
                   for a, b in zip(result.ranking, result.ranking[1:]))
        parse_answer(result.raw_text, list(result.masked_to_real))


def test_load_reports_the_offload_decision(embedded_path):
    notices = []
    judge = ra_lite.load(embedded_path, n_ctx=512, notify=notices.append)
    judge.close()
    assert any("CPU" in n or "GPU" in n for n in notices)
