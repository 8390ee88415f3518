"""Does ra-lite's importance matrix make quants closer to full precision? Side by side, one run.

    python benchmarks/imatrix_quality.py [--eval-chunks 24] [--data quick] [-o benchmarks/results]

1. Reference: SmolLM2-135M-Instruct's shipped Q4_1 weights (the embedded model) dequantized
   exactly to F32. A real trained model; every quant below is made from it and measured against
   the model it defines.
2. An importance matrix collected on that F32 model with ra-lite's shipped calibration set.
3. Q2_K, Q3_K_M, Q4_K_M without and with the imatrix, plus IQ4_XS (i-quants only with one).
4. For each quant: mean KL divergence of next-token distributions from the reference, and how
   often both pick the same top token, on held-apart text: the mini-RABench items rendered as
   judge prompts (system prompt + JSON request), which a test keeps disjoint from the calibration
   set. Chunks of 512 tokens; the second half of each chunk is scored (llama-perplexity's KLD
   convention, so every scored token has at least 256 tokens of context).
5. mini-RABench (`--data quick`, greedy, think budget 0) for the same files against the reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PLAIN = ["Q4_K_M", "Q3_K_M", "Q2_K"]
IMATRIX_ONLY = ["IQ4_XS"]
CHUNK = 512


def dequantize_to_f32(src: Path, dst: Path) -> Path:
    """Every tensor of `src` decoded exactly to F32; metadata copied, file type ALL_F32."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(src)
    arch = reader.get_field("general.architecture").contents()
    writer = gguf.GGUFWriter(str(dst), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for t in reader.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(n) for n in t.shape[::-1]])
        writer.add_tensor(t.name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def held_apart_texts(model_text) -> list[str]:
    """mini-RABench items rendered as the judge sees them (no answers: the model's own job)."""
    from ra_lite.bench.dataset import load_items
    from ra_lite.chat_template import CHATML_FALLBACK, render_chat
    from ra_lite.prompt import build_chat_prompt

    items = load_items("full").items
    texts = []
    for item in items:
        chat = build_chat_prompt(item.principle, item.prompt, item.responses)
        texts.append(render_chat(model_text.chat_template or CHATML_FALLBACK, chat.messages, enable_thinking=False))
    return texts


class Evaluator:
    """One low-level context that returns the log-probabilities of every position of a chunk."""

    def __init__(self, path: Path, threads: int):
        import llama_cpp

        from ra_lite.convert.imatrix_collect import _load_model

        self.model = _load_model(path, 0)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = CHUNK
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.batch = llama_cpp.llama_batch_init(CHUNK, 0, 1)

    def logprobs(self, tokens: list[int], first: int) -> np.ndarray:
        import llama_cpp

        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self.batch.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            self.batch.token[i], self.batch.pos[i], self.batch.n_seq_id[i] = tok, i, 1
            self.batch.seq_id[i][0] = 0
            self.batch.logits[i] = i >= first
        assert llama_cpp.llama_decode(self.ctx, self.batch) == 0
        rows = [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,))
                for i in range(first, len(tokens))]
        logits = np.stack(rows).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def close(self):
        import llama_cpp

        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)


def kld_table(reference: Path, quants: dict[str, Path], n_chunks: int, threads: int) -> dict:
    import logging

    import llama_cpp
    from llama_cpp._logger import logger

    from ra_lite.convert.imatrix_collect import model_text, tokenize

    logger.setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    ref = Evaluator(reference, threads)
    stream = []
    for text in held_apart_texts(model_text(ref.model)):
        stream += tokenize(ref.model, text)
    chunks = [stream[i:i + CHUNK] for i in range(0, len(stream) - CHUNK + 1, CHUNK)][:n_chunks]
    evaluators = {name: Evaluator(path, threads) for name, path in quants.items()}
    sums = {name: {"kld": 0.0, "same_top": 0, "n": 0, "kld_values": []} for name in quants}
    for number, chunk in enumerate(chunks, 1):
        p_log = ref.logprobs(chunk, CHUNK // 2)
        p = np.exp(p_log)
        top = p_log.argmax(axis=1)
        for name, ev in evaluators.items():
            q_log = ev.logprobs(chunk, CHUNK // 2)
            kld = (p * (p_log - q_log)).sum(axis=1)
            s = sums[name]
            s["kld"] += kld.sum()
            s["same_top"] += int((q_log.argmax(axis=1) == top).sum())
            s["n"] += len(kld)
            s["kld_values"].append(kld)
        print(f"  KLD chunk {number}/{len(chunks)}", file=sys.stderr, flush=True)
    for ev in [ref, *evaluators.values()]:
        ev.close()
    out = {}
    for name, s in sums.items():
        values = np.concatenate(s["kld_values"])
        # 95 % interval of the mean over positions (positions are correlated: indicative only)
        out[name] = {"mean_kld": s["kld"] / s["n"], "kld_se": float(values.std(ddof=1) / np.sqrt(len(values))),
                     "same_top_pct": 100.0 * s["same_top"] / s["n"], "positions": s["n"]}
    return {"chunks": len(chunks), "stream_tokens": len(stream), "models": out}


def tensor_mix(path: Path) -> str:
    import collections

    import gguf

    counts = collections.Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors if len(t.shape) > 1)
    return ", ".join(f"{k} {v}" for k, v in counts.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-chunks", type=int, default=24)
    parser.add_argument("--data", default="quick")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    from ra_lite.convert.calibration import load_calibration
    from ra_lite.convert.imatrix import write_imatrix
    from ra_lite.convert.imatrix_collect import collect_imatrix
    from ra_lite.convert.quantize import quantize
    from ra_lite.embedded import embedded_model_path

    started = time.perf_counter()
    report: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = dequantize_to_f32(embedded_model_path(), tmp / "SmolLM2-135M-F32.gguf")
        calibration = load_calibration()
        t0 = time.perf_counter()
        collected = collect_imatrix(reference, calibration.texts, chunk_size=CHUNK, datasets=[calibration.name],
                                    n_threads=args.threads)
        imatrix = write_imatrix(collected.imatrix, tmp / "SmolLM2-135M.imatrix.gguf")
        report["imatrix"] = {"chunks": collected.n_chunks, "tokens": collected.n_tokens,
                             "entries": len(collected.imatrix.entries), "seconds": round(time.perf_counter() - t0, 1)}
        print(f"imatrix: {report['imatrix']}", file=sys.stderr)
        files = {}
        for sub, kwargs in (("plain", {}), ("imatrix", {"imatrix": imatrix})):
            (tmp / sub).mkdir()
            types = PLAIN + (IMATRIX_ONLY if kwargs else [])
            for r in quantize(reference, types, out_dir=tmp / sub, manifest=False, progress=False, **kwargs):
                path = r.output
                if kwargs:   # distinct file names, so the bench report's labels tell them apart
                    path = path.rename(path.with_name(f"{path.stem}-imatrix.gguf"))
                files[f"{r.quant_type}{' +imatrix' if kwargs else ''}"] = path
        report["files"] = {name: {"size_mib": round(p.stat().st_size / 2**20, 1), "tensor_types": tensor_mix(p)}
                           for name, p in files.items()}
        t0 = time.perf_counter()
        report["kld"] = kld_table(reference, files, args.eval_chunks, args.threads)
        report["kld"]["seconds"] = round(time.perf_counter() - t0, 1)
        if not args.skip_bench:
            from ra_lite.bench.cli import run_bench

            t0 = time.perf_counter()
            bench = run_bench([str(p) for p in files.values()], reference=str(reference), data=args.data,
                              output_dir=args.output_dir / "imatrix-bench", think_budget=0,
                              cache_dir=tmp / "cache", progress=False)
            by_path = {str(Path(m["path"])): m for m in bench["models"]}
            report["bench"] = {}
            for name, path in files.items():
                m = by_path[str(path)]
                a = m["agreement_with_reference"]
                report["bench"][name] = {"pairwise_agreement": a["pairwise_agreement"],
                                         "exact_match_rate": a["exact_match_rate"], "score_mae": a["score_mae"],
                                         "score_kld": a["mean_kld"],
                                         "pairwise_accuracy": m["aggregates"]["pairwise_accuracy"]}
            report["bench_seconds"] = round(time.perf_counter() - t0, 1)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "imatrix-quality.json").write_text(json.dumps(report, indent=2) + "\n")

    print("\n| quant | MiB | mean KLD | same top token % | mini-RABench agreement % | same scores+ranking % "
          "| score KLD |\n|---|---|---|---|---|---|---|")
    for name in report["files"]:
        k = report["kld"]["models"][name]
        b = report.get("bench", {}).get(name)
        bench_cols = (f"{100 * b['pairwise_agreement']:.1f} | {100 * b['exact_match_rate']:.1f} | "
                      f"{b['score_kld']:.4f}") if b else "– | – | –"
        print(f"| {name} | {report['files'][name]['size_mib']} | {k['mean_kld']:.4f} ± {k['kld_se']:.4f} | "
              f"{k['same_top_pct']:.1f} | {bench_cols} |")
    for q in PLAIN:
        a, b = report["kld"]["models"][q]["mean_kld"], report["kld"]["models"][f"{q} +imatrix"]["mean_kld"]
        print(f"{q}: KLD {a:.4f} -> {b:.4f} with imatrix ({100 * (b - a) / a:+.1f} %)")


if __name__ == "__main__":
    main()
