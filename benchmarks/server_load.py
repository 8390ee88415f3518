"""Throughput and latency of `ra-lite serve` under concurrent load, on the embedded model.

Starts `python -m ra_lite serve` (127.0.0.1, a free port) as a child process, then for each
concurrency level sends a fixed number of single-judgment requests from that many client threads
and reports requests/s and latency percentiles side by side. A baseline row measures the same
judgments in-process, without HTTP, in a second child (after the server has stopped), so the
difference is the server's own cost. Every loop is bounded; the server is stopped with SIGTERM
(graceful) at the end, and its exit status is reported.

    python benchmarks/server_load.py                      # levels 1,4,16; 32 requests each
    python benchmarks/server_load.py --levels 1,4,16,64 --requests 64 --parallel 1,4

Each `--parallel` value is a separate server (`ra-lite serve --parallel P`), measured one after
the other in the same run. With P = 1 throughput cannot grow with concurrency (one judgment at
a time); with P slots up to P queued requests decode together in shared llama.cpp batches.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def request_for(i: int) -> dict:
    return {"principle": "Prefer the answer that is correct and as short as possible.",
            "prompt": f"What is {i} + {i}?",
            "responses": {f"short-{i}": str(2 * i), f"wrong-{i}": str(2 * i + 1),
                          f"wordy-{i}": f"The sum of {i} and {i} is {2 * i}, of course."}}


def post(url: str, obj: dict, timeout: float = 600) -> tuple[int, float, dict]:
    data = json.dumps(obj).encode()
    request = urllib.request.Request(url + "/api/rewardanything", data,
                                     {"Content-Type": "application/json"}, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
            return response.status, time.perf_counter() - started, body
    except urllib.error.HTTPError as e:
        return e.code, time.perf_counter() - started, {}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_server(args, parallel: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "ra_lite", "serve", "--port", "0", "--no-log-requests",
               "--parallel", str(parallel),
               "--think-budget", str(args.think_budget), "--n-ctx", "4096",
               "--queue-size", str(max(64, max(args.levels) * 2))]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in iter(proc.stderr.readline, "")],
                     daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited with {proc.returncode}")
            continue
        if " on http://" in line:
            return proc, line.split(" on ")[1].split()[0]
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


def run_level(url: str, concurrency: int, n: int, offset: int) -> dict:
    results = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(post, url, request_for(offset + i)) for i in range(n)]
        for i, future in enumerate(futures):
            status, latency, body = future.result()
            names = set(request_for(offset + i)["responses"])
            ok = status == 200 and set(body.get("results", {}).get("scores", {})) == names
            results.append((ok, latency))
    wall = time.perf_counter() - started
    latencies = [lat for _, lat in results]
    return {"concurrency": concurrency, "requests": n, "ok": sum(ok for ok, _ in results),
            "wall_s": wall, "req_per_s": n / wall, "p50_s": percentile(latencies, 0.5),
            "p95_s": percentile(latencies, 0.95), "max_s": max(latencies)}


BASELINE = """
import json, sys, time
sys.path.insert(0, {root!r})
from benchmarks.server_load import request_for
import ra_lite
judge = ra_lite.load(None, n_ctx=4096, notify=lambda m: None,
                     options=ra_lite.JudgeOptions(think_budget={budget}))
judge.judge_request(ra_lite.JudgeRequest.from_dict(request_for(10**6)))   # warm-up
times = []
for i in range({n}):
    t = time.perf_counter()
    judge.judge_request(ra_lite.JudgeRequest.from_dict(request_for(i)))
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def run_baseline(args) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = BASELINE.format(root=root, budget=args.think_budget, n=args.requests)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    times = json.loads(out.stdout.strip().splitlines()[-1])
    total = sum(times)
    return {"concurrency": "in-process", "requests": len(times), "ok": len(times), "wall_s": total,
            "req_per_s": len(times) / total, "p50_s": percentile(times, 0.5),
            "p95_s": percentile(times, 0.95), "max_s": max(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,4,16", help="comma-separated client concurrency")
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument("--think-budget", type=int, default=32)
    parser.add_argument("--parallel", default="1,4", help="comma-separated serve --parallel values")
    parser.add_argument("--output", default=None, help="also write the raw results (JSON) here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")]

    rows, exit_codes = [], {}
    for parallel in [int(x) for x in args.parallel.split(",")]:
        proc, url = start_server(args, parallel)
        try:
            post(url, request_for(10**6))                 # warm-up: first prompt evaluation
            # The same requests at every level (think lengths differ between prompts), in a
            # different arrival order as concurrency grows.
            for level in args.levels:
                rows.append({"parallel": parallel,
                             **run_level(url, level, args.requests, offset=0)})
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_codes[parallel] = proc.wait(120)
    rows.append({"parallel": "-", **run_baseline(args)})
    exit_code = exit_codes
    load = os.getloadavg()
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "server_exit": exit_code,
                       "loadavg": load}, f, indent=2)
    if args.json:
        print(json.dumps({"rows": rows, "server_exit": exit_code, "loadavg": load}, indent=2))
        return
    print(f"ra-lite serve, embedded SmolLM2-135M Q4_1, think budget {args.think_budget}, "
          f"3 responses/request, {os.cpu_count()} CPUs, load average {load[0]:.2f}")
    print("| parallel | concurrency | requests | ok | req/s | p50 s | p95 s | max s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['parallel']} | {r['concurrency']} | {r['requests']} | {r['ok']} | "
              f"{r['req_per_s']:.2f} | "
              f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['max_s']:.2f} |")
    print(f"server exit status after SIGTERM: {exit_code}")


if __name__ == "__main__":
    main()
