"""Conversion throughput (MB/s of source safetensors) and peak RSS, on generated checkpoints of two sizes.

    python benchmarks/convert_throughput.py                       # both sizes, f16 bf16 q8_0
    python benchmarks/convert_throughput.py --sizes small --outtypes f16 --workdir /tmp/rabench

Checkpoints use real Qwen3 tensor shapes: "small" has Qwen3-0.6B's dimensions (1.2 GB of bf16,
largest tensor 311 MB), "large" has Qwen3-8B's dimensions with 2 layers (3.4 GB, largest tensor the
1.24 GB embedding, as in RewardAnything-8B). If peak RSS followed model size or the largest tensor,
"large" would need gigabytes more; streaming keeps both near the same value.

Each conversion runs in its own child process; its peak RSS comes from os.wait4's rusage (ru_maxrss),
so the benchmark's own memory never counts. A child that only imports the converter gives the
baseline. Throughput includes the final fsync but not the manifest's sha256 pass. Source files are
freshly written, so they are read from the page cache: this measures the converter, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    # name: (hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, tied)
    "small": (1024, 3072, 28, 16, 8, 128, 151936, True),   # Qwen3-0.6B
    "large": (4096, 12288, 2, 32, 8, 128, 151936, False),  # Qwen3-8B / RewardAnything-8B, 2 of 36 layers
}


def tensor_shapes(hidden, inter, layers, heads, kv, head_dim, vocab, tied) -> dict[str, tuple[int, ...]]:
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden), p + "self_attn.k_proj.weight": (kv * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv * head_dim, hidden), p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "self_attn.q_norm.weight": (head_dim,), p + "self_attn.k_norm.weight": (head_dim,),
            p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
        })
    shapes["model.norm.weight"] = (hidden,)
    if not tied:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def write_shard(path: Path, shapes: dict[str, tuple[int, ...]], block: bytes) -> int:
    """Stream a bf16 safetensors file whose data is a repeated random block (content does not matter here)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for info in header.values():
            left = info["data_offsets"][1] - info["data_offsets"][0]
            while left:
                piece = block[: min(left, len(block))]
                f.write(piece)
                left -= len(piece)
    return offset


def build_checkpoint(directory: Path, size: str) -> int:
    sys.path.insert(0, str(REPO))
    from tests.convert_support.tokenizer_fixture import save_tokenizer, tokenizer_config, train_tokenizer

    hidden, inter, layers, heads, kv, head_dim, vocab, tied = SIZES[size]
    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer("qwen2", vocab_size=700)
    save_tokenizer(tok, directory, "qwen2")
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config("qwen2", None)))
    config = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": vocab, "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "head_dim": head_dim, "max_position_embeddings": 40960,
              "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": tied, "hidden_act": "silu",
              "bos_token_id": tok.token_to_id("<|endoftext|>"), "eos_token_id": tok.token_to_id("<|im_end|>")}
    (directory / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    # Random normal(0, 0.02) values as bf16 bits: realistic magnitudes for the f16 range check and q8_0.
    block = (rng.normal(0, 0.02, 8 << 20).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    shapes = tensor_shapes(*SIZES[size])
    names = list(shapes)
    half = len(names) // 2
    weight_map, total = {}, 0
    for i, part in enumerate((names[:half], names[half:])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        total += write_shard(directory / fname, {n: shapes[n] for n in part}, block)
        weight_map.update({n: fname for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return total


CHILD = """
import json, sys, time
from ra_lite.convert.hf_to_gguf import convert
if sys.argv[1] == 'baseline':
    import gguf, numpy, tqdm  # what a conversion imports, without converting
    print(json.dumps({}))
else:
    r = convert(sys.argv[1], sys.argv[2], sys.argv[3], progress=False, manifest=False, force=True)
    print(json.dumps({"seconds": r.seconds, "source_bytes": r.source_bytes, "output_bytes": r.output_bytes}))
"""


def run_child(*args: str) -> tuple[dict, int]:
    """Run CHILD, return (its JSON output, its peak RSS in bytes)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, cwd=REPO)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}) for {args}")
    return json.loads(out), usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--outtypes", default="f16,bf16,q8_0")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ra-lite-convert-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = parser.parse_args()

    _, baseline_rss = run_child("baseline")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(f"baseline RSS (python + numpy + gguf + converter imports): {baseline_rss / 2**20:.0f} MiB\n")
    print("| size | source GB | largest tensor MB | outtype | seconds | MB/s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for size in args.sizes.split(","):
        ckpt = args.workdir / size
        shutil.rmtree(ckpt, ignore_errors=True)
        source_bytes = build_checkpoint(ckpt, size)
        largest = max(np.prod(s) * 2 for s in tensor_shapes(*SIZES[size]).values())
        for outtype in args.outtypes.split(","):
            out = args.workdir / f"{size}-{outtype}.gguf"
            result, rss = run_child(str(ckpt), str(out), outtype)
            out.unlink()
            mb_s = result["source_bytes"] / 1e6 / result["seconds"]
            rows.append({"size": size, "source_bytes": source_bytes, "largest_tensor_bytes": int(largest),
                         "outtype": outtype, **result, "mb_per_s": mb_s, "peak_rss_bytes": rss})
            print(f"| {size} | {source_bytes / 1e9:.2f} | {largest / 1e6:.0f} | {outtype} | {result['seconds']:.1f} "
                  f"| {mb_s:.0f} | {rss / 2**20:.0f} |", flush=True)
        if not args.keep:
            shutil.rmtree(ckpt)
    (args.workdir / "results.json").write_text(json.dumps({"baseline_rss_bytes": baseline_rss, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
