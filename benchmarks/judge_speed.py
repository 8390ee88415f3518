"""Judge speed, side by side on one model and one prompt.

    python benchmarks/judge_speed.py                       # embedded SmolLM2 (49k vocab)
    python benchmarks/judge_speed.py --qwen-shaped         # random Qwen3-0.6B-shaped, 152k vocab
    python benchmarks/judge_speed.py --model M.gguf -o out.json

Measures, in one process on one loaded model:
  1. decode speed with no constraint (llama.cpp's native sampler, one token at a time);
  2. ra-lite's constrained decoder: a whole judgment (reasoning + answer), and the answer alone
     (thinking off), as output tokens per second;
  3. llama-cpp-python's stock grammar path (create_completion with the request's GBNF), with and
     without the think block, as output tokens per second, and whether its output was valid;
  4. latency of a first judgment, then of further ones with the same principle (KV prefix reuse).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from results_file import save_result

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PRINCIPLE = ("Prefer the response that answers correctly with the fewest words; "
             "penalize any factual error heavily.")
PROMPT = "What is the boiling point of water at sea level, in degrees Celsius?"
RESPONSES = {
    "terse": "100 °C.",
    "wrong": "It boils at 90 °C at sea level.",
    "verbose": "At standard atmospheric pressure (sea level), pure water boils at 100 degrees "
               "Celsius, which is 212 degrees Fahrenheit.",
    "hedged": "Probably around 100 °C, but it depends on many things.",
}
OTHER_RESPONSES = {"a": "100 degrees.", "b": "Ninety.", "c": "It is 100 °C (212 °F)."}


def build_qwen_shaped(directory: Path) -> Path:
    """Random weights with Qwen3-0.6B's shapes and a 151,936-token vocabulary, as Q4_K_M."""
    import numpy as np

    from ra_lite.convert.quantize import quantize
    from ra_lite.embedded import embedded_model_path
    from tests.support.random_gguf import write_random_gguf

    f16 = directory / "qwen3-0.6b-shaped.f16.gguf"
    write_random_gguf(f16, embedded_model_path(), seed=0, n_embd=1024, n_layers=28, n_head=16,
                      n_head_kv=8, head_dim=128, n_ff=3072, pad_vocab_to=151936,
                      context_length=8192, dtype=np.float16)
    # The project's own quantizer (what `ra-lite quantize` runs); no manifest beside it.
    q4 = quantize(f16, "Q4_K_M", manifest=False, progress=False)[0].output
    f16.unlink()
    return q4


def free_decode(judge, prompt_tokens: list[int], n: int) -> dict:
    """Bare sampling on the engine's own context: the prompt, then n sampled tokens one decode
    each (no decoder, no scheduler: the floor a judgment's reasoning runs at)."""
    from ra_lite.runtime.decode import SamplingSettings
    from ra_lite.runtime.scheduler import BatchEntry

    engine = judge.backend.engine
    engine.scheduler(1).drop_retained()
    context = engine.sequences
    context.set_sampling(0, SamplingSettings(temperature=0.1, top_p=0.9, seed=0))
    context.release(0, 0)
    row = context.prefill(0, prompt_tokens, logits=True)
    started = time.perf_counter()
    position = len(prompt_tokens)
    for _ in range(n):
        token = context.sample(0, row)
        context.decode([BatchEntry(0, [token], position, 1)])
        position, row = position + 1, 0
    elapsed = time.perf_counter() - started
    context.release(0, 0)
    return {"tokens": n, "seconds": elapsed, "tokens_per_s": n / elapsed}


def ra_lite_judgment(judge, think_budget: int) -> dict:
    result = judge.judge(PRINCIPLE, PROMPT, RESPONSES, think_budget=think_budget)
    t = result.timings
    generated = result.tokens.think + result.tokens.answer
    seconds = t.think_s + t.answer_s
    return {"think_tokens": result.tokens.think, "answer_tokens": result.tokens.answer,
            "answer_tokens_evaluated": result.tokens.answer_evaluated, "seconds": seconds,
            "answer_seconds": t.answer_s, "tokens_per_s": generated / seconds,
            "answer_tokens_per_s": result.tokens.answer / t.answer_s, "valid": True}


def stock_grammar(judge, prompt_tokens: list[int], masked_names: list[str], thinking: bool,
                  max_tokens: int) -> dict:
    from llama_cpp import Llama, LlamaGrammar

    from ra_lite.grammar import AnswerError, parse_answer, to_gbnf

    # Stock llama-cpp-python: its own Llama with a full context (ra-lite's engine keeps the
    # loader's context minimal), the prompt evaluated before the clock starts.
    engine = judge.backend.engine
    llm = Llama(str(engine.info.path), n_ctx=engine.n_ctx, n_threads=engine.n_threads,
                n_threads_batch=engine.n_threads, flash_attn=True, verbose=False)
    grammar = LlamaGrammar.from_string(to_gbnf(masked_names, thinking), verbose=False)
    llm.eval(prompt_tokens)
    started = time.perf_counter()
    out = llm.create_completion(prompt=prompt_tokens, grammar=grammar, max_tokens=max_tokens,
                                temperature=0.1, top_p=0.9, top_k=50, seed=0)
    elapsed = time.perf_counter() - started
    llm.close()
    n = out["usage"]["completion_tokens"]
    text = out["choices"][0]["text"]
    try:
        parse_answer(text, masked_names)
        problem = None
    except AnswerError as e:
        problem = str(e)
    return {"tokens": n, "seconds": elapsed, "tokens_per_s": n / elapsed, "valid": problem is None,
            "problem": problem, "finish_reason": out["choices"][0]["finish_reason"],
            "text_tail": text[-160:]}


def latency(judge, think_budget: int) -> dict:
    """First judgment on a fresh context, then the same principle with other responses, then
    the identical request again."""
    judge.backend.engine.scheduler(1).drop_retained()   # a cold first judgment
    runs = {}
    for label, responses in (("first", RESPONSES), ("same_principle_new_responses", OTHER_RESPONSES),
                             ("identical_request", OTHER_RESPONSES)):
        started = time.perf_counter()
        result = judge.judge(PRINCIPLE, PROMPT, responses, think_budget=think_budget)
        runs[label] = {"seconds": time.perf_counter() - started,
                       "prefill_seconds": result.timings.prefill_s,
                       "prompt_tokens": result.tokens.prompt,
                       "prompt_tokens_reused": result.tokens.prompt_reused}
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--qwen-shaped", action="store_true",
                        help="build and use a random Qwen3-0.6B-shaped Q4_K_M with a 152k vocab")
    parser.add_argument("--tokens", type=int, default=96, help="free tokens / think budget")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--output", type=Path, help="write the results as JSON")
    args = parser.parse_args()

    import llama_cpp

    import ra_lite
    from ra_lite.prompt import build_chat_prompt

    with tempfile.TemporaryDirectory() as tmp:
        model = build_qwen_shaped(Path(tmp)) if args.qwen_shaped else args.model
        judge = ra_lite.load(model, n_threads=args.threads, notify=lambda m: print(m, file=sys.stderr))
        engine = judge.backend.engine
        chat = build_chat_prompt(PRINCIPLE, PROMPT, RESPONSES)
        contents = [m["content"] for m in chat.messages]
        thinking_prompt = engine.prompt_tokens(judge.backend.render(chat, True), contents)
        answer_len = judge.judge(PRINCIPLE, PROMPT, RESPONSES, think_budget=0).tokens.answer
        n = args.tokens
        results = {
            "model": engine.info.path.name if model else "embedded SmolLM2-135M-Instruct Q4_1",
            "quant": engine.info.quant, "vocab_size": engine.info.vocab_size,
            "threads": engine.n_threads, "llama_cpp_python": llama_cpp.__version__,
            "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
            "free_decode": free_decode(judge, thinking_prompt, n),
            "ra_lite_with_thinking": ra_lite_judgment(judge, think_budget=n),
            "ra_lite_answer_only": ra_lite_judgment(judge, think_budget=0),
            "stock_grammar_with_thinking": stock_grammar(judge, thinking_prompt, chat.masked_names,
                                                         True, n + answer_len),
            "stock_grammar_answer_only": stock_grammar(
                judge, engine.prompt_tokens(judge.backend.render(chat, False), contents), chat.masked_names,
                False, answer_len + 8),
            "latency": latency(judge, think_budget=0),
        }
        judge.close()
    free = results["free_decode"]["tokens_per_s"]
    for key in ("ra_lite_with_thinking", "ra_lite_answer_only", "stock_grammar_with_thinking",
                "stock_grammar_answer_only"):
        results[key]["vs_free_decode"] = results[key]["tokens_per_s"] / free
    print_table(results)
    save_result(args.output, results)


def print_table(r: dict) -> None:
    print(f"\nmodel: {r['model']} ({r['quant']}, vocab {r['vocab_size']}), {r['threads']} threads")
    print("| path | output tokens | tokens/s | × free decode | valid |")
    print("|---|---|---|---|---|")
    print(f"| free decode (no constraint) | {r['free_decode']['tokens']} | "
          f"{r['free_decode']['tokens_per_s']:.1f} | 1.00 | – |")
    for key, label in (("ra_lite_with_thinking", "ra-lite, reasoning + answer"),
                       ("ra_lite_answer_only", "ra-lite, answer only"),
                       ("stock_grammar_with_thinking", "stock grammar, reasoning + answer"),
                       ("stock_grammar_answer_only", "stock grammar, answer only")):
        row = r[key]
        tokens = row.get("tokens", row.get("think_tokens", 0) + row.get("answer_tokens", 0))
        print(f"| {label} | {tokens} | {row['tokens_per_s']:.1f} | {row['vs_free_decode']:.2f} | "
              f"{'yes' if row['valid'] else 'no: ' + row['problem']} |")
    print("\n| judgment (thinking off) | seconds | prefill s | prompt tokens | reused from cache |")
    print("|---|---|---|---|---|")
    for label, run in r["latency"].items():
        print(f"| {label.replace('_', ' ')} | {run['seconds']:.3f} | {run['prefill_seconds']:.3f} | "
              f"{run['prompt_tokens']} | {run['prompt_tokens_reused']} |")


if __name__ == "__main__":
    main()
