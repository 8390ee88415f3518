"""Does mini-RABench see quantization damage? Quants of one model against its reference.

    python benchmarks/quant_sensitivity.py [--data quick] [--think-budget 0] [-o DIR]

Two tracks, each one `ra-lite bench` run with a reference and several quants:

* embedded: SmolLM2-135M-Instruct as shipped (Q4_1, the highest precision that exists of it
  here) is the reference; Q8_0 … Q2_K are *requantized from that Q4_1* with llama.cpp's quantizer.
  A real model, but its "full precision" is already 4.5 bits, and it is far too small to judge.
* random-f32: a random-weight Llama (SmolLM2's tokenizer, 512 wide, 4 layers) written in F32,
  quantized directly from F32 — a true full-precision reference, but a model with no skill.

What should hold on both: agreement with the reference falls and KL divergence rises as bits go
down (Q8_0 → Q4 → Q2). Accuracy against ground truth is reported as measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QUANTS = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="quick")
    parser.add_argument("--think-budget", type=int, default=0)
    parser.add_argument("--tracks", default="embedded,random-f32")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    from ra_lite.bench.cli import run_bench
    from ra_lite.convert.quantize import quantize
    from ra_lite.embedded import embedded_model_path
    from tests.support.random_gguf import write_random_gguf

    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for track in args.tracks.split(","):
            if track == "embedded":
                reference = embedded_model_path()
                allow_requantize = True
            else:
                reference = write_random_gguf(tmp / "random-F32.gguf", embedded_model_path(),
                                              seed=11, n_embd=512, n_layers=4, n_head=8,
                                              n_head_kv=4, n_ff=1536, context_length=8192)
                allow_requantize = False
            (tmp / track).mkdir()
            outs = quantize(reference, QUANTS, out_dir=tmp / track, allow_requantize=allow_requantize,
                            manifest=False, progress=False)
            report = run_bench([str(r.output) for r in outs], reference=str(reference),
                               data=args.data, output_dir=args.output_dir / f"sensitivity-{track}",
                               think_budget=args.think_budget, cache_dir=tmp / "cache",
                               progress=False)
            summary[track] = [{"quant": m["quant"], "role": m["role"],
                               "size_mib": round(m["size_bytes"] / 2**20, 1),
                               "pairwise_accuracy": m["aggregates"]["pairwise_accuracy"],
                               **{k: m["agreement_with_reference"][k] for k in
                                  ("pairwise_agreement", "exact_match_rate", "score_mae",
                                   "mean_kld", "same_top_score_rate")}}
                              for m in report["models"]]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "sensitivity-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for track, rows in summary.items():
        print(f"\n{track}:\n| quant | MiB | pairwise acc % | agreement % | same scores+rank % "
              "| score MAE | mean KLD | same top score % |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['quant']}{' (reference)' if r['role'] == 'reference' else ''} | "
                  f"{r['size_mib']} | {100 * r['pairwise_accuracy']:.1f} | "
                  f"{100 * r['pairwise_agreement']:.1f} | {100 * r['exact_match_rate']:.1f} | "
                  f"{r['score_mae']:.3f} | {r['mean_kld']:.5f} | "
                  f"{100 * r['same_top_score_rate']:.1f} |")


if __name__ == "__main__":
    main()
