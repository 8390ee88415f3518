"""verl's custom reward functions over ra-lite judgments.

verl imports a reward function by path (`custom_reward_function.path` / `.name`) and passes
`custom_reward_function.reward_kwargs` as keyword arguments, so the judge is named there:

    custom_reward_function:
      path: <site-packages>/ra_lite/rewards/for_verl.py
      name: compute_score              # or compute_score_batch with reward_model.reward_manager=batch
      reward_kwargs:
        principle: "Prefer answers that cite a source."
        server: http://judge-box:8000   # a running `ra-lite serve`; or model: /models/ra-8b.gguf

`compute_score(data_source, solution_str, ground_truth, extra_info)` judges one sample, as
RewardAnything's own RL example does: the response against a reference answer (ground_truth,
or extra_info["reference"]), reward = the response's score mapped to [0, 1]. `solution_str` is
the response alone, so the prompt must come through extra_info["prompt"] (put it there in the
data); the principle is reward_kwargs' `principle` or extra_info["principle"].

`compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos)` (verl's `batch`
reward manager) groups the batch by extra_info["prompt"] and judges each group listwise in one
judgment (ra_lite.rewards.core), concurrently.

verl 0.9 passes more keywords (`reward_router_address`, `reward_model_tokenizer`, ...): every
function here accepts and ignores the ones it does not use. For verl's async reward loop use
`compute_score_async` (the same, awaited; the judgment runs in a worker thread).

verl wants a number for every sample (a failed reward call can crash training, verl #4417), so
a sample that cannot be judged gets `failure_score` (default 0.5, mid-scale) and a warning.
"""

from __future__ import annotations

import logging

from ra_lite.rewards.core import judge_for, judge_plan, plan_rewards, scores_of

FAILURE_SCORE = 0.5
log = logging.getLogger("ra_lite.rewards")


def _info(extra_info) -> dict:
    return extra_info if isinstance(extra_info, dict) else {}


def _principle(principle, info: dict) -> str | None:
    return principle or info.get("principle")


def compute_score(data_source=None, solution_str: str = "", ground_truth=None, extra_info=None,
                  *, principle: str | None = None, model: str | None = None,
                  server: str | None = None, api_key: str | None = None,
                  failure_score: float = FAILURE_SCORE, **_) -> dict:
    """One sample against its reference; {"score": reward, ...} (verl logs the other keys)."""
    from ra_lite.request import JudgeRequest

    info = _info(extra_info)
    reference = ground_truth if isinstance(ground_truth, str) and ground_truth.strip() else \
        info.get("reference")
    try:
        judge = judge_for(model, server, api_key)
        responses = {"generated": solution_str or ""}
        if reference:
            responses["reference"] = str(reference)
        request = JudgeRequest.create(_principle(principle, info) or "",
                                      str(info.get("prompt") or info.get("question") or ""),
                                      responses)
        scores = scores_of(judge.judge_request(request))
    except Exception as error:   # noqa: BLE001 - a reward must never stop training
        log.warning("ra-lite reward: a sample could not be judged (%s); it gets %s",
                    getattr(error, "one_line", lambda: error)(), failure_score)
        return {"score": failure_score, "ra_lite_judged": 0.0}
    return {"score": (scores["generated"] - 1) / 4,
            "ra_lite_reference_score": (scores.get("reference", 1) - 1) / 4,
            "ra_lite_judged": 1.0}


def compute_score_batch(data_sources=None, solution_strs=None, ground_truths=None,
                        extra_infos=None, *, principle: str | None = None,
                        model: str | None = None, server: str | None = None,
                        api_key: str | None = None, failure_score: float = FAILURE_SCORE,
                        parallel="auto", **_) -> list[float]:
    """The batch, grouped by extra_info["prompt"], each group judged listwise."""
    solutions = list(solution_strs or [])
    infos = [_info(i) for i in (extra_infos or [{}] * len(solutions))]
    prompts = [str(i.get("prompt") or i.get("question") or "") for i in infos]
    principles = [_principle(principle, i) or "" for i in infos]
    try:
        judge = judge_for(model, server, api_key)
        plan = plan_rewards(prompts, solutions, principles, neutral=failure_score)
        return plan.rewards(judge_plan(judge, plan, parallel=parallel))
    except Exception as error:   # noqa: BLE001
        log.warning("ra-lite reward: the batch could not be judged (%s); every sample gets %s",
                    getattr(error, "one_line", lambda: error)(), failure_score)
        return [failure_score] * len(solutions)


async def compute_score_async(data_source=None, solution_str: str = "", ground_truth=None,
                              extra_info=None, **kwargs) -> dict:
    """compute_score for verl's async reward loop (0.9 awaits a coroutine function): the same
    keywords (verl's own, such as reward_router_address and reward_model_tokenizer, are
    accepted and ignored), judged in a worker thread so the loop keeps running."""
    import asyncio

    return await asyncio.to_thread(compute_score, data_source, solution_str, ground_truth,
                                   extra_info, **kwargs)
