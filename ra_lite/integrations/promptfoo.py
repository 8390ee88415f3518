"""A promptfoo Python assertion: RewardAnything grades an output under a principle.

    # promptfooconfig.yaml
    defaultTest:
      assert:
        - type: python
          value: file://ra_lite_assert.py        # a file containing the one line below
          threshold: 0.5
          config:
            principle: "Prefer answers that cite a source and stay under 100 words."
            model: RewardAnything-8B-v1.Q4_K_M.gguf      # or server: http://judge-box:8000
            think_budget: 512

    # ra_lite_assert.py
    from ra_lite.integrations.promptfoo import get_assert    # noqa: F401

promptfoo calls get_assert(output, context) with the assertion's `config` in context["config"],
the test's variables in context["vars"] and the rendered prompt in context["prompt"]. The result
is promptfoo's GradingResult: `pass` (promptfoo compares `score` with the assertion's `threshold:`;
a `threshold` in config is checked here too; without either, a judged output passes), `score` in
[0, 1] as (expected score - 1) / 4, `reason` = the model's reasoning, `named_scores` with the
1-5 score. `config.reference_var` names a test variable holding a reference answer: the output is
then judged listwise beside it. A failed judgment fails the assertion and says why (never a
silent score). `rank_outputs(outputs, context)` judges several outputs of one prompt in one
listwise judgment (choosing the best of several models' answers).

The judge comes from config `model` (a GGUF path, registry name or hf:// reference; the embedded
smoke-test model when neither is given) or `server` (a running `ra-lite serve`), made once per
process and reused (promptfoo keeps one Python worker per assertion file).
"""

from __future__ import annotations

from ra_lite.errors import RaLiteError
from ra_lite.integrations.verdicts import judge_output, judge_outputs, judge_with_options

DEFAULT_THRESHOLD = 0.5          # rank_outputs' pass mark when config gives none
OPTION_KEYS = ("think_budget", "temperature", "top_p", "seed", "orders")


def _judge_and_options(config: dict):
    return judge_with_options(config.get("model"), config.get("server"), config.get("api_key"),
                              {k: config[k] for k in OPTION_KEYS if k in config})


def _principle(config: dict) -> str:
    principle = config.get("principle")
    if not isinstance(principle, str) or not principle.strip():
        raise RaLiteError("the ra-lite assertion has no principle",
                          "add `config: {principle: \"...\"}` to the assertion")
    return principle


def get_assert(output: str, context: dict) -> dict:
    """promptfoo's assertion hook (module docstring)."""
    config = dict((context or {}).get("config") or {})
    variables = dict((context or {}).get("vars") or {})
    try:
        principle = _principle(config)
        judge, options = _judge_and_options(config)
    except RaLiteError as error:
        return {"pass": False, "score": 0.0, "reason": f"ra-lite: {error.one_line()}"}
    reference = variables.get(config["reference_var"]) if config.get("reference_var") else None
    prompt = str((context or {}).get("prompt") or "")
    verdict = judge_output(judge, principle, prompt, output if isinstance(output, str)
                           else str(output or ""), reference, options)
    if not verdict.judged:
        return {"pass": False, "score": 0.0, "reason": f"ra-lite could not judge: {verdict.reason}"}
    # promptfoo applies the assertion's own `threshold:` to the score after this returns; a
    # threshold in `config` is checked here as well (for runners that have no threshold).
    passed = verdict.value >= float(config["threshold"]) if "threshold" in config else True
    return {"pass": passed, "score": verdict.value,
            "reason": verdict.reason or f"score {verdict.score}/5",
            "named_scores": {"ra_lite_score": float(verdict.score),
                             "ra_lite_expected_score": verdict.expected_score or
                             float(verdict.score)}}


def rank_outputs(outputs: list[str], context: dict) -> list[dict]:
    """Several outputs of one prompt judged together: a GradingResult each, with its rank."""
    config = dict((context or {}).get("config") or {})
    principle = _principle(config)
    judge, options = _judge_and_options(config)
    threshold = float(config.get("threshold", DEFAULT_THRESHOLD))
    results = []
    for verdict in judge_outputs(judge, principle, str((context or {}).get("prompt") or ""),
                                 list(outputs), options):
        if not verdict.judged:
            results.append({"pass": False, "score": 0.0,
                            "reason": f"ra-lite could not judge: {verdict.reason}"})
            continue
        results.append({"pass": verdict.value >= threshold, "score": verdict.value,
                        "reason": verdict.reason, "named_scores": {
                            "ra_lite_score": float(verdict.score),
                            "ra_lite_rank": float(verdict.metadata["rank"])}})
    return results
