"""Cold start, side by side in one run: what a fresh process pays before and during one judgment.

    python benchmarks/cold_start.py -o benchmarks/results/cold_start.json
    python benchmarks/cold_start.py --official-python /path/to/venv/bin/python   # with torch

Measures, each in a fresh process:
  1. `ra_lite.load` against a bare `llama_cpp.Llama` load of the same file, on the embedded
     SmolLM2 (49k vocabulary) and on a random Qwen3-0.6B-shaped Q4_K_M (151,936 tokens);
     `ra-lite info` on the latter;
  2. the wall time of a whole `ra-lite judge` process on the Qwen-shaped model: the first ever
     (empty cache: prefill, then the prefix state is saved), then with the persisted state, and
     with --no-prompt-cache;
  3. the same request through the official `rewardanything` package's local path
     (transformers + torch) on the same checkpoint, generating as many tokens, when the given
     Python has torch and rewardanything; otherwise it says it skipped.

The checkpoint is random (no download): a Hugging Face folder with Qwen3-0.6B's shapes, a small
trained BPE tokenizer padded to 151,936 ids, converted by `ra-lite convert` and quantized to
Q4_K_M, so both runtimes run the same weights and tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PRINCIPLE = ("Prefer the response that answers correctly with the fewest words; "
             "penalize any factual error heavily.")
PROMPT = "What is the boiling point of water at sea level, in degrees Celsius?"
RESPONSES = {"terse": "100 °C.", "wrong": "It boils at 90 °C at sea level.",
             "hedged": "Probably around 100 °C, but it depends on many things."}

LOAD_SNIPPET = """
import sys, time
kind, path, n_ctx = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
if kind == "bare":
    import llama_cpp
    llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=2, flash_attn=True,
                          verbose=False)
else:
    import ra_lite
    llm = ra_lite.load(path, n_ctx=n_ctx, n_threads=2, notify=lambda m: None)
print(time.perf_counter() - started)
"""

OFFICIAL_SNIPPET = """
import json, sys, time
started = time.perf_counter()
import torch
import rewardanything
torch.set_num_threads(int(sys.argv[2]))
model = rewardanything.from_pretrained(sys.argv[1], device="cpu")
loaded = time.perf_counter()
request = json.loads(sys.argv[4])
n = int(sys.argv[3])
result = model.judge(request["principle"], request["prompt"], request["responses"],
                     max_new_tokens=n, min_new_tokens=n)
done = time.perf_counter()
print(json.dumps({"import_and_load_s": loaded - started, "judge_s": done - loaded,
                  "scores": result.scores, "dtype": str(model.model.dtype)}))
"""


def build_qwen_shaped(directory: Path) -> tuple[Path, Path]:
    """A random HF checkpoint with Qwen3-0.6B's shapes and its GGUF, quantized to Q4_K_M."""
    from ra_lite.convert.hf_to_gguf import convert
    from ra_lite.convert.quantize import quantize
    from tests.convert_support.checkpoint import TinySpec, build_checkpoint

    hf = directory / "qwen3-0.6b-shaped"
    spec = TinySpec(arch="qwen3", vocab_size=151936, hidden=1024, intermediate=3072, n_layers=28,
                    n_heads=16, n_kv_heads=8, head_dim=128, max_position_embeddings=8192)
    build_checkpoint(hf, spec, n_shards=2, seed=0)
    f16 = directory / "qwen3-0.6b-shaped.f16.gguf"
    convert(hf, f16, "f16", manifest=False, progress=False)
    # The project's own quantizer (what `ra-lite quantize` runs); no manifest beside it.
    q4 = quantize(f16, "Q4_K_M", manifest=False, progress=False)[0].output
    f16.unlink()
    return hf, q4


class ProcessFailed(Exception):
    pass


def timed_process(args: list[str], env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise ProcessFailed(f"{' '.join(args[:4])}… failed:\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def load_times(path: Path, repeats: int) -> dict:
    """Fresh processes in ABBA order; the time of the load call itself (imports included).

    ABBA because on this machine every other process start is ~1 s slower whatever it runs
    (seen here: bare, ra-lite, bare, ra-lite gave 2.0/0.8/2.0/0.8 s, reversed order too).
    """
    runs = {"bare": [], "ra_lite": []}
    for i in range(repeats):
        for kind in (("bare", "ra_lite") if i % 2 == 0 else ("ra_lite", "bare")):
            _, out = timed_process([sys.executable, "-c", LOAD_SNIPPET, kind, str(path), "8192"])
            runs[kind].append(float(out.strip().splitlines()[-1]))
    bare, ours = statistics.median(runs["bare"]), statistics.median(runs["ra_lite"])
    return {"model": path.name, "bare_llama_s": runs["bare"], "ra_lite_load_s": runs["ra_lite"],
            "median_bare_s": bare, "median_ra_lite_s": ours, "overhead_s": ours - bare,
            "min_bare_s": min(runs["bare"]), "min_ra_lite_s": min(runs["ra_lite"])}


def judge_process(model: Path, env: dict, threads: int, think_budget: int, *extra) -> dict:
    args = [sys.executable, "-m", "ra_lite", "judge", "--model", str(model), "--threads",
            str(threads), "--think-budget", str(think_budget), "--temperature", "0", "--json",
            "--no-stream", "--principle", PRINCIPLE, "--prompt", PROMPT, *extra]
    for name, text in RESPONSES.items():
        args += ["--response", f"{name}={text}"]
    wall, out = timed_process(args, env)
    result = json.loads(out)          # the official response shape, ra-lite's details beside
    detail = result["ra_lite"]
    tokens = detail["tokens"]
    return {"wall_s": wall, "prompt_tokens": tokens["prompt"],
            "prompt_reused": tokens["prompt_reused"],
            "generated_tokens": tokens["think"] + tokens["answer"],
            "prefill_s": detail["timings"]["prefill_s"], "scores": result["results"]["scores"]}


def official(python: str, checkpoint: Path, threads: int, n_tokens: int) -> dict:
    probe = subprocess.run([python, "-c", "import torch, rewardanything"], capture_output=True)
    if probe.returncode != 0:
        return {"skipped": f"torch or rewardanything is not importable by {python}"}
    request = json.dumps({"principle": PRINCIPLE, "prompt": PROMPT, "responses": RESPONSES})
    try:
        wall, out = timed_process([python, "-c", OFFICIAL_SNIPPET, str(checkpoint), str(threads),
                                   str(n_tokens), request])
    except ProcessFailed as e:
        return {"failed": str(e)[-600:]}
    return {"wall_s": wall, "generated_tokens": n_tokens, **json.loads(out.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--think-budget", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=4, help="fresh processes per load timing")
    parser.add_argument("--official-python", default=sys.executable,
                        help="a Python with torch and rewardanything (default: this one)")
    parser.add_argument("--workdir", type=Path, help="keep/reuse the built models here")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    from ra_lite.embedded import embedded_model_path

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        hf, q4 = work / "qwen3-0.6b-shaped", work / "qwen3-0.6b-shaped-Q4_K_M.gguf"
        if not q4.exists():
            print("building the random Qwen3-0.6B-shaped checkpoint…", file=sys.stderr)
            hf, q4 = build_qwen_shaped(work)
        results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                     "load_average_at_start": os.getloadavg()},
                         "threads": args.threads, "think_budget": args.think_budget}

        print("load times…", file=sys.stderr)
        results["load"] = [load_times(embedded_model_path(), args.repeats),
                           load_times(q4, args.repeats)]
        info = [timed_process([sys.executable, "-m", "ra_lite", "info", str(q4)])[0]
                for _ in range(args.repeats)]
        results["ra_lite_info_152k_s"] = {"runs": info, "median": statistics.median(info)}

        print("fresh ra-lite judge processes…", file=sys.stderr)
        cache_home = work / "xdg-cache"
        shutil.rmtree(cache_home, ignore_errors=True)       # the first judgment ever
        env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
        env.pop("RA_LITE_HOME", None)
        judge = {"first_ever": judge_process(q4, env, args.threads, args.think_budget),
                 "persisted_state": [judge_process(q4, env, args.threads, args.think_budget)
                                     for _ in range(2)],
                 "no_prompt_cache": judge_process(q4, env, args.threads, args.think_budget,
                                                  "--no-prompt-cache")}
        results["ra_lite_judge_process"] = judge
        persisted = statistics.median(r["wall_s"] for r in judge["persisted_state"])
        n_generated = judge["first_ever"]["generated_tokens"]

        print("official rewardanything local path…", file=sys.stderr)
        results["official_local"] = official(args.official_python, hf, args.threads, n_generated)
        if "wall_s" in results["official_local"]:
            results["speedup_persisted_vs_official"] = results["official_local"]["wall_s"] / persisted
        results["speedup_persisted_vs_first_ever"] = judge["first_ever"]["wall_s"] / persisted
        results["load_average_at_end"] = os.getloadavg()

    text = json.dumps(results, indent=2)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
