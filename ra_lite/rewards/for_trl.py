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

    def __init__(self, principle, principle_key, max_group: int, name: str,
                 num_generations: int | None = None):
        if principle is None and principle_key is None:
            raise RaLiteError("no principle for the reward",
                              "pass principle='...' or principle_key='<dataset column>'")
        if num_generations is not None and (isinstance(num_generations, bool) or
                                            not isinstance(num_generations, int) or
                                            num_generations < 2):
            raise RaLiteError(f"num_generations {num_generations!r} is not a group size",
                              "pass the trainer's num_generations (2 or more), or leave it out")
        self.principle, self.principle_key = principle, principle_key
        self.max_group, self.name = max_group, name
        self.num_generations = num_generations

    def plan(self, prompts, completions, columns: dict):
        completions = list(completions or [])
        prompts = list(prompts) if prompts is not None else [""] * len(completions)
        if self.num_generations is not None:
            self._check_groups(prompts)
        principles = principles_for(len(completions), self.principle, self.principle_key,
                                    columns)
        return plan_rewards(prompts, completions, principles, max_group=self.max_group)

    def _check_groups(self, prompts: list) -> None:
        """With num_generations given (RULER-style group judging): the batch is blocks of that
        many consecutive completions of one prompt, as GRPO generates them. TRL does not pass
        num_generations, so a mismatch is a configuration error: said now, not judged wrong."""
        from ra_lite.rewards.core import text_of

        g = self.num_generations
        if len(prompts) % g:
            raise RaLiteError(f"{len(prompts)} completions are not groups of num_generations={g}",
                              "pass the trainer's own num_generations to the reward")
        texts = [text_of(p) for p in prompts]
        for start in range(0, len(texts), g):
            if len(set(texts[start:start + g])) != 1:
                raise RaLiteError(f"completions {start}..{start + g - 1} do not share one prompt, "
                                  f"so they are not a group of num_generations={g}",
                                  "pass the trainer's own num_generations, or leave it out to "
                                  "group by prompt content")

    def finish(self, reward, plan, outcomes, log_metric, log_extra) -> list:
        rewards = plan.rewards(list(outcomes))
        if log_metric is not None:
            for metric, value in plan.stats.metrics().items():
                log_metric(metric, float(value))
        if log_extra is not None:           # columns of the completions table
            log_extra(self.name, rewards)
            log_extra(f"{self.name}_reasoning", [plan.reasoning_of(i) for i in range(plan.n)])
        reward.last_stats = plan.stats
        return rewards


def trl(judge, principle: str | None = None, principle_key: str | None = None, *,
        options=None, parallel="auto", max_group: int = MAX_GROUP, name: str = "ra_lite",
        num_generations: int | None = None):
    """A TRL reward function judged by `judge` (a ra-lite Judge, local or remote).

    principle: one principle for every sample; principle_key: the dataset column that holds
    each sample's principle instead. options: JudgeOptions (default: the judge's); orders > 1
    there makes each reward independent of where the judge saw the completion.
    num_generations: the trainer's group size (GRPOTrainer's num_generations; TRL does not pass
    it): each block of that many consecutive completions is checked to share its prompt and is
    judged as one group, RULER-style (without it, completions are grouped by prompt content).
    Works unchanged as OnlineDPOTrainer's reward_funcs (TRL 1.16). log_extra gets the rewards
    and the judge's reasoning per completion (columns `<name>` and `<name>_reasoning`)."""
    batch = _Batch(principle, principle_key, max_group, name, num_generations)

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
              max_group: int = MAX_GROUP, name: str = "ra_lite",
              num_generations: int | None = None):
    """An async TRL reward function that judges on a running `ra-lite serve` (its URL): every
    listwise judgment of the batch is sent at once and awaited (TRL 0.27+ gathers async reward
    functions on one event loop)."""
    from ra_lite.rewards.core import scores_of, think_tokens_of
    from ra_lite.rewards.server_client import RewardServerClient

    batch = _Batch(principle, principle_key, max_group, name, num_generations)
    client = RewardServerClient(server_url, api_key, timeout)

    async def reward(prompts=None, completions=None, completion_ids=None, trainer_state=None,
                     log_extra=None, log_metric=None, **columns):
        plan = batch.plan(prompts, completions, columns)
        lock = threading.Lock()

        def judged(index: int, request) -> dict:
            judgment = client.judge_request(request)
            with lock:                      # the requests run on worker threads
                plan.stats.think_tokens += think_tokens_of(judgment)
                plan.reasoning[index] = judgment.reasoning
            return scores_of(judgment)

        outcomes = await asyncio.gather(*(asyncio.to_thread(judged, i, r)
                                          for i, r in enumerate(plan.requests)),
                                        return_exceptions=True)
        return batch.finish(reward, plan, outcomes, log_metric, log_extra)

    reward.__name__ = reward.__qualname__ = name
    reward.last_stats = None
    return reward
