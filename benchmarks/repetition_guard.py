"""The repetition guard on the embedded model, guard off vs on, side by side in one run.

For each mini-RABench item (the `quick` subset, in order; `--items N` takes the first N), the
embedded SmolLM2-135M judges twice with the official sampling (temperature 0.1, top-p 0.9, seed 0)
and the default think budget: once with the guard off and once with it on (interleaved, so
machine load hits both arms alike; the order alternates per item, because the second judgment of
a request reuses the first one's KV cache for the whole prompt). Results are rewritten after
every item, so a run stopped early (`--max-minutes`) still reports the items it finished. Reported per arm: wall time, think tokens, how the reasoning
ended, validity (checked by re-parsing the raw output strictly), pairwise accuracy against the
ground truth, and the guard-on decisions' agreement with the guard-off ones.

It also checks whether the guard-on reasoning is the guard-off reasoning cut where
RepetitionDetector first fires on it. That holds exactly on a fake engine (tests), but not always
on llama.cpp: the second judgment of a request reuses the KV cache and evaluates in other batch
shapes, and at temperature 0.1 a near-tie can then sample differently (the same happens between
two guard-off runs). The report says for how many items it held.

    python benchmarks/repetition_guard.py --items 12 -o benchmarks/results/repetition_guard_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from ra_lite.atomic_files import write_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=30, help="first N items of the quick subset")
    parser.add_argument("--think-budget", type=int, default=None, help="default: ra-lite's (2048)")
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=None,
                        help="llama.cpp threads (default ra-lite's); on a machine shared with "
                             "other jobs, 1 avoids spinning threads fighting for cores")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop starting new items after this long (report what finished)")
    parser.add_argument("-o", "--output", type=Path,
                        default=Path("benchmarks/results/repetition_guard_smollm2.json"))
    args = parser.parse_args()

    import ra_lite
    from ra_lite.bench.dataset import load_items
    from ra_lite.defaults import DEFAULT_THINK_BUDGET
    from ra_lite.grammar import parse_answer
    from ra_lite.judge import JudgeOptions
    from ra_lite.request import JudgeRequest
    from ra_lite.runtime.repetition import RepetitionDetector

    budget = args.think_budget if args.think_budget is not None else DEFAULT_THINK_BUDGET
    items = load_items("quick").items[: args.items]
    judge = ra_lite.load(None, n_ctx=args.n_ctx, n_threads=args.threads,
                         notify=lambda message: None)
    arms = {"off": JudgeOptions(think_budget=budget, repetition_guard=False),
            "on": JudgeOptions(think_budget=budget, repetition_guard=True)}
    rows = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    for n, item in enumerate(items, 1):
        if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
            print(f"stopping after {n - 1} items (--max-minutes {args.max_minutes})")
            break
        request = JudgeRequest.create(item.principle, item.prompt, item.responses)
        row = {"id": item.id, "category": item.category, "domain": item.domain}
        for arm in (("off", "on") if n % 2 else ("on", "off")):
            options = arms[arm]
            t0 = time.perf_counter()
            judgment = judge.judge_request(request, options)
            seconds = time.perf_counter() - t0
            masked = list(judgment.masked_to_real)
            try:
                parse_answer(judgment.raw_text, masked)
                valid = True
            except Exception:       # any failure to re-parse is an invalid output
                valid = False
            row[arm] = {"seconds": seconds, "think_s": judgment.timings.think_s,
                        "prefill_s": judgment.timings.prefill_s,
                        "think_tokens": judgment.tokens.think,
                        "think_end": judgment.think_end, "valid": valid,
                        "scores": judgment.scores, "ranking": judgment.ranking,
                        "think_token_ids": judgment.think_token_ids}
        # The guard only truncates: on == off cut where the detector first fires on off.
        detector, cut = RepetitionDetector(), None
        for i, token in enumerate(row["off"]["think_token_ids"], 1):
            if detector.feed(token) is not None:
                cut = i
                break
        off_ids, on_ids = row["off"]["think_token_ids"], row["on"]["think_token_ids"]
        expected = off_ids if cut is None or cut >= len(off_ids) else off_ids[:cut]
        row["guard_only_truncates"] = on_ids == expected
        row["off_would_stop_at"] = cut          # where the guard would have cut the off arm
        row["loop_period"] = detector.found.period if detector.found else None
        rows.append(row)
        print(f"[{n}/{len(items)}] {item.id}: off {row['off']['think_tokens']} tok "
              f"{row['off']['seconds']:.1f}s ({row['off']['think_end']}), on "
              f"{row['on']['think_tokens']} tok {row['on']['seconds']:.1f}s "
              f"({row['on']['think_end']}, period {row['loop_period']})", flush=True)
        report = build_report(rows, items, arms, budget, args, load_before,
                              time.perf_counter() - started)
        write_atomic(args.output, (json.dumps(report, indent=1) + "\n").encode())
    judge.close()
    print(markdown(report))


def build_report(rows, items, arms, budget, args, load_before, total_s) -> dict:
    import llama_cpp

    from ra_lite.bench import metrics

    by_id = {item.id: item for item in items}
    summary = {}
    for arm in arms:
        results = []
        for row in rows:
            item, out = by_id[row["id"]], row[arm]
            scored = metrics.score_item(item.scores, out["scores"] if out["valid"] else None,
                                        out["ranking"] if out["valid"] else None)
            results.append(metrics.ItemResult(item.id, item.category, item.domain, scored))
        overall = metrics.MetricSummary.of(results)
        ends: dict[str, int] = {}
        for row in rows:
            ends[row[arm]["think_end"]] = ends.get(row[arm]["think_end"], 0) + 1
        summary[arm] = {
            "wall_s": sum(r[arm]["seconds"] for r in rows),
            "think_s": sum(r[arm]["think_s"] for r in rows),
            "prefill_s": sum(r[arm]["prefill_s"] for r in rows),
            "think_tokens": sum(r[arm]["think_tokens"] for r in rows),
            "think_ends": dict(sorted(ends.items())),
            "valid_rate": overall.valid_rate,
            "pairwise_accuracy": overall.pairwise_accuracy,
            "n_pairs": overall.n_pairs,
        }
    agree = [metrics.pairwise_agreement(r["off"]["scores"], r["off"]["ranking"],
                                        r["on"]["scores"], r["on"]["ranking"]) for r in rows]
    pairs = sum(a.total for a in agree)
    summary["on_vs_off"] = {
        "pairwise_agreement": sum(a.correct for a in agree) / pairs if pairs else None,
        "same_scores_and_ranking": sum(r["off"]["scores"] == r["on"]["scores"] and
                                       r["off"]["ranking"] == r["on"]["ranking"]
                                       for r in rows) / len(rows),
        "items_where_on_is_off_cut_at_detection": sum(r["guard_only_truncates"] for r in rows),
        "items_where_off_would_be_cut": sum(r["off_would_stop_at"] is not None for r in rows),
        "time_ratio_on_over_off": summary["on"]["wall_s"] / summary["off"]["wall_s"],
        "think_time_ratio_on_over_off": summary["on"]["think_s"] / max(summary["off"]["think_s"],
                                                                        1e-9),
        "think_token_ratio_on_over_off": summary["on"]["think_tokens"] /
        max(summary["off"]["think_tokens"], 1),
    }
    report = {
        "what": "repetition guard off vs on, embedded SmolLM2-135M Q4_1, mini-RABench quick",
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "llama_cpp_python": llama_cpp.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "settings": {"items": len(rows), "think_budget": budget, "temperature": 0.1,
                     "top_p": 0.9, "seed": 0, "n_ctx": args.n_ctx, "threads": args.threads},
        "total_run_s": total_s,
        "summary": summary,
        "rows": rows,
    }
    return report


def markdown(report: dict) -> str:
    s = report["summary"]
    lines = ["| guard | wall s | reasoning s | think tokens | ended: model / budget / repetition "
             "/ eog | valid % | pairwise acc % |", "|---|---|---|---|---|---|---|"]
    for arm in ("off", "on"):
        a, e = s[arm], s[arm]["think_ends"]
        lines.append(f"| {arm} | {a['wall_s']:.1f} | {a['think_s']:.1f} | {a['think_tokens']} | "
                     f"{e.get('model', 0)} / {e.get('budget', 0)} / {e.get('repetition', 0)} / "
                     f"{e.get('end_of_generation', 0)} | {100 * a['valid_rate']:.1f} | "
                     f"{100 * a['pairwise_accuracy']:.1f} |")
    v = s["on_vs_off"]
    lines += ["", f"on/off wall time {v['time_ratio_on_over_off']:.2f}, think tokens "
              f"{v['think_token_ratio_on_over_off']:.2f}; on agrees with off on "
              f"{100 * v['pairwise_agreement']:.1f} % of pairs, identical decisions on "
              f"{100 * v['same_scores_and_ranking']:.1f} % of items; on = off cut at detection "
              f"on {v['items_where_on_is_off_cut_at_detection']}/{report['settings']['items']} "
              f"items; load average before/after "
              f"{report['machine']['loadavg_before'][0]:.1f}/{report['machine']['loadavg_after'][0]:.1f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
