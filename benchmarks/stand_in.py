"""Re-measure on a real stand-in judge what the README measured on SmolLM2 (a smoke model).

    python benchmarks/stand_in.py accuracy      # 1.5B: full set at think budget 0; quick at 0 and 256
    python benchmarks/stand_in.py quants        # 0.5B: exact F32 reference vs Q8_0/Q4_K_M/Q3_K_M/Q2_K (imatrix)
    python benchmarks/stand_in.py orders        # 1.5B: quick at K = 3 response orders, think budget 0
    python benchmarks/stand_in.py standard      # 1.5B: the RewardBench / RewardBench 2 / RM-Bench fixtures
    python benchmarks/stand_in.py all

The stand-ins are Qwen2.5-Coder-1.5B/0.5B-Instruct Q4_K_M (benchmarks/stand_in_models.py fetches
them; never a dependency). Every track is `ra-lite bench` runs (greedy, the judgment cache on, so
a rerun only judges what changed); reports go to benchmarks/results/stand-in/<track>/ and a summary
to benchmarks/results/stand_in.json. The quant track's reference is the 0.5B's Q4_K_M weights
dequantized exactly to F32 (the 1.5B's F32, 6 GB, is too slow on 2 cores), its importance matrix
collected on that F32 model with ra-lite's calibration set.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

OUT = REPO / "benchmarks" / "results" / "stand-in"
SUMMARY = REPO / "benchmarks" / "results" / "stand_in.json"
QUANTS = ["Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K"]
FIXTURES = REPO / "tests" / "fixtures" / "standard"


def headline(model: dict) -> dict:
    """The numbers a summary keeps of one model's report section."""
    a = model["aggregates"]
    keep = {"label": model["label"], "pairwise_accuracy": a["pairwise_accuracy"],
            "top1_accuracy": a["top1_accuracy"], "kendall_tau": a["kendall_tau"],
            "valid_rate": a["valid_rate"],
            "seconds_per_judgment": model["mean_seconds_per_judgment"],
            "slices": {t: {"pairwise_accuracy": v["pairwise_accuracy"],
                           "top1_accuracy": v["top1_accuracy"], "n": v.get("n_items")}
                       for t, v in model.get("by_tag", {}).items()}}
    if model.get("agreement_with_reference"):
        g = model["agreement_with_reference"]
        keep["versus_reference"] = {k: g.get(k) for k in ("pairwise_agreement", "mean_kld",
                                                          "exact_match_rate", "score_mae")}
    if model.get("order_consistency"):
        c = model["order_consistency"]
        keep["order_consistency"] = {
            k: c.get(k) for k in ("pairwise_agreement", "top1_agreement",
                                  "items_with_a_changed_winner", "mean_score_spread")}
        keep["official_order_pairwise_accuracy"] = \
            c["official_order_aggregates"]["pairwise_accuracy"]
    if model.get("official"):
        keep["official"] = {"headline": model["official"]["headline"],
                            "value": model["official"]["value"],
                            "groups": model["official"]["groups"]}
    return keep


def bench(name: str, models: list[str], **kwargs) -> dict:
    from ra_lite.bench.cli import run_bench

    started = time.perf_counter()
    report = run_bench(models, output_dir=OUT / name, progress=False,
                       notify=lambda m: print(f"  {m}", file=sys.stderr), **kwargs)
    return {"seconds": round(time.perf_counter() - started, 1),
            "n_items": report["data"]["n_items"], "models": [headline(m) for m in report["models"]],
            **({"budget_sweep": [{"label": r["label"], "think_budget": r["think_budget"],
                                  "pairwise_accuracy": r["aggregates"]["pairwise_accuracy"],
                                  "top1_accuracy": r["aggregates"]["top1_accuracy"],
                                  "mean_think_tokens": r["mean_think_tokens"],
                                  "seconds_per_judgment": r["mean_seconds_per_judgment"]}
                                 for r in report["budget_sweep"]]}
               if report.get("budget_sweep") else {})}


def track_accuracy(judge: str) -> dict:
    return {"full_think_0": bench("accuracy-full", [judge], data="full", think_budget=0),
            "quick_sweep": bench("accuracy-quick", [judge], data="quick",
                                 think_budgets=[0, 256])}


def track_orders(judge: str) -> dict:
    return {"quick_orders_3": bench("orders", [judge], data="quick", think_budget=0, orders=3)}


def track_standard(judge: str) -> dict:
    return {path.stem: bench(f"standard-{path.stem}", [judge], data=str(path), think_budget=0)
            for path in sorted(FIXTURES.iterdir())}


def track_quants(small: str) -> dict:
    from imatrix_quality import CHUNK, dequantize_to_f32

    from ra_lite.convert.calibration import load_calibration
    from ra_lite.convert.imatrix import write_imatrix
    from ra_lite.convert.imatrix_collect import collect_imatrix
    from ra_lite.convert.quantize import quantize

    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        reference = dequantize_to_f32(Path(small), tmp / "qwen2.5-coder-0.5b-F32.gguf")
        calibration = load_calibration()
        collected = collect_imatrix(reference, calibration.texts, chunk_size=CHUNK,
                                    datasets=[calibration.name], n_threads=2)
        imatrix = write_imatrix(collected.imatrix, tmp / "qwen0.5b.imatrix.gguf")
        made = quantize(reference, QUANTS, out_dir=tmp, imatrix=imatrix, manifest=False,
                        progress=False)
        prepared = round(time.perf_counter() - t0, 1)
        result = bench("quants", [str(r.output) for r in made], reference=str(reference),
                       data="quick", think_budget=0)
        result.update(prepare_seconds=prepared, imatrix_chunks=collected.n_chunks,
                      sizes_mib={r.quant_type: round(r.output.stat().st_size / 2**20, 1)
                                 for r in made},
                      reference_mib=round(reference.stat().st_size / 2**20, 1))
    return {"quants_0_5b": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tracks", nargs="+", metavar="TRACK",
                        help="accuracy, quants, orders, standard, or all")
    args = parser.parse_args()
    tracks = ["accuracy", "orders", "standard", "quants"] if "all" in args.tracks else args.tracks
    from stand_in_models import StandInError, stand_in_path

    try:
        judge, small = str(stand_in_path("1.5b")), str(stand_in_path("0.5b"))
    except StandInError as e:
        raise SystemExit(f"stand_in: {e}") from None
    OUT.mkdir(parents=True, exist_ok=True)
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.is_file() else {}
    runs = {"accuracy": lambda: track_accuracy(judge), "orders": lambda: track_orders(judge),
            "standard": lambda: track_standard(judge), "quants": lambda: track_quants(small)}
    for track in tracks:
        if track not in runs:
            parser.error(f"unknown track {track!r}")
        print(f"stand_in: {track}", file=sys.stderr)
        summary[track] = {"measured": time.strftime("%Y-%m-%d %H:%M"), **runs[track]()}
        SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")     # after every track
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
