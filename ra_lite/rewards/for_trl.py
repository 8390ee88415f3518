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
import threading

from ra_lite.errors import RaLiteError
from ra_lite.rewards.core import MAX_GROUP, judge_plan, plan_rewards, principles_for


class _Batch:
    """What both adapters do around the judging: a TRL call's arguments to a RewardPlan, and
    the plan's outcomes to rewards, logged through TRL's callbacks."""

    def __init__(self, principle, principle_key, max_group: int, name: str):
        if principle is None and principle_key is None:
            raise RaLiteError("no principle for the reward",
                              "pass principle='...' or principle_key='<dataset column>'")
        self.principle, self.principle_key = principle, principle_key
        self.max_group, self.name = max_group, name

    def plan(self, prompts, completions, columns: dict):
        completions = list(completions or [])
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        principles = principles_for(len(completions), self.principle, self.principle_key,
                                    columns)
        return plan_rewards(prompts, completions, principles, max_group=self.max_group)

    def finish(self, reward, plan, outcomes, log_metric, log_extra) -> list:
        rewards = plan.rewards(list(outcomes))
        if log_metric is not None:
            for metric, value in plan.stats.metrics().items():
                log_metric(metric, float(value))
        if log_extra is not None:           # a column of the completions table
            log_extra(self.name, rewards)
        reward.last_stats = plan.stats
        return rewards


def trl(judge, principle: str | None = None, principle_key: str | None = None, *,
        options=None, parallel="auto", max_group: int = MAX_GROUP, name: str = "ra_lite"):
    """A TRL reward function judged by `judge` (a ra-lite Judge, local or remote).

    principle: one principle for every sample; principle_key: the dataset column that holds
    each sample's principle instead. options: JudgeOptions (default: the judge's); orders > 1
    there makes each reward independent of where the judge saw the completion."""
    batch = _Batch(principle, principle_key, max_group, name)

    def reward(prompts=None, completions=None, completion_ids=None, trainer_state=None,
               log_extra=None, log_metric=None, **columns):
        plan = batch.plan(prompts, completions, columns)
        return batch.finish(reward, plan, judge_plan(judge, plan, options, parallel),
                            log_metric, log_extra)

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

    batch = _Batch(principle, principle_key, max_group, name)
    client = RewardServerClient(server_url, api_key, timeout)

    async def reward(prompts=None, completions=None, completion_ids=None, trainer_state=None,
                     log_extra=None, log_metric=None, **columns):
        plan = batch.plan(prompts, completions, columns)
        lock = threading.Lock()

        def judged(request) -> dict:
            judgment = client.judge_request(request)
            with lock:                      # the requests run on worker threads
                plan.stats.think_tokens += think_tokens_of(judgment)
            return scores_of(judgment)

        outcomes = await asyncio.gather(*(asyncio.to_thread(judged, r) for r in plan.requests),
                                        return_exceptions=True)
        return batch.finish(reward, plan, outcomes, log_metric, log_extra)

    reward.__name__ = reward.__qualname__ = name
    reward.last_stats = None
    return reward
