"""What position bias and a shorter think budget cost each quant: one run, side by side.

    python benchmarks/orders.py -o benchmarks/results/orders.json

Models: the embedded SmolLM2 (Q4_1), and Q3_K_M and Q2_K made with an importance matrix from
its exact F32 dequantization, which is the reference (benchmarks/imatrix_quality.py builds them
the same way). On mini-RABench's bundled quick set (30 items), greedy, one process:

1. every model at --orders 1 and at --orders 3 with nothing cached: accuracy from the
   aggregated verdicts against the official order alone, order consistency (pairs ordered the
   same way in every order, same winner, score spread), how much of the reference's
   consistency each quant lost, and what K = 3 costs in wall time against K = 1 (the three
   orders run side by side in one context, sharing the evaluated principle and prompt);
2. the think-budget sweep at --orders 1: accuracy, agreement with the reference at the largest
   budget and seconds per judgment for each budget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def build_models(tmp: Path, threads: int) -> tuple[Path, dict[str, Path]]:
    from imatrix_quality import CHUNK, dequantize_to_f32

    from ra_lite.convert.calibration import load_calibration
    from ra_lite.convert.imatrix import write_imatrix
    from ra_lite.convert.imatrix_collect import collect_imatrix
    from ra_lite.convert.quantize import quantize
    from ra_lite.embedded import embedded_model_path

    reference = dequantize_to_f32(embedded_model_path(), tmp / "SmolLM2-135M-F32.gguf")
    calibration = load_calibration()
    collected = collect_imatrix(reference, calibration.texts, chunk_size=CHUNK,
                                datasets=[calibration.name], n_threads=threads)
    imatrix = write_imatrix(collected.imatrix, tmp / "SmolLM2-135M.imatrix.gguf")
    models = {"Q4_1 (embedded)": embedded_model_path()}
    for r in quantize(reference, ["Q3_K_M", "Q2_K"], out_dir=tmp, manifest=False,
                      progress=False, imatrix=imatrix):
        models[f"{r.quant_type} +imatrix"] = r.output
    return reference, models


def quick_subset(n: int, path: Path) -> Path:
    """The first n quick-set items as a JSONL file, lines exactly as bundled."""
    from ra_lite.bench.dataset import FULL_FILE, _bundled_text, quick_ids

    wanted = quick_ids()[:n]
    by_id = {json.loads(line)["id"]: line for line in _bundled_text(FULL_FILE).splitlines()
             if line.strip()}
    path.write_text("".join(by_id[i] + "\n" for i in wanted), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--think-budget", type=int, default=256)
    parser.add_argument("--think-budgets", default="0,64,256")
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--data", default="quick")
    parser.add_argument("--items", type=int, default=None,
                        help="only the first N items of the quick set (a bounded run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from ra_lite.bench.cli import run_bench

    load_at_start = os.getloadavg()
    result: dict = {"think_budget": args.think_budget, "orders": args.orders,
                    "data": args.data}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference, models = build_models(tmp, args.threads)
        if args.items is not None:
            args.data = str(quick_subset(args.items, tmp / "items.jsonl"))
            result["items"] = args.items
        paths = [str(p) for p in models.values()]
        labels = {Path(p).name: name for name, p in models.items()}
        labels[reference.name] = "F32 (reference)"
        runs = {}
        for k in (1, args.orders):
            started = time.perf_counter()
            runs[k] = run_bench(paths, reference=str(reference), data=args.data,
                                output_dir=tmp / f"orders-{k}", think_budget=args.think_budget,
                                orders=k, use_cache=False, progress=False,
                                notify=lambda m: None)
            runs[k]["wall_s"] = time.perf_counter() - started
            print(f"orders {k}: {runs[k]['wall_s']:.0f} s", file=sys.stderr)
        rows = []
        for one, many in zip(runs[1]["models"], runs[args.orders]["models"]):
            c = many["order_consistency"]
            rows.append({
                "model": labels.get(one["label"], one["label"]), "quant": one["quant"],
                "pairwise_accuracy_k1": one["aggregates"]["pairwise_accuracy"],
                "pairwise_accuracy_kn": many["aggregates"]["pairwise_accuracy"],
                "pairwise_accuracy_kn_official_order":
                    c["official_order_aggregates"]["pairwise_accuracy"],
                "pairs_ordered_alike": c["pairwise_agreement"],
                "same_winner": c["top1_agreement"],
                "items_whose_winner_changed": c["items_with_a_changed_winner"],
                "mean_score_spread": c["mean_score_spread"],
                "pair_consistency_lost_vs_reference": c.get("pairwise_agreement_lost"),
                "agreement_with_reference_k1":
                    (one.get("agreement_with_reference") or {}).get("pairwise_agreement"),
                "agreement_with_reference_kn":
                    (many.get("agreement_with_reference") or {}).get("pairwise_agreement"),
                "seconds_per_judgment_k1": one["mean_seconds_per_judgment"],
                "seconds_per_judgment_kn": many["mean_seconds_per_judgment"]})
        result["consistency"] = rows
        result["wall_s"] = {"orders_1": runs[1]["wall_s"], f"orders_{args.orders}":
                            runs[args.orders]["wall_s"],
                            "x": runs[args.orders]["wall_s"] / runs[1]["wall_s"]}
        budgets = [int(b) for b in args.think_budgets.split(",")]
        started = time.perf_counter()
        sweep = run_bench(paths, reference=str(reference), data=args.data,
                          output_dir=tmp / "sweep", think_budgets=budgets, use_cache=True,
                          cache_dir=tmp / "cache", progress=False, notify=lambda m: None)
        result["sweep_wall_s"] = time.perf_counter() - started
        result["budget_sweep"] = [{**row, "model": labels.get(row["label"], row["label"])}
                                  for row in sweep["budget_sweep"]]
    result["load_average"] = {"start": load_at_start, "end": os.getloadavg()}
    print(f"\nK = {args.orders} costs {result['wall_s']['x']:.2f}x the wall time of K = 1 "
          f"({result['wall_s']['orders_1']:.0f} s vs "
          f"{result['wall_s'][f'orders_{args.orders}']:.0f} s, all models, nothing cached)\n")
    print(f"| model | pairwise acc % K=1 | K={args.orders} | K={args.orders} official order only "
          "| pairs ordered alike % | same winner % | winner changed % | mean score spread "
          "| consistency lost vs F32 (points) | s/judgment K=1 | "
          f"K={args.orders} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}"  # noqa: E731
    for r in rows:
        lost = r["pair_consistency_lost_vs_reference"]
        print(f"| {r['model']} | {pct(r['pairwise_accuracy_k1'])} | {pct(r['pairwise_accuracy_kn'])} | "
              f"{pct(r['pairwise_accuracy_kn_official_order'])} | {pct(r['pairs_ordered_alike'])} | "
              f"{pct(r['same_winner'])} | {pct(r['items_whose_winner_changed'])} | "
              f"{r['mean_score_spread']:.2f} | {'–' if lost is None else f'{100 * lost:+.1f}'} | "
              f"{r['seconds_per_judgment_k1']:.2f} | {r['seconds_per_judgment_kn']:.2f} |")
    print("\n| model | think budget | pairwise acc % | agree w/ F32 at the largest budget % "
          "| mean think tokens | s / judgment |")
    print("|---|---|---|---|---|---|")
    for row in result["budget_sweep"]:
        print(f"| {row['model']} | {row['think_budget']} | "
              f"{pct(row['aggregates']['pairwise_accuracy'])} | "
              f"{pct(row['agreement_with_reference_at_max_budget'])} | "
              f"{row['mean_think_tokens']:.0f} | {row['mean_seconds_per_judgment']:.2f} |")
    save_result(args.output, result)


if __name__ == "__main__":
    main()
