"""Parallel judging throughput: `batch --parallel P` for P = 1, 2, 4, 8, side by side.

    python benchmarks/parallel.py --requests 16 --think-budget 256 -o benchmarks/results/parallel.json
    python benchmarks/parallel.py --requests 16 --think-budget 64 --skip-qwen

For each model (the embedded SmolLM2 and a random Qwen3-0.6B-shaped Q4_K_M with a 152k vocab,
built as in judge_speed.py) it loads the model once and runs ra_lite.batch.run_batch, the code
behind `ra-lite batch --parallel P`, on the same JSONL of requests for every P, into a fresh
output file each time. Reports judgments/s and generated tokens/s (reasoning + answer tokens
from the records) and the ratio to P = 1 measured in the same run.

Beside each model's rows it measures the ceiling: raw llama_decode throughput with P sequences
each adding one token per call, on the same multi-sequence context the scheduler uses, at a
judgment's context length (the shared prefix plus 200 tokens). Whole judgments cannot batch
better than that; on an arithmetic-bound CPU it is near 1x, which is why `--parallel auto` keeps
one slot on small CPUs (ra_lite/slots.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def write_requests(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({
                "id": f"r{i}", "principle": "Prefer the correct answer; penalize verbosity.",
                "prompt": f"What is {i} + {i + 3}?",
                "responses": {"right": str(2 * i + 3), "wrong": str(2 * i + 4),
                              "wordy": f"Well, adding {i} and {i + 3} gives {2 * i + 3}."}}) + "\n")
    return path


def measure(judge, requests: Path, work: Path, options, parallel: int) -> dict:
    from ra_lite.batch import run_batch

    out = work / f"out-p{parallel}.jsonl"
    started = time.perf_counter()
    summary = run_batch(judge, requests, out, options, parallel=parallel)
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in out.read_text().splitlines()]
    valid = [r for r in records if "error" not in r]
    tokens = sum(r["ra_lite"]["tokens"]["think"] + r["ra_lite"]["tokens"]["answer"]
                 for r in valid)
    # The work llama.cpp did: prompt tokens not reused + reasoning + answer tokens evaluated.
    # Reasoning lengths differ between runs (batching changes the float sums, so sampling
    # diverges), which moves judgments/s; work per second is the like-for-like throughput.
    evaluated = sum(t["prompt"] - t["prompt_reused"] + t["think"] + t["answer_evaluated"]
                    for t in (r["ra_lite"]["tokens"] for r in valid))
    return {"parallel": parallel, "judgments": summary.judged_now, "errors": summary.errors,
            "seconds": seconds, "judgments_per_s": len(valid) / seconds,
            "generated_tokens": tokens, "generated_tokens_per_s": tokens / seconds,
            "evaluated_tokens": evaluated, "evaluated_tokens_per_s": evaluated / seconds}


def decode_ceiling(judge, slot_counts, steps: int = 48, extra_context: int = 200) -> list[dict]:
    """Aggregate tokens/s of bare llama_decode calls with P sequences, one token each per call."""
    from ra_lite.runtime.multi_sequence_context import MultiSequenceContext
    from ra_lite.runtime.scheduler import BatchEntry

    engine = judge.backend.engine
    prefix = judge.backend.shared_prefix_tokens()
    filler = prefix[-50:] * (extra_context // 50 + 1)
    context_tokens = prefix + filler[:extra_context]
    rows = []
    for p in slot_counts:
        context = MultiSequenceContext(engine.llm, engine.n_ctx, max(p, 2))
        try:
            context.load_prefix(context_tokens)
            for slot in range(p):
                context.attach_prefix(slot, len(context_tokens))
            position, token = len(context_tokens), context_tokens[-1]
            started = time.perf_counter()
            for k in range(steps):
                status = context.decode([BatchEntry(slot, [token], position + k, 1)
                                         for slot in range(p)])
                if status != 0:
                    raise SystemExit(f"llama_decode failed (status {status}) at P={p}")
            seconds = time.perf_counter() - started
        finally:
            context.close()
        rows.append({"parallel": p, "context_tokens": len(context_tokens),
                     "decode_tokens_per_s": p * steps / seconds})
    for row in rows:
        row["x_vs_p1"] = row["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"]
    return rows


def run_model(label: str, model, requests: Path, work: Path, options, slot_counts, threads):
    import ra_lite

    work = work / label.split()[0]           # fresh outputs per model (else run_batch resumes)
    work.mkdir()
    # prompt_cache off: every P starts from the same state whatever the user's cache holds.
    judge = ra_lite.load(model, n_ctx=8192, n_threads=threads, notify=lambda m: None,
                         prompt_cache=False)
    rows = []
    try:
        list(judge.judge_many([json.loads(requests.read_text().splitlines()[0])], options,
                              parallel=1))   # warm-up: page the weights in
        for p in slot_counts:
            row = measure(judge, requests, work, options, p)
            if row["judgments"] != len(requests.read_text().splitlines()):
                raise SystemExit(f"{label} P={p}: not every request was judged")
            row["model"] = label
            rows.append(row)
            print(f"{label} P={p}: {row['judgments_per_s']:.3f} judgments/s, "
                  f"{row['generated_tokens_per_s']:.1f} tokens/s", file=sys.stderr)
        ceiling = decode_ceiling(judge, slot_counts)
    finally:
        judge.close()
    base = rows[0]
    for row in rows:
        row["x_judgments_vs_p1"] = row["judgments_per_s"] / base["judgments_per_s"]
        row["x_tokens_vs_p1"] = row["generated_tokens_per_s"] / base["generated_tokens_per_s"]
        row["x_evaluated_vs_p1"] = row["evaluated_tokens_per_s"] / base["evaluated_tokens_per_s"]
    for row, bare in zip(rows, ceiling):
        row["bare_decode_tokens_per_s"] = bare["decode_tokens_per_s"]
        row["x_bare_decode_vs_p1"] = bare["x_vs_p1"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--think-budget", type=int, default=256)
    parser.add_argument("--slots", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-qwen", action="store_true")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    import llama_cpp

    from ra_lite.judge import JudgeOptions

    options = JudgeOptions(think_budget=args.think_budget)
    load_at_start = os.getloadavg()
    slot_counts = [int(s) for s in args.slots.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        requests = write_requests(work / "requests.jsonl", args.requests)
        rows = run_model("SmolLM2-135M Q4_1 (embedded)", None, requests, work, options,
                         slot_counts, args.threads)
        if not args.skip_qwen:
            from judge_speed import build_qwen_shaped

            qwen = build_qwen_shaped(work)
            rows += run_model("Qwen3-0.6B-shaped Q4_K_M (random)", qwen, requests, work,
                              options, slot_counts, args.threads)
    result = {"rows": rows, "requests": args.requests, "think_budget": args.think_budget,
              "temperature": options.temperature, "llama_cpp_python": llama_cpp.__version__,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()}
    print("| model | P | judgments/s | × P=1 | generated tok/s | × P=1 | evaluated tok/s | × P=1 "
          "| errors | bare llama_decode tok/s | × P=1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['parallel']} | {r['judgments_per_s']:.3f} | "
              f"{r['x_judgments_vs_p1']:.2f} | {r['generated_tokens_per_s']:.1f} | "
              f"{r['x_tokens_vs_p1']:.2f} | {r['evaluated_tokens_per_s']:.1f} | "
              f"{r['x_evaluated_vs_p1']:.2f} | {r['errors']} | "
              f"{r['bare_decode_tokens_per_s']:.1f} | {r['x_bare_decode_vs_p1']:.2f} |")
    save_result(args.output, result)


if __name__ == "__main__":
    main()
