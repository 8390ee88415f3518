"""A few real GRPO steps with TRL's GRPOTrainer on CPU, rewarded by ra-lite alone.

    python benchmarks/grpo_smoke.py -o benchmarks/results/grpo_smoke.json

Needs torch and trl (not ra-lite dependencies): here the CPU torch wheel and `pip install
trl`, e.g. in a virtualenv made with --system-site-packages so it sees ra-lite and llama.cpp.
The policy is SmolLM2-135M-Instruct loaded by transformers from the embedded GGUF (its Q4_1
weights dequantized: a real model, not a judge). The reward is `ra_lite.rewards.trl` on the
same embedded model through llama.cpp, the principle taken from a dataset column, every GRPO
group (num_generations completions of one prompt) judged in one listwise judgment, the groups
of a batch side by side in the parallel engine. Recorded per step: the reward's mean and
spread, the loss, the judge's figures (through TRL's log_metric), and the judge's share of the
step's wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROMPTS = [
    ("Prefer the answer that is correct and as short as possible.", "What is the capital of France?"),
    ("Prefer answers that explain their reasoning in one sentence.", "Why is the sky blue?"),
    ("Prefer polite answers that greet the user.", "How do I boil an egg?"),
    ("Prefer answers that give a number with its unit.", "How tall is Mount Everest?"),
    ("Prefer answers that are a single word.", "What color is grass?"),
    ("Prefer answers that include an example.", "What is a prime number?"),
    ("Prefer answers written as a bulleted list.", "Name three fruits."),
    ("Prefer answers that admit uncertainty when it exists.", "Will it rain tomorrow?"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=32)
    parser.add_argument("--think-budget", type=int, default=32)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    try:
        import torch
        import trl
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        raise SystemExit(f"grpo_smoke needs torch, transformers, datasets and trl ({e}): "
                         "install torch for your machine first, then `pip install trl`")

    import ra_lite
    import ra_lite.rewards
    from ra_lite.embedded import embedded_model_path
    from ra_lite.judge import JudgeOptions

    torch.set_num_threads(2)
    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                  dtype=torch.float32)
    # transformers marks a model read from GGUF as quantized and refuses to train it; its
    # weights are already dequantized to float32, so copy them into a plain model.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    policy = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    policy.load_state_dict(loaded.state_dict())
    del loaded
    judge = ra_lite.load(None, n_ctx=8192, notify=lambda m: None)
    reward = ra_lite.rewards.trl(judge, principle_key="principle",
                                 options=JudgeOptions(think_budget=args.think_budget))
    judge_seconds = []

    def timed_reward(**kwargs):
        started = time.perf_counter()
        try:
            return reward(**kwargs)
        finally:
            judge_seconds.append(time.perf_counter() - started)

    timed_reward.__name__ = "ra_lite"
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "principle": p}
                              for p, q in PROMPTS])

    logs, step_started, step_seconds = [], [time.perf_counter()], []

    class Record(TrainerCallback):
        def on_step_begin(self, *a, **k):
            step_started[0] = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_seconds.append(time.perf_counter() - step_started[0])

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                record.append(dict(logs, step=state.global_step))

    record = logs
    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(output_dir=tmp, max_steps=args.steps, learning_rate=1e-6,
                            per_device_train_batch_size=args.generations * 2,
                            num_generations=args.generations,
                            max_completion_length=args.completion_length, logging_steps=1,
                            report_to=[], use_cpu=True, bf16=False, beta=0.0, seed=0,
                            save_strategy="no", temperature=1.0, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=policy, reward_funcs=[timed_reward], args=config,
                              train_dataset=data, processing_class=tokenizer,
                              callbacks=[Record()])
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    judge.close()
    per_step = []
    for i, entry in enumerate(logs):
        step_s = step_seconds[i] if i < len(step_seconds) else None
        judge_s = judge_seconds[i] if i < len(judge_seconds) else None
        per_step.append({
            "step": entry.get("step"), "loss": entry.get("loss"),
            "reward_mean": entry.get("reward"), "reward_std": entry.get("reward_std"),
            "ra_lite_judgments": entry.get("ra_lite/judgments"),
            "ra_lite_failures": entry.get("ra_lite/failures"),
            "ra_lite_mean_think_tokens": entry.get("ra_lite/mean_think_tokens"),
            "judge_seconds": judge_s, "step_seconds": step_s,
            "judge_share_of_step": judge_s / step_s if judge_s and step_s else None})
    result = {"trl": trl.__version__, "torch": torch.__version__, "steps": args.steps,
              "num_generations": args.generations, "prompts_per_step": 2,
              "max_completion_length": args.completion_length,
              "think_budget": args.think_budget, "seconds": total,
              "machine": f"{os.cpu_count()} CPUs", "per_step": per_step}
    print("| step | loss | reward mean | reward std | judgments | failures | judge s | step s | judge share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in per_step:
        def f(x, d=3):
            return "–" if x is None else f"{x:.{d}f}"
        print(f"| {row['step']} | {f(row['loss'], 4)} | {f(row['reward_mean'])} | "
              f"{f(row['reward_std'])} | {f(row['ra_lite_judgments'], 0)} | "
              f"{f(row['ra_lite_failures'], 0)} | {f(row['judge_seconds'], 1)} | "
              f"{f(row['step_seconds'], 1)} | {f(row['judge_share_of_step'], 2)} |")
    save_result(args.output, result)


if __name__ == "__main__":
    main()
