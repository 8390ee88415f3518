"""Rewards per second for a GRPO-shaped batch: 8 prompts x 8 completions, side by side.

    python benchmarks/rewards.py -o benchmarks/results/rewards.json

One batch of 64 completions (8 prompts, 8 completions each, interleaved as a trainer's
processes may hand them over), one principle, the embedded model, think budget 128. Every
route scores the same batch through ra_lite.rewards (8 listwise judgments of 8):
1. local, ra_lite.rewards.trl with --parallel 1;
2. local, the default (--parallel auto: groups judged side by side);
3. through `ra-lite serve --parallel auto` (a separate process), with the sync adapter over
   the server client (concurrent requests) and with trl_async (TRL 0.27+'s async functions).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PRINCIPLE = "Prefer the answer that is correct and as short as possible."


def batch() -> tuple[list[str], list[str]]:
    prompts, completions = [], []
    for i in range(8):
        a, b = i + 2, i + 5
        answers = [f"{a + b}", f"{a + b + 1}", f"It is {a + b}.", f"{a} plus {b} is {a + b}.",
                   "I do not know.", f"{a * b}", f"The sum of {a} and {b} is {a + b}, since "
                   f"adding {b} to {a} gives {a + b}.", f"{a + b - 2}"]
        for answer in answers:
            prompts.append(f"What is {a} + {b}?")
            completions.append(answer)
    order = [g * 8 + k for k in range(8) for g in range(8)]        # groups interleaved
    return [prompts[j] for j in order], [completions[j] for j in order]


def timed(label, score, n) -> dict:
    started = time.perf_counter()
    rewards = score()
    seconds = time.perf_counter() - started
    assert len(rewards) == n
    print(f"{label}: {n / seconds:.2f} rewards/s", file=sys.stderr)
    return {"route": label, "seconds": seconds, "rewards_per_s": n / seconds,
            "unscored": sum(r is None for r in rewards)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--think-budget", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    import ra_lite
    import ra_lite.rewards
    from ra_lite.judge import JudgeOptions
    from ra_lite.rewards.server_client import RewardServerClient
    from tests.support.api_client import serve_subprocess

    prompts, completions = batch()
    n = len(completions)
    options = JudgeOptions(think_budget=args.think_budget)
    rows = []
    judge = ra_lite.load(None, n_ctx=8192, n_threads=args.threads, notify=lambda m: None)
    for parallel, label in ((1, "local, --parallel 1"), ("auto", "local, --parallel auto")):
        reward = ra_lite.rewards.trl(judge, principle=PRINCIPLE, options=options,
                                     parallel=parallel)
        rows.append(timed(label, lambda: reward(prompts=prompts, completions=completions), n))
    judge.close()
    with serve_subprocess(["-m", "ra_lite", "serve", "--think-budget", str(args.think_budget),
                           "--parallel", "auto", "--threads", str(args.threads), "--port", "0",
                           "--no-log-requests"], timeout=120) as (_, _lines, url):
        client = RewardServerClient(url)
        reward = ra_lite.rewards.trl(client, principle=PRINCIPLE)
        rows.append(timed("ra-lite serve --parallel auto, trl()",
                          lambda: reward(prompts=prompts, completions=completions), n))
        async_reward = ra_lite.rewards.trl_async(url, principle=PRINCIPLE)
        rows.append(timed("ra-lite serve --parallel auto, trl_async()",
                          lambda: asyncio.run(async_reward(prompts=prompts,
                                                           completions=completions)), n))
    base = rows[0]["rewards_per_s"]
    for row in rows:
        row["x_vs_parallel_1"] = row["rewards_per_s"] / base
    result = {"completions": n, "groups": 8, "think_budget": args.think_budget,
              "threads": args.threads, "rows": rows, "load_average": os.getloadavg()}
    print("| route | seconds | rewards/s | × parallel 1 | unscored |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['route']} | {r['seconds']:.1f} | {r['rewards_per_s']:.2f} | "
              f"{r['x_vs_parallel_1']:.2f} | {r['unscored']} |")
    save_result(args.output, result)


if __name__ == "__main__":
    main()
