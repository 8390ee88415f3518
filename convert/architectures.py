"""What a supported HF architecture looks like: hyperparameters from config.json and the exact tensor list.

Three decoder-only families share one layout (embeddings, N x [RMSNorm, attention, RMSNorm, SwiGLU MLP],
final RMSNorm, LM head), so one table serves them. Differences that matter to llama.cpp:
  - Qwen3: per-head RMSNorm on q and k (`self_attn.q_norm` / `k_norm`); head_dim is its own field.
  - Qwen2: biases on q, k and v; no q/k norms.
  - Llama: no biases; llama.cpp's `llama` graph applies RoPE to adjacent pairs (GPT-J style) while HF
    rotates the two halves of each head (NeoX style), so q and k rows are permuted per head at
    conversion, exactly as upstream's convert_hf_to_gguf.py does. Qwen graphs use NeoX RoPE: no permute.
Anything outside this (MoE, sliding window, unusual rope scaling, biases where none are expected) is
refused with a clear error: a GGUF that loads but computes something else is worse than no GGUF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gguf
import numpy as np

from ra_lite.errors import RaLiteError


@dataclass(frozen=True)
class ArchSupport:
    gguf_arch: gguf.MODEL_ARCH
    qk_norm: bool          # Qwen3's per-head q/k RMSNorm
    qkv_bias: bool         # Qwen2's q/k/v biases
    permute_qk: bool       # Llama's RoPE layout difference
    head_dim_required: bool  # Qwen3Config's own default (128) is not hidden/heads, so insist on it


SUPPORTED = {
    "Qwen3ForCausalLM": ArchSupport(gguf.MODEL_ARCH.QWEN3, qk_norm=True, qkv_bias=False, permute_qk=False,
                                    head_dim_required=True),
    "Qwen2ForCausalLM": ArchSupport(gguf.MODEL_ARCH.QWEN2, qk_norm=False, qkv_bias=True, permute_qk=False,
                                    head_dim_required=False),
    "LlamaForCausalLM": ArchSupport(gguf.MODEL_ARCH.LLAMA, qk_norm=False, qkv_bias=False, permute_qk=True,
                                    head_dim_required=False),
}

# Buffers some checkpoints carry that hold nothing llama.cpp needs (RoPE inverse frequencies are
# recomputed from rope_theta). Skipping them by exact suffix is not a guess.
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


@dataclass(frozen=True)
class HParams:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context_length: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    rope_scaling: dict | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TensorPlan:
    """One tensor: where it comes from, what it is called in GGUF, and the shape both must have."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]  # numpy (row-major) shape, identical in HF and in our writer call
    row_permutation: np.ndarray | None = field(default=None, compare=False)  # within each block of rows

    @property
    def row_block(self) -> int:
        return 1 if self.row_permutation is None else len(self.row_permutation)


def _require(config: dict, key: str, kind: type):
    if key not in config or config[key] is None:
        raise RaLiteError(f"config.json is missing {key!r}", "use the config.json that ships with the checkpoint")
    value = config[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise RaLiteError(f"config.json field {key!r} should be {kind.__name__}, got {value!r}",
                          "use the config.json that ships with the checkpoint")
    return value


def architecture_of(config: dict) -> tuple[str, ArchSupport]:
    archs = config.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1:
        raise RaLiteError(f"config.json 'architectures' should name one class, got {archs!r}",
                          "use the config.json that ships with the checkpoint")
    name = archs[0]
    if name not in SUPPORTED:
        raise RaLiteError(f"unsupported architecture {name!r}",
                          f"ra-lite converts {', '.join(sorted(SUPPORTED))}; use upstream llama.cpp's "
                          "convert_hf_to_gguf.py for others")
    return name, SUPPORTED[name]


def read_hparams(config: dict) -> HParams:
    name, support = architecture_of(config)
    hidden = _require(config, "hidden_size", int)
    n_heads = _require(config, "num_attention_heads", int)
    # HF's documented default when a config omits it: no grouped-query attention.
    n_kv = config.get("num_key_value_heads") or n_heads
    if support.head_dim_required:
        head_dim = _require(config, "head_dim", int)
    else:
        head_dim = config.get("head_dim") or hidden // n_heads
    # transformers >= 5 moved rope_theta under rope_parameters; accept both spellings.
    rope_params = config.get("rope_parameters") or {}
    rope_theta = config.get("rope_theta", rope_params.get("rope_theta"))
    if rope_theta is None:
        raise RaLiteError("config.json is missing 'rope_theta'", "use the config.json that ships with the checkpoint")
    if config.get("hidden_act", "silu") != "silu":
        raise RaLiteError(f"hidden_act {config['hidden_act']!r} is not supported (only silu)", "use a supported model")
    if config.get("use_sliding_window"):
        raise RaLiteError("sliding-window attention is not supported by this converter",
                          "set use_sliding_window=false only if the model was trained without it")
    if config.get("attention_bias") and not support.qkv_bias:
        raise RaLiteError(f"{name} with attention_bias=true is not supported", "use a model without attention biases")
    if config.get("mlp_bias"):
        raise RaLiteError("mlp_bias=true is not supported", "use a model without MLP biases")
    rope_scaling = config.get("rope_scaling") or None
    if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) not in ("linear", "yarn"):
        raise RaLiteError(f"rope_scaling {rope_scaling!r} is not supported (only linear and yarn)",
                          "remove rope_scaling from config.json if the model does not need it")
    if n_heads % n_kv != 0:
        raise RaLiteError(f"num_attention_heads={n_heads} is not a multiple of num_key_value_heads={n_kv}",
                          "check config.json")
    return HParams(
        architecture=name,
        vocab_size=_require(config, "vocab_size", int),
        hidden_size=hidden,
        intermediate_size=_require(config, "intermediate_size", int),
        n_layers=_require(config, "num_hidden_layers", int),
        n_heads=n_heads,
        n_kv_heads=int(n_kv),
        head_dim=int(head_dim),
        context_length=_require(config, "max_position_embeddings", int),
        rope_theta=float(rope_theta),
        rms_norm_eps=_require(config, "rms_norm_eps", float),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_scaling=rope_scaling,
    )


def neox_to_gptj_row_permutation(head_dim: int) -> np.ndarray:
    """Row order within one head that turns HF's rotate-half layout into adjacent pairs.

    Same as upstream's `permute`: w.reshape(n_head, 2, head_dim // 2, ...).swapaxes(1, 2): output row
    2i comes from row i (first half), output row 2i+1 from row head_dim/2 + i (second half).
    """
    half = head_dim // 2
    return np.stack([np.arange(half), np.arange(half) + half], axis=1).reshape(-1)


def plan_tensors(hp: HParams) -> list[TensorPlan]:
    """Every tensor the checkpoint must contain, in GGUF order, with shapes derived from config."""
    support = SUPPORTED[hp.architecture]
    name_map = gguf.get_tensor_name_map(support.gguf_arch, hp.n_layers)
    allowed = gguf.MODEL_TENSORS[support.gguf_arch]
    q_rows, kv_rows = hp.n_heads * hp.head_dim, hp.n_kv_heads * hp.head_dim
    rope_perm = neox_to_gptj_row_permutation(hp.head_dim) if support.permute_qk else None

    wanted: list[tuple[str, tuple[int, ...], np.ndarray | None]] = [
        ("model.embed_tokens.weight", (hp.vocab_size, hp.hidden_size), None)]
    for i in range(hp.n_layers):
        p = f"model.layers.{i}."
        wanted += [
            (p + "input_layernorm.weight", (hp.hidden_size,), None),
            (p + "self_attn.q_proj.weight", (q_rows, hp.hidden_size), rope_perm),
            (p + "self_attn.k_proj.weight", (kv_rows, hp.hidden_size), rope_perm),
            (p + "self_attn.v_proj.weight", (kv_rows, hp.hidden_size), None),
        ]
        if support.qkv_bias:
            wanted += [(p + "self_attn.q_proj.bias", (q_rows,), None), (p + "self_attn.k_proj.bias", (kv_rows,), None),
                       (p + "self_attn.v_proj.bias", (kv_rows,), None)]
        if support.qk_norm:
            wanted += [(p + "self_attn.q_norm.weight", (hp.head_dim,), None),
                       (p + "self_attn.k_norm.weight", (hp.head_dim,), None)]
        wanted += [
            (p + "self_attn.o_proj.weight", (hp.hidden_size, q_rows), None),
            (p + "post_attention_layernorm.weight", (hp.hidden_size,), None),
            (p + "mlp.gate_proj.weight", (hp.intermediate_size, hp.hidden_size), None),
            (p + "mlp.up_proj.weight", (hp.intermediate_size, hp.hidden_size), None),
            (p + "mlp.down_proj.weight", (hp.hidden_size, hp.intermediate_size), None),
        ]
    wanted.append(("model.norm.weight", (hp.hidden_size,), None))
    if not hp.tie_word_embeddings:
        wanted.append(("lm_head.weight", (hp.vocab_size, hp.hidden_size), None))

    allowed_names = {gguf.TENSOR_NAMES[t].format(bid=i) for t in allowed for i in range(hp.n_layers)}
    plans = []
    for hf_name, shape, perm in wanted:
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, f"gguf has no name for {hf_name}"
        assert gguf_name.rsplit(".", 1)[0] in allowed_names, f"{gguf_name} is not a {support.gguf_arch.name} tensor"
        plans.append(TensorPlan(hf_name, gguf_name, shape, perm))
    return plans


def match_checkpoint(plans: list[TensorPlan], found: dict[str, tuple[int, ...]], hp: HParams) -> list[str]:
    """Check the checkpoint has exactly the planned tensors with the planned shapes.

    Returns the names we deliberately skip (redundant buffers; lm_head of a tied model). Raises on a
    missing tensor, an unknown tensor, or a wrong shape.
    """
    planned = {p.hf_name: p for p in plans}
    missing = [n for n in planned if n not in found]
    if missing:
        raise RaLiteError(f"checkpoint is missing {len(missing)} tensor(s), e.g. {missing[:3]}",
                          "download every shard, and check config.json matches the weights")
    skipped, unknown = [], []
    for name in found:
        if name in planned:
            continue
        if name.endswith(IGNORED_SUFFIXES) or (hp.tie_word_embeddings and name == "lm_head.weight"):
            skipped.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise RaLiteError(f"checkpoint has {len(unknown)} tensor(s) this converter does not know, e.g. {unknown[:3]}",
                          f"these do not belong to a plain {hp.architecture}; refusing to guess where they go")
    for name, plan in planned.items():
        if tuple(found[name]) != plan.shape:
            raise RaLiteError(f"tensor {name!r} has shape {list(found[name])}, config.json implies {list(plan.shape)}",
                              "check config.json matches the weights")
    return skipped
