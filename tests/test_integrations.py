"""ra-lite inside evaluation frameworks and trainers (ra_lite.integrations, ra_lite.rewards):
each adapter through its framework's own code path where the framework is installed (Inspect's
eval with its mockllm provider, verifiers' plugin loader), or its documented call contract
(promptfoo's get_assert context, verl 0.9's keywords, TRL's reward call), with the embedded model
judging. Frameworks that are not installed skip their tests, saying so."""

import asyncio
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ra_lite.errors import RaLiteError

THINK_0 = {"think_budget": 0, "temperature": 0.0}


# --- promptfoo: called as promptfoo calls a Python assertion --------------------------------------
def promptfoo_context(**config):
    return {"prompt": "What is 2+2?", "vars": {"question": "What is 2+2?", "gold": "4"},
            "test": {}, "config": {"principle": "Prefer the correct answer.", **THINK_0, **config},
            "provider": {"id": "echo"}, "providerResponse": {"output": "4"}}


def test_promptfoo_get_assert_returns_a_grading_result():
    from ra_lite.integrations.promptfoo import get_assert, rank_outputs

    result = get_assert("4", promptfoo_context(threshold=0.0))
    assert set(result) == {"pass", "score", "reason", "named_scores"}
    assert 0.0 <= result["score"] <= 1.0 and result["pass"] is True
    assert 1 <= result["named_scores"]["ra_lite_score"] <= 5
    strict = get_assert("4", promptfoo_context(threshold=1.01))
    assert strict["pass"] is False and strict["score"] == result["score"]
    beside = get_assert("5", promptfoo_context(reference_var="gold"))
    assert 0.0 <= beside["score"] <= 1.0
    ranked = rank_outputs(["4", "5", "four"], promptfoo_context())
    assert sorted(r["named_scores"]["ra_lite_rank"] for r in ranked) == [1.0, 2.0, 3.0]


def test_promptfoo_failures_fail_the_assertion_with_the_reason():
    from ra_lite.integrations.promptfoo import get_assert

    empty = get_assert("", promptfoo_context())
    assert empty == {"pass": False, "score": 0.0,
                     "reason": "ra-lite could not judge: empty output: nothing to judge"}
    context = promptfoo_context()
    del context["config"]["principle"]
    missing = get_assert("4", context)
    assert missing["pass"] is False and "no principle" in missing["reason"]


def _promptfoo_with_node_22():
    """The promptfoo command when it and a Node >= 22 are on PATH (RA_LITE_PROMPTFOO_PATH may
    prepend a directory holding both, e.g. an npm prefix's node_modules/.bin)."""
    import shutil

    path = os.environ.get("RA_LITE_PROMPTFOO_PATH", "") + os.pathsep + os.environ.get("PATH", "")
    promptfoo, node = shutil.which("promptfoo", path=path), shutil.which("node", path=path)
    if not promptfoo or not node:
        return None, path
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0] or 0) if version.strip() else 0
    return (promptfoo if major >= 22 else None), path


@pytest.mark.slow
def test_a_real_promptfoo_eval_uses_the_assertion(tmp_path):
    promptfoo, path = _promptfoo_with_node_22()
    if promptfoo is None:
        pytest.skip("promptfoo with Node >= 22 is not on PATH (npm install node@22 promptfoo; "
                    "set RA_LITE_PROMPTFOO_PATH to their bin directory); CI installs neither")
    (tmp_path / "ra_lite_assert.py").write_text(
        "from ra_lite.integrations.promptfoo import get_assert  # noqa: F401\n")
    config = {"principle": "Prefer the correct answer to 2+2.", **THINK_0}
    tests = [{"vars": {"answer": "4"}, "assert": [{"type": "python", "value":
                                                   "file://ra_lite_assert.py", "threshold": t,
                                                   "config": config}]} for t in (0.0, 1.01)]
    (tmp_path / "promptfooconfig.yaml").write_text(json.dumps(
        {"prompts": ["{{answer}}"], "providers": ["echo"], "tests": tests}))
    done = subprocess.run([promptfoo, "eval", "-c", "promptfooconfig.yaml", "--no-cache", "-o",
                           "out.json", "--no-progress-bar"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "PATH": path, "PROMPTFOO_PYTHON": sys.executable,
                               "PROMPTFOO_DISABLE_TELEMETRY": "1",
                               "PROMPTFOO_DISABLE_UPDATE": "1"})
    out = json.loads((tmp_path / "out.json").read_text())["results"]["results"]
    assert len(out) == 2, done.stdout[-2000:]
    low, high = out
    assert low["success"] is True and 0.0 <= low["score"] <= 1.0
    assert high["success"] is False and "less than threshold 1.01" in \
        high["gradingResult"]["reason"]


# --- RULER-shaped group rewards --------------------------------------------------------------------
def conversation(answer):
    return [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": answer}]


def test_ruler_scores_a_group_and_refuses_a_mixed_one(smollm_judge):
    from ra_lite.integrations.ruler import ruler, ruler_score_group

    scores = ruler([conversation(a) for a in ("4", "5", "four")], smollm_judge,
                   principle="Prefer the correct answer.")
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    other = conversation("4")
    other[1] = {"role": "user", "content": "3+3?"}
    with pytest.raises(RaLiteError, match="2 different prompts: not one group"):
        ruler([conversation("4"), other], smollm_judge, principle="p")

    class Trajectory:                        # ART's shape: messages() and a reward to set
        def __init__(self, answer):
            self.answer, self.reward = answer, None

        def messages(self):
            return conversation(self.answer)

    class Group:
        trajectories = [Trajectory("4"), Trajectory("22")]

    group = ruler_score_group(Group(), smollm_judge, "Prefer the correct answer.")
    assert all(0.0 <= t.reward <= 1.0 for t in group.trajectories)


# --- TRL: num_generations and the reasoning column ------------------------------------------------
def test_trl_reward_with_num_generations_checks_groups_and_logs_reasoning(smollm_judge):
    from ra_lite import rewards
    from ra_lite.options import JudgeOptions

    reward = rewards.trl(smollm_judge, principle="Prefer the correct answer.",
                         options=JudgeOptions(**THINK_0), num_generations=2)
    extra = {}
    out = reward(prompts=["2+2?", "2+2?", "3+3?", "3+3?"], completions=["4", "5", "6", "7"],
                 log_extra=lambda column, values: extra.setdefault(column, values))
    assert len(out) == 4 and all(0.0 <= r <= 1.0 for r in out)
    assert set(extra) == {"ra_lite", "ra_lite_reasoning"} and len(extra["ra_lite_reasoning"]) == 4
    with pytest.raises(RaLiteError, match="completions 0..1 do not share one prompt"):
        reward(prompts=["2+2?", "3+3?"], completions=["4", "6"])
    with pytest.raises(RaLiteError, match="3 completions are not groups of num_generations=2"):
        reward(prompts=["q"] * 3, completions=["a", "b", "c"])
    with pytest.raises(RaLiteError, match="not a group size"):
        rewards.trl(smollm_judge, principle="p", num_generations=1)


def test_trl_online_dpo_reward_call_path(smollm_judge):
    """As TRL 1.16's OnlineDPOTrainer._calculate_rewards_from_functions calls a reward function
    (trl/experimental/online_dpo/online_dpo_trainer.py): prompts doubled (completion i pairs with
    completion i + batch size), dataset columns doubled, trainer_state, no log callbacks."""
    from ra_lite import rewards
    from ra_lite.options import JudgeOptions

    reward = rewards.trl(smollm_judge, principle_key="principle",
                         options=JudgeOptions(**THINK_0))
    prompts = ["2+2?", "Capital of France?"]
    completions = ["4", "Paris", "5", "Lyon"]          # generated twice per prompt
    out = reward(prompts=2 * prompts, completions=completions,
                 completion_ids=[[1, 2]] * 4, trainer_state=object(),
                 principle=["Prefer the correct answer."] * 2 * 2)
    assert len(out) == 4 and all(r is not None and 0.0 <= r <= 1.0 for r in out)
    assert reward.last_stats.judgments == 2          # one listwise pair per prompt


# --- verl 0.9: its extra keywords, sync and async ------------------------------------------------
def test_verl_compute_score_takes_verl_09s_keywords_sync_and_async(embedded_path):
    from ra_lite.rewards.for_verl import compute_score, compute_score_async

    verl_kwargs = {"reward_router_address": "127.0.0.1:9999", "reward_model_tokenizer": object(),
                   "principle": "Prefer the correct answer.", "model": str(embedded_path)}
    info = {"prompt": "What is 2+2?"}
    sync = compute_score("gsm8k", "4", "4", info, **verl_kwargs)
    awaited = asyncio.run(compute_score_async("gsm8k", "4", "4", info, **verl_kwargs))
    assert sync["ra_lite_judged"] == awaited["ra_lite_judged"] == 1.0
    assert 0.0 <= sync["score"] <= 1.0 and 0.0 <= awaited["score"] <= 1.0


# --- Inspect AI: a real eval, mockllm producing the outputs ---------------------------------------
inspect_ai_missing = importlib.util.find_spec("inspect_ai") is None


@pytest.mark.skipif(inspect_ai_missing, reason="inspect-ai is not installed (pip install "
                    "'ra-lite[inspect]'); CI installs no optional framework, for its time budget")
def test_inspect_eval_scores_with_ra_lite(tmp_path, monkeypatch):
    from inspect_ai import Task, eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.solver import generate

    from ra_lite.integrations.inspect_scorer import ra_lite_scorer

    monkeypatch.setenv("INSPECT_LOG_DIR", str(tmp_path / "logs"))
    outputs = []
    for text in ("4", "", "5"):
        output = ModelOutput.from_content("mockllm/model", text)
        # mockllm counts tokens with a tiktoken encoding it would download; give the usage.
        output.usage = ModelUsage(input_tokens=5, output_tokens=1, total_tokens=6)
        outputs.append(output)
    model = get_model("mockllm/model", custom_outputs=outputs)
    task = Task(dataset=[Sample(input="What is 2+2?", target="4", id=i) for i in (1, 2, 3)],
                solver=generate(),
                scorer=ra_lite_scorer("Prefer the correct answer.", mode="vs_target",
                                      **THINK_0))
    (log,) = inspect_eval(task, model=model, log_dir=str(tmp_path / "logs"), display="none")
    assert log.status == "success", log.error
    scores = {s.id: s.scores["ra_lite"] for s in log.samples}
    assert 0.0 <= scores[1].value <= 1.0 and scores[1].answer == "4"
    assert scores[1].metadata["ranking"] and scores[1].explanation is not None
    assert scores[2].value != scores[2].value          # NaN: unscored, not a number
    assert "empty output" in scores[2].explanation
    metrics = log.results.scores[0].metrics
    assert set(metrics) >= {"mean", "stderr"}


# --- verifiers: the plugin, loaded as verifiers loads judges ---------------------------------------
verifiers_missing = importlib.util.find_spec("verifiers") is None


@pytest.mark.skipif(verifiers_missing, reason="verifiers is not installed (pip install "
                    "'ra-lite[verifiers]'); CI installs no optional framework, for its time budget")
def test_verifiers_loads_the_plugin_by_id_and_it_scores(embedded_path):
    from verifiers.v1.configs.judge import resolve_judges
    from verifiers.v1.utils.loaders import load_judge

    (config,) = resolve_judges([{"id": "ra-lite-judge", "principle": "Prefer the correct answer.",
                                 "gguf": str(embedded_path), "think_budget": 0,
                                 "answer_field": "answer"}])
    judge = load_judge(config)
    assert type(judge).__name__ == "RaLiteJudge" and judge.reward_name == "ra-lite-judge"

    class Task:                               # the fields the judge reads
        prompt_text = "What is 2+2?"
        answer = "4"

    class Trace:
        last_reply = "4"
        transcript = "user: What is 2+2?\nassistant: 4"

    value = asyncio.run(judge.score(Task(), Trace()))
    assert 0.0 <= value <= 1.0
    Trace.last_reply = ""
    with pytest.raises(RuntimeError, match="could not judge the rollout: empty output"):
        asyncio.run(judge.score(Task(), Trace()))


deepeval_missing = importlib.util.find_spec("deepeval") is None


@pytest.mark.skipif(deepeval_missing, reason="deepeval is not installed (pip install "
                    "'ra-lite[deepeval]'); CI installs no optional framework, for its time budget")
def test_deepeval_metric_measures_and_reports_failures(embedded_path, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    monkeypatch.chdir(tmp_path)
    from deepeval.test_case import LLMTestCase

    from ra_lite.integrations.deepeval_metric import RaLiteMetric

    metric = RaLiteMetric("Prefer the correct answer.", model=str(embedded_path), threshold=0.0,
                          vs_expected=True, **THINK_0)
    case = LLMTestCase(input="What is 2+2?", actual_output="4", expected_output="4")
    score = metric.measure(case)
    assert 0.0 <= score <= 1.0 and metric.is_successful() and metric.reason is not None
    again = asyncio.run(metric.a_measure(case))
    assert again == pytest.approx(score)
    failed = metric.measure(LLMTestCase(input="What is 2+2?", actual_output=""))
    assert failed is None and metric.error.startswith("empty output")
    assert not metric.is_successful()


def test_the_core_never_imports_the_frameworks():
    """The adapters import ra-lite; nothing in ra-lite's own modules imports them."""
    from tests.test_import_graph import import_graph

    graph = import_graph()
    for module, targets in graph.items():
        if not module.startswith("ra_lite.integrations"):
            assert not any(t.startswith("ra_lite.integrations") for t in targets), module
    assert any(m.startswith("ra_lite.integrations") for m in graph)    # the graph saw them


@pytest.mark.skipif(inspect_ai_missing, reason="inspect-ai is not installed (pip install "
                    "'ra-lite[inspect]'); CI installs no optional framework, for its time budget")
def test_batch_writes_inspects_precomputed_scores(tmp_path):
    """`ra-lite batch --inspect-scores FILE`, read back by Inspect's own precomputed_scores."""
    import json

    from click.testing import CliRunner
    from inspect_ai import Task, eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import precomputed_scores
    from inspect_ai.solver import generate

    from ra_lite.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"s{i}", "principle": "Prefer the correct answer.",
                                       "prompt": "2+2?", "responses": {"candidate": a,
                                                                       "reference": "4"}}) + "\n"
                           for i, a in enumerate(["4", "5"])))
    scores = tmp_path / "scores.jsonl"
    result = CliRunner().invoke(main, ["batch", str(src), "-o", str(tmp_path / "out.jsonl"),
                                       "--think-budget", "0", "--no-cache", "--no-progress",
                                       "--target", "candidate", "--inspect-scores", str(scores)])
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in scores.read_text().splitlines()]
    assert sorted(w["id"] for w in written) == ["s0", "s1"]          # in the order they finished
    assert all(0 <= w["value"] <= 1 for w in written)
    outputs = []
    for _ in range(2):
        output = ModelOutput.from_content("mockllm/model", "x")
        output.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
        outputs.append(output)
    task = Task(dataset=[Sample(input="2+2?", id=f"s{i}") for i in range(2)], solver=generate(),
                scorer=precomputed_scores(str(scores)))
    (log,) = inspect_eval(task, model=get_model("mockllm/model", custom_outputs=outputs),
                          log_dir=str(tmp_path / "logs"), display="none")
    assert log.status == "success", log.error
    got = {s.id: next(iter(s.scores.values())).value for s in log.samples}
    assert got == {w["id"]: w["value"] for w in written}
