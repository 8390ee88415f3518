"""What `--engine ray` costs on one node: the same batch judged locally and on a local Ray cluster.

    python benchmarks/ray_engine.py [--items 30] [--think-budget 64] [-o benchmarks/results/ray_engine.json]

Same requests (mini-RABench's quick set as batch requests), same model (the embedded one unless
--model), same settings (greedy, no judgment cache), each run a fresh `ra-lite batch` process
(so the Ray runs include starting their local cluster and loading the model in the actor, as a
user's run would), one after another:

1. --parallel 1, 2. --parallel 4 (one process, the slot scheduler);
3. --engine ray --actors 1 --slots 4 (one actor, the same scheduler inside it);
4. --engine ray --actors 2 --slots 2 (two actors on the same cores), with llama.cpp's default
   threads and with --threads 1 (one core each).

Reported: wall seconds, judgments/s, and the ratio to --parallel 4.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNS = [("local --parallel 1", ["--parallel", "1"]), ("local --parallel 4", ["--parallel", "4"]),
        ("ray, 1 actor x 4 slots", ["--engine", "ray", "--actors", "1", "--slots", "4"]),
        ("ray, 2 actors x 2 slots", ["--engine", "ray", "--actors", "2", "--slots", "2"]),
        ("ray, 2 actors x 2 slots, --threads 1",
         ["--engine", "ray", "--actors", "2", "--slots", "2", "--threads", "1"])]
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--think-budget", type=int, default=64)
    parser.add_argument("--model", default=None)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from ra_lite.bench.dataset import load_items

    items = load_items("quick").items[:args.items]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text("".join(json.dumps({"id": i.id, "principle": i.principle,
                                           "prompt": i.prompt, "responses": i.responses}) + "\n"
                               for i in items))
        for name, extra in RUNS:
            out = Path(tmp) / f"{len(rows)}.jsonl"
            command = [sys.executable, "-m", "ra_lite", "batch", str(src), "-o", str(out),
                       "--think-budget", str(args.think_budget), "--temperature", "0",
                       "--no-cache", "--no-progress", *extra]
            if args.model:
                command += ["--model", args.model]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True,
                                  env={**os.environ, **RAY_ENV})
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"{name} failed: {done.stderr[-1500:]}")
            rows.append({"run": name, "seconds": round(seconds, 1),
                         "judgments_per_s": len(items) / seconds})
            print(f"{name}: {seconds:.1f} s", file=sys.stderr)
    base = next(r for r in rows if r["run"] == "local --parallel 4")["judgments_per_s"]
    print("| run | wall s | judgments/s | × local --parallel 4 |\n|---|---|---|---|")
    for r in rows:
        r["ratio_to_parallel_4"] = r["judgments_per_s"] / base
        print(f"| {r['run']} | {r['seconds']} | {r['judgments_per_s']:.3f} | "
              f"{r['ratio_to_parallel_4']:.2f} |")
    save_result(args.output, {"items": len(items), "think_budget": args.think_budget,
                              "model": args.model or "embedded SmolLM2-135M",
                              "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                              "rows": rows})


if __name__ == "__main__":
    main()
