"""The choice-point remote route (ra_lite.remote.choice_route) against a fake server whose choice
answers come from the embedded model's real next-token distribution: the requests it sends
(one reasoning request, one one-token request per choice, each extending the previous prompt,
pinned to a slot), the fields each engine gets, and that a remote judgment equals the local one
for the same reasoning; then the faults (no probabilities, allowed ids outside the top N, a
tokenizer that disagrees, a slot that lost its cache)."""

import pytest

from ra_lite.errors import RaLiteError
from ra_lite.judge import JudgeOptions
from ra_lite.prompt import build_chat_prompt
from ra_lite.remote import load_remote
from ra_lite.request import JudgeRequest
from tests.support.fake_completion_server import FakeCompletionServer

RESPONSES = {"alpha": "4", "beta": "5", "gamma": "four", "delta": "2+2"}
PRINCIPLE, PROMPT = "Prefer the correct answer.", "What is 2+2?"
GREEDY = JudgeOptions(think_budget=0, temperature=0.0)
REQUEST = JudgeRequest.create(PRINCIPLE, PROMPT, RESPONSES)


@pytest.fixture(scope="module")
def model(embedded_path):
    import llama_cpp

    llm = llama_cpp.Llama(str(embedded_path), n_ctx=4096, n_threads=2, verbose=False)
    yield llm
    llm.close()


@pytest.fixture
def fake(model):
    server = FakeCompletionServer()
    server.vocab = server.model = model
    yield server
    server.close()


def notices():
    said = []
    return said, said.append


def assert_close(remote, local, tolerance=0.15):
    """Same verdict; expected scores equal up to llama.cpp's float sums, which depend on how the
    tokens were split into batches and on which KV cells they took: the local engine itself
    moves an expected score of this Q4_1 model by up to ~0.1 between a first judgment and a
    repeat served from its prompt cache."""
    assert remote.scores == local.scores and remote.ranking == local.ranking
    assert set(remote.expected_scores) == set(local.expected_scores)
    for name, value in local.expected_scores.items():
        assert remote.expected_scores[name] == pytest.approx(value, abs=tolerance)


def test_greedy_remote_equals_local_and_only_choices_go_over_the_wire(fake, smollm_judge,
                                                                     embedded_path):
    local = smollm_judge.judge_request(REQUEST, GREEDY)
    judge = load_remote(fake.url, template=embedded_path, options=GREEDY)
    remote = judge.judge(PRINCIPLE, PROMPT, RESPONSES)
    assert_close(remote, local)
    assert remote.score_probabilities and remote.server.route == "choices"

    posts = [r["body"] for r in fake.posts()]
    # One request per score, one per name inside a tie (the last name of a group is forced).
    ties = sum(len(g) - 1 for g in _groups(local.scores))
    assert len(posts) == len(RESPONSES) + ties == remote.server.requests
    for before, after in zip(posts, posts[1:]):
        assert after["prompt"][:len(before["prompt"])] == before["prompt"]   # an extension
        assert 0 < len(after["prompt"]) - len(before["prompt"]) <= 24      # by a few ids
    assert all(p["n_predict"] == 1 and p["n_probs"] == 100 and p["id_slot"] == 0 for p in posts)
    assert "grammar" not in posts[0]
    # Nothing after the final choice is sent: the last prompt stops inside the ranking.
    assert len(posts[-1]["prompt"]) < len(posts[0]["prompt"]) + remote.tokens.answer
    assert remote.server.cache_lost == 0 and remote.server.choices_by_grammar == 0


def test_reasoning_is_one_request_and_the_same_reasoning_gives_the_same_verdict(
        fake, smollm_judge, embedded_path):
    options = JudgeOptions(think_budget=24, temperature=0.0)
    local = smollm_judge.judge_request(REQUEST, options)
    assert local.think_token_ids
    # The server "samples" exactly the local reasoning (and stops as the local one did).
    ids = list(local.think_token_ids)
    stop = {"budget": "limit", "end_of_generation": "eos", "model": "word"}[local.think_end]
    if stop == "eos":
        ids.append(smollm_judge.backend.engine.llm.token_eos())
    fake.script = [(ids, stop)]
    remote = load_remote(fake.url, template=embedded_path, options=options).judge(
        PRINCIPLE, PROMPT, RESPONSES)
    assert remote.reasoning == local.reasoning and remote.think_end == local.think_end
    assert remote.think_token_ids == local.think_token_ids
    assert remote.raw_text == local.raw_text
    assert_close(remote, local)
    think, first_choice = (r["body"] for r in fake.posts()[:2])
    assert think["n_predict"] == 24 and think["stop"] == ["</think>"] and think["return_tokens"]
    assert think["id_slot"] == first_choice["id_slot"] == 0
    assert first_choice["prompt"][:len(think["prompt"]) + len(ids) - (stop == "eos")] == \
        think["prompt"] + ids[:len(ids) - (stop == "eos")]
    # Pieces of the reasoning ids were asked for once, in one request of ids.
    asked = [b for b in fake.tokenize_requests() if isinstance(b["content"], list)]
    assert len(asked) == 1 and asked[0]["with_pieces"] is True


def test_vllm_gets_exactly_the_allowed_ids_and_matches_local(fake, smollm_judge, embedded_path):
    local = smollm_judge.judge_request(REQUEST, GREEDY)
    judge = load_remote(fake.url, "vllm", template=embedded_path, tokenizer=embedded_path,
                        options=GREEDY)
    remote = judge.judge(PRINCIPLE, PROMPT, RESPONSES)
    assert_close(remote, local)
    posts = [r["body"] for r in fake.posts()]
    digits = posts[0]["logprob_token_ids"]
    assert len(digits) == 5 and posts[0]["allowed_token_ids"] == digits
    assert posts[0]["logprobs"] == 5 and posts[0]["model"] == "served-model"
    assert "id_slot" not in posts[0] and "prompt_logprobs" not in posts[0]


def test_orders_average_probabilities_and_replays_work_remotely(fake, smollm_judge,
                                                                embedded_path):
    options = JudgeOptions(think_budget=0, temperature=0.0, orders=2)
    judge = load_remote(fake.url, template=embedded_path, options=options)
    remote = judge.judge(PRINCIPLE, PROMPT, RESPONSES)
    local = smollm_judge.judge_request(REQUEST, options)
    assert remote.consistency.expected_score_spread is not None
    assert_close(remote, local)
    assert remote.server.requests == sum(o.server.requests for o in remote.orders)
    # A replay (mini-RABench's KL divergence) reads the server's probabilities at the
    # reference's choices.
    request = JudgeRequest.create(PRINCIPLE, PROMPT, RESPONSES)
    reference = smollm_judge.judge_request(request, GREEDY)
    replayed = judge.replay(request, reference, GREEDY)
    local_replay = smollm_judge.replay(request, reference, GREEDY)
    assert replayed.scores == reference.scores and replayed.ranking == reference.ranking
    # Close to the local replay: llama.cpp's sums differ between the engine's multi-sequence
    # context (whose cells depend on what it judged before) and the fake's plain one by up to
    # ~0.06 in a probability on this Q4_1 model...
    for name, probs in local_replay.score_probabilities.items():
        assert replayed.score_probabilities[name] == pytest.approx(probs, abs=0.08)
    # ...and a replay of the server's own judgment reads exactly its probabilities back.
    own = judge.judge_request(request, GREEDY)
    again = judge.replay(request, own, GREEDY)
    for name, probs in own.score_probabilities.items():
        assert again.score_probabilities[name] == pytest.approx(probs, abs=1e-9)


def test_a_server_without_probabilities_falls_back_to_grammars_once_said(fake, embedded_path):
    fake.probabilities = "none"
    said, notify = notices()
    judge = load_remote(fake.url, template=embedded_path, options=GREEDY, notify=notify)
    chat = build_chat_prompt(PRINCIPLE, PROMPT, {"a": "4", "b": "5"})
    # The grammar picks for the two scores (SmolLM2 writes ": 3" as ":", " ", "3", so the space
    # is forced text and the choice is among the digit tokens).
    fake.script = [("3", "eos"), ("4", "eos")]
    first = judge.judge(PRINCIPLE, PROMPT, {"a": "4", "b": "5"})
    assert first.expected_scores is None and first.server.choices_by_grammar == 2
    assert first.scores == {chat.masked_to_real["model-1"]: 3, chat.masked_to_real["model-2"]: 4}
    grammar_posts = [r["body"] for r in fake.posts() if "grammar" in r["body"]]
    assert grammar_posts[0]["grammar"] == 'root ::= "1" | "2" | "3" | "4" | "5"\n'
    assert len(said) == 1 and "no token probabilities" in said[0] and "grammar route" in said[0]
    # Later judgments take the grammar route from the start.
    fake.script = [('{\n  "scores": {"model-1": 5, "model-2": 1},\n  "best-to-worst": [', "eos")]
    second = judge.judge(PRINCIPLE, PROMPT, {"a": "4", "b": "5"})
    assert second.server.route == "grammar" and len(said) == 1


def test_allowed_ids_outside_the_top_n_are_answered_by_a_grammar_request(fake, embedded_path):
    judge = load_remote(fake.url, template=embedded_path, options=GREEDY)
    judge.backend.n_probs = 1          # only the single most likely token comes back
    responses = {"a": "4", "b": "5"}
    fake.script = [("2", "eos")] * 4
    result = judge.judge(PRINCIPLE, PROMPT, responses)
    assert sorted(result.ranking) == ["a", "b"]
    work = result.server
    # Wherever the top token was not a digit, that choice went by grammar and is unmeasured.
    assert work.choices_by_grammar == len([p for p in fake.posts() if "grammar" in p["body"]])
    assert (result.expected_scores is None) == (work.choices_by_grammar > 0)


def test_a_slot_that_lost_its_cache_is_reported_once_and_the_verdict_stands(fake, smollm_judge,
                                                                           embedded_path):
    local = smollm_judge.judge_request(REQUEST, GREEDY)
    fake.cache_n = 0                 # every request re-processed from the start
    said, notify = notices()
    judge = load_remote(fake.url, template=embedded_path, options=GREEDY, notify=notify)
    remote = judge.judge(PRINCIPLE, PROMPT, RESPONSES)
    judge.judge(PRINCIPLE, PROMPT, RESPONSES)
    assert_close(remote, local)
    assert remote.server.cache_lost == remote.server.requests - 1
    assert len(said) == 1 and "-np K and --no-cache-idle-slots" in said[0]


def test_a_tokenizer_gguf_for_another_model_is_refused(fake, embedded_path):
    fake.tokenize_mode = "other-vocabulary"
    judge = load_remote(fake.url, "vllm", template=embedded_path, tokenizer=embedded_path,
                        options=GREEDY)
    with pytest.raises(RaLiteError, match="tokenizes text differently.*--remote-tokenizer"):
        judge.judge(PRINCIPLE, PROMPT, RESPONSES)
    assert not fake.posts()


def test_slots_are_pinned_one_judgment_each(fake, embedded_path):
    backend = load_remote(fake.url, template=embedded_path, options=GREEDY).backend
    with backend.pinned_slot() as a, backend.pinned_slot() as b, backend.pinned_slot() as c:
        assert (a, b, c) == (0, 1, None)        # the fake has 2 slots; a third goes unpinned
    with backend.pinned_slot() as again:
        assert again == 0


def test_cancelled_between_choices(fake, embedded_path):
    from ra_lite.runtime.decode import JudgmentCancelled

    backend = load_remote(fake.url, template=embedded_path, options=GREEDY).backend
    asked = []

    def cancelled():
        asked.append(1)
        return len(asked) > 2
    with pytest.raises(JudgmentCancelled):
        backend.generate(build_chat_prompt(PRINCIPLE, PROMPT, RESPONSES), GREEDY,
                         cancelled=cancelled)
    assert len(fake.posts()) == 1
    with backend.pinned_slot() as slot:
        assert slot == 0                       # the cancelled judgment gave its slot back


def _groups(scores):
    by = {}
    for name, score in scores.items():
        by.setdefault(score, []).append(name)
    return list(by.values())


def test_bench_on_a_server_gets_a_kl_divergence_against_a_local_reference(fake, embedded_path,
                                                                          tmp_path):
    import json

    from ra_lite.bench.cli import run_bench
    from ra_lite.bench.dataset import load_items

    items = [i for i in load_items("quick").items if len(i.responses) == 3][:2]
    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(i.to_dict()) + "\n" for i in items))
    remote = {"url": fake.url, "kind": "llama.cpp"}
    report = run_bench([str(embedded_path)], reference=str(embedded_path), data=str(data),
                       output_dir=tmp_path / "out", think_budget=0, use_cache=False,
                       progress=False, notify=lambda m: None, remote=remote)
    reference, on_server = report["models"]
    assert on_server["quant"] == "remote"
    agreement = on_server["agreement_with_reference"]
    # The reference's outputs were replayed on the server: one KL term per score position.
    assert agreement["n_score_positions"] == 6 and agreement["mean_kld"] is not None
    # The same model on both sides: small (llama.cpp's sums), not zero.
    assert 0 <= agreement["mean_kld"] < 0.05
