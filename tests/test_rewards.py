"""ra_lite.rewards: each adapter called exactly as its trainer calls it (TRL's keyword sets and
both completion formats, verl's custom and batch functions, OpenRLHF's server and file), on a
fake backend whose scores are known, and on the embedded model."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging

import pytest

import ra_lite.rewards as rewards
from ra_lite.grammar import render_answer
from ra_lite.judge import Judge, JudgeOptions
from ra_lite.rewards import core
from ra_lite.rewards.core import _split, plan_rewards, score_completions
from ra_lite.testing import FakeBackend


class ScoringFake(FakeBackend):
    """Scores each response by the digit it ends with ("... 4" -> 4); ranks by score."""

    def __init__(self, fail_when=None):
        super().__init__()
        self.fail_when = fail_when
        self.sizes = []

    def generate(self, chat, options, forcing=None, on_reasoning=None, **_):
        shown = json.loads(chat.messages[1]["content"])["responses"]
        self.sizes.append(len(shown))
        if self.fail_when and self.fail_when(shown):
            from ra_lite.errors import RaLiteError

            raise RaLiteError("the request does not fit", "a test failure")
        scores = {m: int(t.strip()[-1]) if t.strip()[-1:].isdigit() else 3 for m, t in shown.items()}
        ranking = sorted(scores, key=lambda m: -scores[m])
        self.queue("<think>\nok\n</think>\n\n" + render_answer(scores, ranking))
        return super().generate(chat, options)


def fake_judge(**kw):
    return Judge(ScoringFake(**kw))


def test_groups_by_content_not_position_and_rewards_come_back_in_input_order():
    prompts = ["P1", "P2", "P1", "P2", "P1", "P2"]
    completions = ["a 5", "b 1", "c 3", "d 4", "e 1", "f 2"]
    got, stats = score_completions(fake_judge(), prompts, completions, ["Be good."] * 6)
    assert got == [1.0, 0.0, 0.5, 0.75, 0.0, 0.25]
    assert stats.groups == 2 and stats.judgments == 2 and stats.unscored == 0


def test_lonely_and_empty_completions_get_none_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ra_lite.rewards"):
        got, stats = score_completions(fake_judge(), ["A", "B", "B", "B"],
                                       ["x 5", "y 4", "   ", "z 2"], ["p"] * 4)
    assert got == [None, 0.75, None, 0.25]
    assert stats.unscored == 2 and "2 of 4 completions get no reward" in caplog.text
    neutral, _ = score_completions(fake_judge(), ["A"], ["x 5"], ["p"], neutral=0.5)
    assert neutral == [0.5]


def test_a_failed_judgment_gives_none_and_counts_it_never_raises():
    judge = fake_judge(fail_when=lambda shown: any("boom" in t for t in shown.values()))
    got, stats = score_completions(judge, ["A", "A", "B", "B"], ["boom 4", "x 2", "y 5", "z 1"],
                                   ["p"] * 4)
    assert got == [None, None, 1.0, 0.0] and stats.failures == 1


@pytest.mark.parametrize("n, most", [(9, 8), (10, 4), (17, 8), (8, 8), (30, 7)])
def test_large_groups_split_into_balanced_sub_lists_that_share_the_anchor(n, most):
    chunks = _split(list(range(n)), most)
    assert all(c[0] == 0 and len(c) <= most for c in chunks)
    sizes = [len(c) for c in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert sorted(i for c in chunks for i in c[1:]) == list(range(1, n)) or len(chunks) == 1


def test_split_groups_are_put_on_the_anchors_scale():
    judge = fake_judge()
    completions = ["anchor 3"] + [f"c{i} {1 + i % 5}" for i in range(11)]
    got, stats = score_completions(judge, ["P"] * 12, completions, ["p"] * 12, max_group=4)
    assert stats.judgments == 4 and judge.backend.sizes == [4, 4, 4, 3] or \
        sorted(judge.backend.sizes) == [3, 4, 4, 4]
    # The fake scores every sub-list alike, so the anchor's score never moves: no shift.
    assert got[0] == 0.5
    assert got[1:] == [(1 + i % 5 - 1) / 4 for i in range(11)]


def test_the_shift_follows_the_anchor_between_sub_lists():
    plan = plan_rewards(["P"] * 5, ["a", "b", "c", "d", "e"], ["p"] * 5, max_group=3)
    assert [part.members for part in plan.parts] == [[0, 1, 2], [0, 3, 4]]
    outcomes = [{"completion-1": 2.0, "completion-2": 4.0, "completion-3": 1.0},
                {"completion-1": 4.0, "completion-2": 5.0, "completion-3": 3.0}]
    got = plan.rewards(outcomes)
    # Anchor mean 3: sub-list 1 shifted +1, sub-list 2 shifted -1, clipped to 1-5.
    assert got == [0.5, 1.0, 0.25, 0.75, 0.25]


# --- TRL ----------------------------------------------------------------------------------------
def trl_call(reward, prompts, completions, **columns):
    """As GRPOTrainer._calculate_rewards calls a reward function (TRL 1.x)."""
    logged, extra = [], {}
    out = reward(prompts=prompts, completions=completions,
                 completion_ids=[[1, 2]] * len(completions), trainer_state=object(),
                 log_extra=lambda column, values: extra.setdefault(column, values),
                 log_metric=lambda name, value: logged.append((name, value)), **columns)
    return out, dict(logged), extra


def test_trl_standard_format_and_its_keywords():
    reward = rewards.trl(fake_judge(), principle="Be good.")
    assert reward.__name__ == "ra_lite"
    out, logged, extra = trl_call(reward, ["Q", "Q", "R", "R"], ["a 5", "b 1", "c 2", "d 3"],
                                  answer=["x"] * 4)
    assert out == [1.0, 0.0, 0.25, 0.5]
    assert logged["ra_lite/judgments"] == 2 and logged["ra_lite/failures"] == 0
    assert set(logged) >= {"ra_lite/mean_think_tokens", "ra_lite/seconds", "ra_lite/unscored"}
    assert extra["ra_lite"] == out


def test_trl_conversational_format_and_a_principle_column():
    judge = fake_judge()
    reward = rewards.trl(judge, principle_key="principle")
    prompts = [[{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]] * 3
    completions = [[{"role": "assistant", "content": f"answer {k}"}] for k in (4, 2, 5)]
    out, _, _ = trl_call(reward, prompts, completions, principle=["Be kind."] * 3)
    assert out == [0.75, 0.25, 1.0]
    chat, _ = judge.backend.calls[0]
    sent = json.loads(chat.messages[1]["content"])
    assert sent["principle"] == "Be kind." and sent["prompt"] == "system: sys\n\nuser: hi"
    with pytest.raises(Exception, match="no 'principle' column"):
        reward(prompts=prompts, completions=completions)


def test_trl_without_any_principle_is_refused_up_front():
    with pytest.raises(Exception, match="no principle"):
        rewards.trl(fake_judge())


def test_trl_async_against_a_real_ra_lite_server():
    from ra_lite.serve.server import RewardServer, ServerConfig

    with RewardServer(fake_judge(), ServerConfig(port=0, workers=1)) as server:
        reward = rewards.trl_async(server.url, principle="Be good.")
        logged = []
        out = asyncio.run(reward(prompts=["Q", "R", "Q", "R"], completions=["a 4", "b 2", "c 1", "d 5"],
                                 completion_ids=None, trainer_state=None,
                                 log_metric=lambda n, v: logged.append(n)))
    assert out == [0.75, 0.25, 0.0, 1.0] and "ra_lite/judgments" in logged
    dead = rewards.trl_async("http://127.0.0.1:9", principle="p")
    assert asyncio.run(dead(prompts=["Q", "Q"], completions=["a 1", "b 2"])) == [None, None]


# --- verl ---------------------------------------------------------------------------------------
@pytest.fixture
def judge_for(monkeypatch):
    judge = fake_judge()
    monkeypatch.setattr(core, "_JUDGES", {(None, None, ()): judge})
    return judge


def test_verl_compute_score_is_pointwise_against_the_reference(judge_for):
    from ra_lite.rewards.for_verl import compute_score

    got = compute_score("src", "my answer 4", "reference 2",
                        {"prompt": "Q?", "principle": "Be right."})
    assert got["score"] == 0.75 and got["ra_lite_reference_score"] == 0.25
    chat, _ = judge_for.backend.calls[-1]
    assert set(json.loads(chat.messages[1]["content"])["responses"].values()) == \
        {"my answer 4", "reference 2"}
    failed = compute_score("src", "x", None, {"prompt": "Q?"})        # no principle anywhere
    assert failed == {"score": 0.5, "ra_lite_judged": 0.0}


def test_verl_batch_groups_by_the_prompt_in_extra_info(judge_for):
    from ra_lite.rewards.for_verl import compute_score_batch

    infos = [{"prompt": p} for p in ("A", "B", "A", "B", "C")]
    got = compute_score_batch(data_sources=["s"] * 5, solution_strs=["x 5", "y 2", "z 1", "w 3", "v 4"],
                              ground_truths=[None] * 5, extra_infos=infos, principle="p")
    assert got == [1.0, 0.25, 0.0, 0.5, 0.5]          # C is alone: the failure score


# --- OpenRLHF -----------------------------------------------------------------------------------
def test_openrlhf_splits_the_response_off_the_query():
    from ra_lite.rewards.for_openrlhf import prompt_text, split_response

    prompt = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert split_response(prompt + "It is 4.<|im_end|><|endoftext|>", prompt) == "It is 4."
    assert split_response("garbled" + prompt[3:] + "Four.</s>", prompt) == "Four."
    assert prompt_text(prompt) == "What is 2+2?"
    llama3 = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert prompt_text(llama3) == "Hi there" and split_response(llama3 + "Yo<|eot_id|>", llama3) == "Yo"


def test_openrlhf_server_endpoint_shapes_and_failures():
    from ra_lite.serve.server import RewardServer, ServerConfig
    from tests.support.api_client import post_json

    config = ServerConfig(port=0, reward_principle="Be right.")
    with RewardServer(fake_judge(), config) as server:
        status, body, _ = post_json(server.url, "/get_reward", {
            "query": ["Q?answer 4", "Q?answer 1", "Q?"], "prompts": ["Q?", "Q?", "Q?"],
            "labels": ["ref 2", None, "ref 3"]})
        assert status == 200
        assert body["rewards"] == [0.75, 0.0, 0.5] and body["scores"] == body["rewards"]
        assert body["extra_logs"]["ra_lite_judged"] == [1.0, 1.0, 0.0]   # the empty response
        bad, detail, _ = post_json(server.url, "/get_reward", {"prompts": []})
        assert bad == 400
    with RewardServer(fake_judge(), ServerConfig(port=0)) as server:
        status, detail, _ = post_json(server.url, "/get_reward", {"query": ["x"], "prompts": [""]})
        assert status == 400 and "--reward-principle" in detail["detail"]


def test_openrlhf_reward_func_file_loaded_by_path(judge_for, monkeypatch):
    import ra_lite.rewards.for_openrlhf as module

    monkeypatch.setenv("RA_LITE_REWARD_PRINCIPLE", "Be right.")
    spec = importlib.util.spec_from_file_location("reward_func_module", module.__file__)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)                   # as OpenRLHF loads a .py reward
    got = loaded.reward_func(["P: x 5", "P: y 2"], ["P: ", "P: "], ["r 1", "r 1"])
    assert got["rewards"] == [1.0, 0.25] and len(got["extra_logs"]["ra_lite_judged"]) == 2


# --- on the embedded model -------------------------------------------------------------------
@pytest.mark.slow
def test_trl_reward_on_the_embedded_model_uses_the_parallel_engine(smollm_judge):
    reward = rewards.trl(smollm_judge, principle="Prefer the correct answer.",
                         options=JudgeOptions(think_budget=8, temperature=0.0))
    prompts = [f"What is {i}+{i}?" for i in (1, 2) for _ in range(4)]
    completions = [f"{2 * i + d}" for i in (1, 2) for d in range(4)]
    order = [0, 4, 1, 5, 2, 6, 3, 7]                   # groups interleaved, as across processes
    out, logged, _ = trl_call(reward, [prompts[k] for k in order], [completions[k] for k in order])
    assert len(out) == 8 and all(r is not None and 0 <= r <= 1 for r in out)
    assert logged["ra_lite/judgments"] == 2 and logged["ra_lite/failures"] == 0
    again, _, _ = trl_call(reward, [prompts[k] for k in order], [completions[k] for k in order])
    # Greedy again: the same verdicts, up to the float sums of other batch splits.
    assert again == pytest.approx(out, abs=0.05)
