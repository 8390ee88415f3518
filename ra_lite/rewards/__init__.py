"""ra-lite as the reward of principle-driven RL: one listwise judgment per GRPO group.

    import ra_lite, ra_lite.rewards
    judge = ra_lite.load("RewardAnything-8B-v1.Q4_K_M.gguf")
    reward = ra_lite.rewards.trl(judge, principle="Prefer concise, correct answers.")
    GRPOTrainer(model=..., reward_funcs=[reward], ...)

Modules (each imports only those above it; the judge never imports this package):

    core            grouping by prompt, splitting with an anchor, scores -> rewards, failures
    server_client   a running `ra-lite serve` used as the judge
    for_trl         TRL's reward functions: trl() and trl_async()
    for_verl        verl's compute_score (pointwise) and compute_score_batch (listwise)
    for_openrlhf    OpenRLHF's /get_reward shapes and its reward_func file
"""

from ra_lite.rewards.core import RewardStats, plan_rewards, score_completions
from ra_lite.rewards.for_trl import trl, trl_async

__all__ = ["RewardStats", "plan_rewards", "score_completions", "trl", "trl_async"]
