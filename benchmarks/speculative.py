"""Speculative reasoning: judgments with and without n-gram drafts, side by side in one run.

    python benchmarks/speculative.py -o benchmarks/results/speculative.json
    python benchmarks/speculative.py --items 8 --skip-qwen --skip-server

For each model (the embedded SmolLM2 on mini-RABench's bundled quick set at the default think
budget with the repetition guard on, and a random-weight Qwen3-0.6B-shaped Q4_K_M with a 152k
vocabulary, where drafts mostly fail, on a few items at budget 256), in one process and one
model load:

* the verify-cost curve: the median time of one llama_decode of 1, 2, 3, 4, 8 and 16 tokens
  with logits on every row, at a judgment's context length (what verifying a draft costs);
* every item judged one at a time with speculation off, then on (the same requests, seeds and
  settings): reasoning tokens per second of reasoning time, whole-judgment seconds, the draft
  acceptance rate (ra_lite.speculative: accepted / drafted), validity, and how many verdicts and
  reasonings differ (sampling at temperature 0.1 draws the same random numbers either way, but
  batch shapes change llama.cpp's float sums, so a draw can land on another token);
* with --parallel auto (the slots that fit the budget), off and on: beside batching the
  scheduler verifies no drafts (max_drafting_slots), and with that cap lifted, what drafting
  beside a batch would cost;
* llama-server's own n-gram speculation (--spec-type ngram-mod) on the same prompts (the first
  --server-items, at most --server-max-tokens each, as it generates without a grammar), one
  slot, its reported generation tokens/s with and without it (the head-to-head's anchor).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def verify_curve(judge, sizes=(1, 2, 3, 4, 8, 16), repeats: int = 9) -> list[dict]:
    from ra_lite.runtime.scheduler import BatchEntry

    engine = judge.backend.engine
    context = engine.sequences
    engine.scheduler(1).drop_retained()            # a free sequence 0 (slot 0) to measure in
    prefix = judge.backend.shared_prefix_tokens()
    tokens = (prefix * (700 // max(len(prefix), 1) + 1))[:700]
    context.release(0, 0)
    context.prefill(0, tokens)
    rows, base = [], None
    for k in sizes:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            context.decode([BatchEntry(0, tokens[50:50 + k], len(tokens), k)])
            times.append(time.perf_counter() - started)
            context.release(0, len(tokens))
        median = statistics.median(times)
        base = base or median
        rows.append({"tokens": k, "ms": 1000 * median, "x_one_token": median / base})
    context.release(0, 0)
    return rows


def judge_all(judge, requests, options, parallel: int = 1) -> dict:
    started = time.perf_counter()
    results = list(judge.judge_many(requests, options, parallel=parallel))
    wall = time.perf_counter() - started
    think = sum(r.tokens.think for r in results)
    think_s = sum(r.timings.think_s for r in results)
    drafted = sum((r.speculative or {}).get("drafted", 0) for r in results)
    accepted = sum((r.speculative or {}).get("accepted", 0) for r in results)
    valid = sum(1 for r, q in zip(results, requests)
                if set(r.scores) == set(q.responses) and
                [r.scores[n] for n in r.ranking] == sorted(r.scores.values(), reverse=True))
    return {"wall_s": wall, "judgments": len(results), "think_tokens": think,
            "reasoning_tokens_per_s": think / think_s if think_s else None,
            "think_tokens_per_wall_s": think / wall, "mean_judgment_s":
                sum(r.timings.total_s for r in results) / len(results),
            "drafted": drafted, "accepted": accepted,
            "acceptance": accepted / drafted if drafted else None,
            "valid": valid, "results": results}


def compare(off: dict, on: dict) -> dict:
    pairs = list(zip(off.pop("results"), on.pop("results")))
    return {"off": off, "on": on,
            # One at a time, reasoning tokens per second of reasoning; side by side (where
            # per-judgment reasoning times overlap) reasoning tokens per second of wall time.
            "x_reasoning_tokens_per_s": (on["reasoning_tokens_per_s"] or 0) /
                                        (off["reasoning_tokens_per_s"] or 1),
            "x_think_tokens_per_wall_s": on["think_tokens_per_wall_s"] /
                                         off["think_tokens_per_wall_s"],
            "x_wall": off["wall_s"] / on["wall_s"],
            "verdicts_differing": sum(a.scores != b.scores or a.ranking != b.ranking
                                      for a, b in pairs),
            "reasonings_differing": sum(a.think_token_ids != b.think_token_ids for a, b in pairs)}


def run_model(label, model, items, think_budget, threads, parallel_check) -> dict:
    import ra_lite
    from ra_lite.judge import JudgeOptions
    from ra_lite.request import JudgeRequest

    judge = ra_lite.load(model, n_ctx=8192, n_threads=threads, notify=lambda m: None)
    requests = [JudgeRequest.create(i.principle, i.prompt, i.responses) for i in items]
    off = JudgeOptions(think_budget=think_budget)
    on = replace(off, speculative=True)
    try:
        curve = verify_curve(judge)
        # Warm with a request outside the measured set: the chat header and system prompt in
        # place for both runs, and no measured prompt left in the cells (that would hand the
        # first run one free prefill).
        judge_all(judge, [JudgeRequest.create("Warm up.", "Warm up?", {"a": "Yes.", "b": "No."})],
                  off)
        row = {"model": label, "items": len(items), "think_budget": think_budget,
               "verify_cost": curve, "one_at_a_time": compare(judge_all(judge, requests, off),
                                                              judge_all(judge, requests, on))}
        print(f"{label}: x{row['one_at_a_time']['x_reasoning_tokens_per_s']:.2f} reasoning "
              f"tok/s, acceptance {row['one_at_a_time']['on']['acceptance']}", file=sys.stderr)
        if parallel_check:
            requests = requests[:parallel_check]

            slots = judge.resolve_slots("auto", off)    # as many as fit the budget
            scheduler = judge.backend.engine.scheduler(slots)
            row["parallel"] = slots
            row["parallel_batch"] = compare(judge_all(judge, requests, off, slots),
                                            judge_all(judge, requests, on, slots))
            cap, scheduler.max_drafting_slots = scheduler.max_drafting_slots, None
            try:
                row["parallel_batch_drafting_uncapped"] = compare(
                    judge_all(judge, requests, off, slots), judge_all(judge, requests, on, slots))
            finally:
                scheduler.max_drafting_slots = cap
    finally:
        judge.close()
    return row


def server_ngram(model, items, think_budget, threads) -> list[dict]:
    """llama-server's generation tokens/s on the same prompts, without and with ngram-mod."""
    import urllib.request

    from ra_lite.prompt import build_chat_prompt
    from tests.conftest import WHEEL_CACHE
    from tests.support.llama_server import LlamaServer, server_binary

    binary = server_binary(WHEEL_CACHE)
    rows = []
    for label, extra in (("off", ()), ("ngram-mod", ("--spec-type", "ngram-mod"))):
        tokens = seconds = 0.0
        with LlamaServer(binary, model, slots=1, n_ctx=8192, threads=threads,
                         extra=extra) as server:
            for item in items:
                chat = build_chat_prompt(item.principle, item.prompt, item.responses)
                body = json.dumps({"messages": chat.messages, "temperature": 0.1,
                                   "top_p": 0.9, "top_k": 50, "seed": 0,
                                   "max_tokens": think_budget}).encode()
                request = urllib.request.Request(server.url + "/v1/chat/completions", body,
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=900) as response:
                    timings = json.loads(response.read()).get("timings") or {}
                tokens += timings.get("predicted_n", 0)
                seconds += timings.get("predicted_ms", 0) / 1000
        rows.append({"speculation": label, "generated_tokens": tokens,
                     "generation_tokens_per_s": tokens / seconds if seconds else None})
    rows[1]["x_vs_off"] = rows[1]["generation_tokens_per_s"] / rows[0]["generation_tokens_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--think-budget", type=int, default=2048)
    parser.add_argument("--qwen-items", type=int, default=4)
    parser.add_argument("--qwen-think-budget", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel-items", type=int, default=12,
                        help="items for the side-by-side rows (0: skip them)")
    parser.add_argument("--skip-qwen", action="store_true")
    parser.add_argument("--skip-server", action="store_true")
    parser.add_argument("--server-items", type=int, default=10)
    parser.add_argument("--server-max-tokens", type=int, default=256,
                        help="llama-server writes freely without a grammar: cap it")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    import llama_cpp

    from ra_lite.bench.dataset import load_items
    from ra_lite.embedded import embedded_model_path

    items = load_items("quick").items
    load_at_start = os.getloadavg()
    rows = [run_model("SmolLM2-135M Q4_1 (embedded)", None, items[:args.items],
                      args.think_budget, args.threads, parallel_check=args.parallel_items)]
    server = None
    if not args.skip_server:
        server = server_ngram(embedded_model_path(), items[:args.server_items],
                              args.server_max_tokens, args.threads)
    if not args.skip_qwen:
        from judge_speed import build_qwen_shaped

        with tempfile.TemporaryDirectory() as tmp:
            qwen = build_qwen_shaped(Path(tmp))
            rows.append(run_model("Qwen3-0.6B-shaped Q4_K_M (random)", qwen,
                                  items[:args.qwen_items], args.qwen_think_budget, args.threads,
                                  parallel_check=0))
    result = {"rows": rows, "llama_server_ngram": server,
              "llama_cpp_python": llama_cpp.__version__,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()}
    for row in rows:
        print(f"\n{row['model']}: verify cost " + ", ".join(
            f"{c['tokens']} tok {c['ms']:.1f} ms ({c['x_one_token']:.2f}x)"
            for c in row["verify_cost"]))
        print("| mode | reasoning tok/s off | on | × | reasoning tok per wall s × | judgment s "
              "off | on | acceptance | valid off/on | verdicts differing | reasonings differing |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for mode in ("one_at_a_time", "parallel_batch", "parallel_batch_drafting_uncapped"):
            if mode not in row:
                continue
            c = row[mode]
            acc = c["on"]["acceptance"]
            print(f"| {mode} | {c['off']['reasoning_tokens_per_s']:.1f} | "
                  f"{c['on']['reasoning_tokens_per_s']:.1f} | {c['x_reasoning_tokens_per_s']:.2f} | "
                  f"{c['x_think_tokens_per_wall_s']:.2f} | "
                  f"{c['off']['mean_judgment_s']:.2f} | {c['on']['mean_judgment_s']:.2f} | "
                  f"{'–' if acc is None else f'{100 * acc:.0f}%'} | "
                  f"{c['off']['valid']}/{c['on']['valid']} | {c['verdicts_differing']} | "
                  f"{c['reasonings_differing']} |")
    if server:
        print("\nllama-server ngram-mod: " + ", ".join(
            f"{r['speculation']} {r['generation_tokens_per_s']:.1f} tok/s" for r in server))
    save_result(args.output, result, default=str)


if __name__ == "__main__":
    main()
