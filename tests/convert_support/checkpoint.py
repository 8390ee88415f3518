"""Build tiny random HF checkpoints on disk: config.json, bf16 safetensors shards + index, tokenizer, template.

The safetensors writer here is deliberately separate from the converter's reader (and is checked
against the `safetensors` package in the reader tests), so a shared misunderstanding of the format
cannot hide.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .tokenizer_fixture import save_tokenizer, tokenizer_config, train_tokenizer

ARCH_CLASS = {"qwen3": "Qwen3ForCausalLM", "qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}
ARCH_MODEL_TYPE = {"qwen3": "qwen3", "qwen2": "qwen2", "llama": "llama"}

# A Qwen3-style ChatML template, with the enable_thinking switch Qwen3 has.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


@dataclass
class TinySpec:
    arch: str = "qwen3"
    vocab_size: int = 768  # > tokenizer size, so padding rows are exercised
    hidden: int = 256  # a multiple of 256, so llama.cpp's K-quants apply instead of falling back
    intermediate: int = 512
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 64
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 512
    tokenizer_style: str = "qwen2"
    template_in: str = "jinja"  # "jinja" (chat_template.jinja) or "config" (tokenizer_config.json)


@dataclass
class TinyCheckpoint:
    directory: Path
    spec: TinySpec
    config: dict
    weights: dict[str, np.ndarray]  # float32, exactly the values stored as bf16
    tokenizer: object
    files: list[str] = field(default_factory=list)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bf16 bits, round-to-nearest-even (what torch does)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]], metadata: dict | None = None) -> None:
    """tensors: name -> (safetensors dtype, array whose raw bytes are the little-endian data)."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, arr) in tensors.items():
        blob = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


def make_config(spec: TinySpec, tokenizer) -> dict:
    config = {
        "architectures": [ARCH_CLASS[spec.arch]], "model_type": ARCH_MODEL_TYPE[spec.arch],
        "vocab_size": spec.vocab_size, "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.n_layers, "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads, "max_position_embeddings": spec.max_position_embeddings,
        "rope_theta": spec.rope_theta, "rms_norm_eps": spec.rms_norm_eps, "hidden_act": "silu",
        "tie_word_embeddings": spec.tie_word_embeddings, "torch_dtype": "bfloat16", "rope_scaling": None,
        "bos_token_id": tokenizer.token_to_id("<|endoftext|>"), "eos_token_id": tokenizer.token_to_id("<|im_end|>"),
        "attention_bias": spec.arch == "qwen2", "use_sliding_window": False,
    }
    if spec.arch == "qwen3" or spec.head_dim != spec.hidden // spec.n_heads:
        config["head_dim"] = spec.head_dim
    return config


def random_weights(spec: TinySpec, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.05):
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    q_rows, kv_rows = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
    weights = {"model.embed_tokens.weight": w(spec.vocab_size, spec.hidden, scale=0.5)}
    for i in range(spec.n_layers):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": norm(spec.hidden),
            p + "self_attn.q_proj.weight": w(q_rows, spec.hidden),
            p + "self_attn.k_proj.weight": w(kv_rows, spec.hidden),
            p + "self_attn.v_proj.weight": w(kv_rows, spec.hidden),
            p + "self_attn.o_proj.weight": w(spec.hidden, q_rows),
            p + "post_attention_layernorm.weight": norm(spec.hidden),
            p + "mlp.gate_proj.weight": w(spec.intermediate, spec.hidden),
            p + "mlp.up_proj.weight": w(spec.intermediate, spec.hidden),
            p + "mlp.down_proj.weight": w(spec.hidden, spec.intermediate),
        })
        if spec.arch == "qwen3":
            weights[p + "self_attn.q_norm.weight"] = norm(spec.head_dim)
            weights[p + "self_attn.k_norm.weight"] = norm(spec.head_dim)
        if spec.arch == "qwen2":
            weights[p + "self_attn.q_proj.bias"] = w(q_rows, scale=0.1)
            weights[p + "self_attn.k_proj.bias"] = w(kv_rows, scale=0.1)
            weights[p + "self_attn.v_proj.bias"] = w(kv_rows, scale=0.1)
    weights["model.norm.weight"] = norm(spec.hidden)
    if not spec.tie_word_embeddings:
        weights["lm_head.weight"] = w(spec.vocab_size, spec.hidden, scale=0.1)
    # Store what bf16 can hold, and hand the oracle exactly those values.
    return {k: bf16_to_f32(bf16_round(v)) for k, v in weights.items()}


def build_checkpoint(directory: Path, spec: TinySpec | None = None, n_shards: int = 2, seed: int = 0,
                     chat_template: str | None = CHAT_TEMPLATE) -> TinyCheckpoint:
    spec = spec or TinySpec()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.tokenizer_style, vocab_size=700)
    save_tokenizer(tokenizer, directory, spec.tokenizer_style)
    assert tokenizer.get_vocab_size() <= spec.vocab_size
    config = make_config(spec, tokenizer)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    in_config = chat_template if spec.template_in == "config" else None
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(spec.tokenizer_style, in_config)))
    if chat_template is not None and spec.template_in == "jinja":
        (directory / "chat_template.jinja").write_text(chat_template)

    weights = random_weights(spec, seed)
    names = list(weights)
    files = []
    if n_shards == 1:
        files.append("model.safetensors")
        write_safetensors(directory / files[0], {n: ("BF16", bf16_round(weights[n])) for n in names},
                          metadata={"format": "pt"})
    else:
        weight_map = {}
        for s, chunk in enumerate(np.array_split(np.array(names, dtype=object), n_shards)):
            fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
            files.append(fname)
            write_safetensors(directory / fname, {n: ("BF16", bf16_round(weights[n])) for n in chunk},
                              metadata={"format": "pt"})
            weight_map.update({n: fname for n in chunk})
        total = sum(v.size * 2 for v in weights.values())
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return TinyCheckpoint(directory, spec, config, weights, tokenizer, files)
