"""TRL's reward-function interface (GRPOTrainer, RLOOTrainer) over ra-lite judgments.

    from trl import GRPOTrainer
    import ra_lite, ra_lite.rewards
    judge = ra_lite.load("RewardAnything-8B-v1.Q4_K_M.gguf")
    reward = ra_lite.rewards.trl(judge, principle="Prefer answers that cite a source.")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], ...)

TRL calls a reward function with keyword arguments: `prompts`, `completions` (text, or chat
messages in the conversational format), `completion_ids`, `trainer_state` (0.20+), `log_extra`
and `log_metric` (1.0+) and every dataset column; it wants one float or None per completion
(None is ignored for that completion). The returned function takes any of these and returns
rewards in the order of `completions` (ra_lite.rewards.core says how they are computed). With
`log_metric` it logs the judge's figures for the batch: judgments, failures, completions without
a reward, mean reasoning tokens and seconds.

`trl_async` is the same for TRL's async reward functions (0.27+): it sends every listwise
judgment of the batch to a running `ra-lite serve` at once and awaits them, so the trainer's
event loop is never blocked and a remote GPU box judges while the policy generates.
"""

from __future__ import annotations

import asyncio

from ra_lite.errors import RaLiteError
from ra_lite.rewards.core import (MAX_GROUP, RewardStats, judge_plan, plan_rewards,
                                  principles_for)


def _log(log_metric, stats: RewardStats) -> None:
    if log_metric is None:
        return
    for name, value in stats.metrics().items():
        log_metric(name, float(value))


def trl(judge, principle: str | None = None, principle_key: str | None = None, *,
        options=None, parallel="auto", max_group: int = MAX_GROUP, name: str = "ra_lite"):
    """A TRL reward function judged by `judge` (a ra-lite Judge, local or remote).

    principle: one principle for every sample; principle_key: the dataset column that holds
    each sample's principle instead. options: JudgeOptions (default: the judge's); orders > 1
    there makes each reward independent of where the judge saw the completion."""
    if principle is None and principle_key is None:
        raise RaLiteError("no principle for the reward",
                          "pass principle='...' or principle_key='<dataset column>'")

    def reward(prompts=None, completions=None, completion_ids=None, trainer_state=None,
               log_extra=None, log_metric=None, **columns):
        completions = list(completions or [])
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        plan = plan_rewards(prompts, completions,
                            principles_for(len(completions), principle, principle_key, columns),
                            max_group=max_group)
        rewards = plan.rewards(judge_plan(judge, plan, options, parallel))
        _log(log_metric, plan.stats)
        if log_extra is not None:           # a column of the completions table
            log_extra(name, rewards)
        reward.last_stats = plan.stats
        return rewards

    reward.__name__ = reward.__qualname__ = name      # TRL names its reward columns by it
    reward.last_stats = None
    return reward


def trl_async(server_url: str, principle: str | None = None, principle_key: str | None = None,
              *, api_key: str | None = None, timeout: float = 900.0,
              max_group: int = MAX_GROUP, name: str = "ra_lite"):
    """An async TRL reward function that judges on a running `ra-lite serve` (its URL): every
    listwise judgment of the batch is sent at once and awaited (TRL 0.27+ gathers async reward
    functions on one event loop)."""
    from ra_lite.rewards.core import scores_of, think_tokens_of
    from ra_lite.rewards.server_client import RewardServerClient

    if principle is None and principle_key is None:
        raise RaLiteError("no principle for the reward",
                          "pass principle='...' or principle_key='<dataset column>'")
    client = RewardServerClient(server_url, api_key, timeout)

    def judged(request) -> dict:
        judgment = client.judge_request(request)
        reward.think_tokens += think_tokens_of(judgment)
        return scores_of(judgment)

    async def reward(prompts=None, completions=None, completion_ids=None, trainer_state=None,
                     log_extra=None, log_metric=None, **columns):
        completions = list(completions or [])
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        plan = plan_rewards(prompts, completions,
                            principles_for(len(completions), principle, principle_key, columns),
                            max_group=max_group)
        reward.think_tokens = 0
        outcomes = await asyncio.gather(*(asyncio.to_thread(judged, r) for r in plan.requests),
                                        return_exceptions=True)
        plan.stats.think_tokens = reward.think_tokens
        rewards = plan.rewards(list(outcomes))
        _log(log_metric, plan.stats)
        if log_extra is not None:
            log_extra(name, rewards)
        reward.last_stats = plan.stats
        return rewards

    reward.__name__ = reward.__qualname__ = name
    reward.last_stats = None
    reward.think_tokens = 0
    return reward
