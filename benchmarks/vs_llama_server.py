"""ra-lite against what a user would build by hand on llama-server, side by side in one run.

    python benchmarks/vs_llama_server.py -o benchmarks/results/vs_llama_server.json
    python benchmarks/vs_llama_server.py --model MODEL.gguf --think-budget 512 --items 12

Same model, same requests (mini-RABench's bundled quick set), same sampling settings (the
official temperature 0.1, top-p 0.9, seed 0), same think budget and the same 2 threads for every
route, one route at a time:

1. ra-lite local, --parallel 1 and --parallel 4;
2. ra-lite -> a real llama-server (scripts/build_llama_server.sh) started as the README says
   (-np 4 --no-cache-idle-slots), 4 concurrent judgments, token-id prompts: (a) the choice-point
   route (reasoning in one request, then one one-token request per score and per name inside a
   tie, probabilities read from n_probs); (b) the grammar route (the answer decoded on the
   server under ra-lite's phase grammars);
3. the hand-rolled route: the official system prompt and user message sent to llama-server's
   /v1/chat/completions by 4 concurrent clients, with a GBNF grammar a careful user would write
   from the answer's JSON schema (a <think> block, as RewardAnything always writes one, then
   exactly the request's keys, integers 1-5, a best-to-worst list of N names; a CFG can enforce
   neither "each name once" nor "the ranking follows the scores"; a grammar counts characters,
   not tokens, so the think block is bounded at CHARS_PER_TOKEN characters per budget token),
   max_tokens = that bound + room for the answer (so the answer always fits), parsed
   the way the official rewardanything package parses (strip <think>, strip code fences,
   json.loads, then a quote fix, then the outermost braces; empty results on failure);
4. the same as 3 on a llama-server with its n-gram speculation on (--spec-type ngram-mod), the
   anchor the speculative-reasoning benchmark compares with.

Reported per route: judgments/s, generated tokens/s (reasoning + answer, as the server or
ra-lite counts them), the valid-verdict rate (every response scored 1-5, a ranking that names
each exactly once) and how many rankings put a lower score before a higher one; for the server
routes also completion requests per judgment and the tokens the server ran per judgment
(sampled + prompt tokens not served from its cache), and whether expected scores came back.
Every route's verdicts are also compared with route 1's (pairwise agreement of the rankings).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SLOTS = 4


# --- the hand-rolled route --------------------------------------------------------------------
CHARS_PER_TOKEN = 4     # English text; the usual rule of thumb


def hand_grammar(names: list[str], think_chars: int) -> str:
    """The answer's JSON schema as GBNF, written as a user would (not ra-lite's grammar)."""
    quoted = [f'"\\"{n}\\""' for n in names]
    scores = ' ws "," ws '.join(f'{q} ws ":" ws digit' for q in quoted)
    ranking = ' ws "," ws '.join(["name"] * len(names))
    return "\n".join([
        'root ::= think ws answer',
        'think ::= "<think>" thought "</think>"',
        f'thought ::= ([^<] | "<" [^/]){{0,{think_chars}}}',
        'answer ::= "{" ws "\\"scores\\"" ws ":" ws "{" ws ' + scores + ' ws "}" ws "," ws '
        '"\\"best-to-worst\\"" ws ":" ws "[" ws ' + ranking + ' ws "]" ws "}"',
        'digit ::= [1-5]',
        "name ::= " + " | ".join(quoted),
        'ws ::= [ \\t\\n]{0,16}',
    ]) + "\n"


def official_parse(text: str) -> dict:
    """What rewardanything's parser makes of an output: {"scores", "best-to-worst"}, empty
    when nothing parses (its steps, in order; rewritten here, not imported)."""
    body = re.sub(r"<think>.*?</think>", "", text, flags=re.DOTALL)
    body = re.sub(r"```(?:json)?|```", "", body).strip()
    attempts = [body, body.replace("'", '"')]
    first, last = body.find("{"), body.rfind("}")
    if 0 <= first < last:
        attempts.append(body[first:last + 1])
    for attempt in attempts:
        try:
            parsed = json.loads(attempt)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return {"scores": parsed.get("scores") or {},
                    "best-to-worst": parsed.get("best-to-worst") or []}
    return {"scores": {}, "best-to-worst": []}


def post(url: str, body: dict, timeout: float = 900) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def hand_rolled(url: str, item, think_budget: int) -> dict:
    from ra_lite.prompt import build_chat_prompt

    chat = build_chat_prompt(item.principle, item.prompt, item.responses)
    names = chat.masked_names
    data = post(url + "/v1/chat/completions", {
        "messages": chat.messages, "temperature": 0.1, "top_p": 0.9, "top_k": 50, "seed": 0,
        # At worst one token per character of thought, then the answer.
        "max_tokens": CHARS_PER_TOKEN * think_budget + 24 * len(names) + 32,
        "grammar": hand_grammar(names, CHARS_PER_TOKEN * think_budget)})
    text = data["choices"][0]["message"].get("content") or ""
    reasoning = data["choices"][0]["message"].get("reasoning_content") or ""
    parsed = official_parse(text if not reasoning else f"<think>{reasoning}</think>{text}")
    real = chat.masked_to_real
    scores = {real.get(k, k): v for k, v in parsed["scores"].items()}
    ranking = [real.get(k, k) for k in parsed["best-to-worst"]]
    usage = data.get("usage") or {}
    generated = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {"scores": scores, "ranking": ranking, "tokens": generated, "requests": 1,
            "server_tokens": generated + int(usage.get("prompt_tokens") or 0) - cached,
            "expected_scores": False}


# --- routes -------------------------------------------------------------------------------------
def verdict_of(judgment) -> dict:
    verdict = {"scores": judgment.scores, "ranking": judgment.ranking,
               "tokens": judgment.tokens.think + judgment.tokens.answer,
               "expected_scores": judgment.expected_scores is not None}
    if judgment.server is not None:
        verdict.update(requests=judgment.server.requests,
                       server_tokens=judgment.server.tokens_generated
                       + judgment.server.prompt_tokens_evaluated,
                       cache_lost=judgment.server.cache_lost)
    return verdict


def run_ra_lite(judge, items, options, parallel: int) -> list[dict]:
    from ra_lite.request import JudgeRequest

    requests = [JudgeRequest.create(i.principle, i.prompt, i.responses) for i in items]
    return [verdict_of(j) for j in judge.judge_many(requests, options, parallel=parallel)]


def run_hand_rolled(url: str, items, think_budget: int) -> list[dict]:
    with ThreadPoolExecutor(SLOTS) as pool:
        return list(pool.map(lambda item: hand_rolled(url, item, think_budget), items))


def check(verdict: dict, names: list[str]) -> tuple[bool, bool]:
    """(valid, inconsistent): every name scored 1-5 and ranked once; a lower score first."""
    scores, ranking = verdict["scores"], verdict["ranking"]
    valid = (set(scores) == set(names) and sorted(map(str, ranking)) == sorted(names) and
             all(type(s) is int and 1 <= s <= 5 for s in scores.values()))
    inconsistent = valid and any(scores[a] < scores[b] for a, b in zip(ranking, ranking[1:]))
    return valid, inconsistent


def agreement(a: dict, b: dict) -> tuple[int, int]:
    """Pairs both verdicts order the same way (when both are valid)."""
    pa = {n: i for i, n in enumerate(a["ranking"])}
    pb = {n: i for i, n in enumerate(b["ranking"])}
    pairs = list(combinations(sorted(pa), 2))
    return sum((pa[x] < pa[y]) == (pb[x] < pb[y]) for x, y in pairs), len(pairs)


def summarize(name: str, verdicts: list[dict], items, seconds: float, anchor=None) -> dict:
    checks = [check(v, list(i.responses)) for v, i in zip(verdicts, items)]
    row = {"route": name, "judgments": len(verdicts), "seconds": seconds,
           "judgments_per_s": len(verdicts) / seconds,
           "generated_tokens_per_s": sum(v["tokens"] for v in verdicts) / seconds,
           "valid_rate": sum(v for v, _ in checks) / len(checks),
           "inconsistent_rankings": sum(c for _, c in checks),
           "expected_scores_rate": sum(v["expected_scores"] for v in verdicts) / len(verdicts)}
    if all("requests" in v for v in verdicts):
        row["requests_per_judgment"] = sum(v["requests"] for v in verdicts) / len(verdicts)
        row["server_tokens_per_judgment"] = sum(v["server_tokens"] for v in verdicts) / len(verdicts)
        row["cache_lost"] = sum(v.get("cache_lost", 0) for v in verdicts)
    if anchor is not None:
        same = total = 0
        for v, a, (ok, _), (ok_a, _) in zip(verdicts, anchor["verdicts"], checks,
                                            anchor["checks"]):
            if ok and ok_a:
                s, t = agreement(v, a)
                same, total = same + s, total + t
        row["pairwise_agreement_with_route_1"] = same / total if total else None
    return {**row, "verdicts": verdicts, "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="GGUF (default: the embedded SmolLM2)")
    parser.add_argument("--think-budget", type=int, default=256)
    parser.add_argument("--items", type=int, default=30, help="of the bundled quick set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--server-flags", default="--no-cache-idle-slots",
                        help="llama-server flags beside -np 4 (the README's: keep idle slots' "
                             "cache)")
    parser.add_argument("--no-local", action="store_true", help="skip the local routes")
    parser.add_argument("--ngram", action="store_true",
                        help="also the hand-rolled route with --spec-type ngram-mod")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()

    import llama_cpp

    import ra_lite
    from ra_lite.bench.dataset import load_items
    from ra_lite.judge import JudgeOptions
    from ra_lite.pull import resolve_model
    from ra_lite.remote import load_remote
    from tests.conftest import WHEEL_CACHE
    from tests.support.llama_server import LlamaServer, server_binary

    model, _ = resolve_model(args.model)
    items = load_items("quick").items[:args.items]
    options = JudgeOptions(think_budget=args.think_budget)
    binary = server_binary(WHEEL_CACHE)
    n_ctx = 4096
    load_at_start = os.getloadavg()
    rows = []

    def timed(name, run):
        started = time.perf_counter()
        verdicts = run()
        rows.append(summarize(name, verdicts, items, time.perf_counter() - started,
                              rows[0] if rows else None))
        print(f"{name}: {rows[-1]['judgments_per_s']:.3f} judgments/s", file=sys.stderr)

    if not args.no_local:
        judge = ra_lite.load(model, n_ctx=n_ctx * SLOTS, n_threads=args.threads,
                             notify=lambda m: None)
        for parallel in (1, SLOTS):
            timed(f"ra-lite local, --parallel {parallel}",
                  lambda: run_ra_lite(judge, items, options, parallel))
        judge.close()

    # Every server route gets a fresh server: llama-server keeps prompts in host RAM across
    # requests, so a route run after another would find the same requests' prompts cached.
    flags = tuple(args.server_flags.split())
    server_routes = [("choices", flags), ("grammar", flags), ("hand-rolled", flags)]
    if args.ngram:
        server_routes.append(("hand-rolled", flags + ("--spec-type", "ngram-mod")))
    for route, extra in server_routes:
        with LlamaServer(binary, model, slots=SLOTS, n_ctx=n_ctx, threads=args.threads,
                         extra=extra) as server:
            if route == "hand-rolled":
                timed("hand-rolled: llama-server chat + JSON-schema GBNF" +
                      (", --spec-type ngram-mod" if "ngram-mod" in extra else ""),
                      lambda: run_hand_rolled(server.url, items, args.think_budget))
                continue
            remote = load_remote(server.url, template=str(model), options=options, route=route,
                                 notify=lambda m: print(m, file=sys.stderr))
            timed(f"ra-lite -> llama-server ({SLOTS} slots), {route} route",
                  lambda: run_ra_lite(remote, items, options, SLOTS))

    result = {"model": model.name, "items": len(items), "think_budget": args.think_budget,
              "threads": args.threads, "slots": SLOTS, "server_flags": args.server_flags,
              "llama_cpp_python": llama_cpp.__version__,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
              "rows": [{k: v for k, v in r.items() if k not in ("verdicts", "checks")}
                       for r in rows],
              "verdicts": {r["route"]: r["verdicts"] for r in rows}}
    print("| route | judgments/s | generated tok/s | requests / judgment | server tokens / "
          "judgment | expected scores % | valid % | rankings inconsistent with scores | "
          "pairwise agreement with route 1 % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        agree = r.get("pairwise_agreement_with_route_1")
        requests = r.get("requests_per_judgment")
        tokens = r.get("server_tokens_per_judgment")
        print(f"| {r['route']} | {r['judgments_per_s']:.3f} | {r['generated_tokens_per_s']:.1f} | "
              f"{'–' if requests is None else f'{requests:.1f}'} | "
              f"{'–' if tokens is None else f'{tokens:.0f}'} | "
              f"{100 * r['expected_scores_rate']:.0f} | "
              f"{100 * r['valid_rate']:.0f} | {r['inconsistent_rankings']} | "
              f"{'–' if agree is None else f'{100 * agree:.0f}'} |")
    save_result(args.output, result)


if __name__ == "__main__":
    main()
