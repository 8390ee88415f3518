"""The judgment cache across CI runs: the same batch twice in fresh processes, side by side.

    python benchmarks/judgment_cache.py -o benchmarks/results/judgment_cache.json

Each run is `ra-lite batch` in its own process, as a CI job runs it, on mini-RABench's bundled
quick set (30 requests), into a fresh output file, with a judgment cache that starts empty:
1. the first run judges everything and fills the cache;
2. the second (the next CI run on an unchanged input) is answered from it, never loading the
   model;
3. a third with one setting changed (--seed 1) misses and judges again.
Reported: wall time of each whole process, the hit rate, and whether the model was loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--think-budget", type=int, default=256)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from ra_lite.bench.dataset import load_items

    items = load_items("quick").items
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        requests = tmp / "quick.jsonl"
        requests.write_text("".join(json.dumps({"id": i.id, "principle": i.principle,
                                                "prompt": i.prompt, "responses": i.responses})
                                    + "\n" for i in items))
        env = {**os.environ, "RA_LITE_HOME": str(tmp / "home")}
        for label, extra in (("first run", []), ("second run, same input", []),
                             ("changed setting (--seed 1)", ["--seed", "1"])):
            out = tmp / f"out-{len(rows)}.jsonl"
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "ra_lite", "batch", str(requests),
                                   "-o", str(out), "--think-budget", str(args.think_budget),
                                   "--no-progress", *extra], env=env, capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            cached = int(re.search(r"\((\d+) from the judgment cache\)", done.stdout).group(1))
            rows.append({"run": label, "seconds": seconds, "requests": len(items),
                         "from_cache": cached, "hit_rate": cached / len(items),
                         "model_loaded": "ra-lite: model " in done.stderr})
            print(f"{label}: {seconds:.1f} s, {cached}/{len(items)} from the cache",
                  file=sys.stderr)
    result = {"think_budget": args.think_budget, "rows": rows,
              "x_second_vs_first": rows[0]["seconds"] / rows[1]["seconds"],
              "load_average": os.getloadavg()}
    print("| run | wall s (whole process) | from the cache | hit rate | model loaded |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['seconds']:.1f} | {r['from_cache']}/{r['requests']} | "
              f"{100 * r['hit_rate']:.0f}% | {'yes' if r['model_loaded'] else 'no'} |")
    print(f"\nsecond run: {result['x_second_vs_first']:.1f}x faster than the first")
    save_result(args.output, result)


if __name__ == "__main__":
    main()
