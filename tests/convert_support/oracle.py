"""An independent numpy (float64) forward pass of Qwen3 / Qwen2 / Llama, written from the HF modeling code.

It reads the HF tensor names and HF conventions (rotate-half RoPE, per-head q/k RMSNorm for Qwen3,
q/k/v biases for Qwen2), so it checks the converter's renaming, permutation and metadata against
what transformers would compute, not against llama.cpp's own assumptions.
"""

from __future__ import annotations

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope_rotate_half(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """HF apply_rotary_pos_emb: x (T, heads, D); pairs element i with i + D/2."""
    d = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # (T, D/2)
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[:, None, :]
    rotated = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
    return x * cos + rotated * sin


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def forward(weights: dict[str, np.ndarray], config: dict, tokens: list[int]) -> np.ndarray:
    """Logits (T, vocab) for `tokens` at positions 0..T-1, causal attention."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    hidden, n_heads = config["hidden_size"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)
    head_dim = config.get("head_dim") or hidden // n_heads
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    arch = config["architectures"][0]
    T = len(tokens)
    positions = np.arange(T)
    mask = np.triu(np.full((T, T), -np.inf), k=1)

    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q, k, v = (h @ w[p + f"self_attn.{n}_proj.weight"].T for n in "qkv")
        if arch == "Qwen2ForCausalLM":
            q, k, v = q + w[p + "self_attn.q_proj.bias"], k + w[p + "self_attn.k_proj.bias"], v + w[p + "self_attn.v_proj.bias"]
        q, k, v = q.reshape(T, n_heads, head_dim), k.reshape(T, n_kv, head_dim), v.reshape(T, n_kv, head_dim)
        if arch == "Qwen3ForCausalLM":
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q, k = rope_rotate_half(q, positions, theta), rope_rotate_half(k, positions, theta)
        group = n_heads // n_kv
        out = np.empty((T, n_heads, head_dim))
        for hd in range(n_heads):
            kv = hd // group
            scores = q[:, hd, :] @ k[:, kv, :].T / np.sqrt(head_dim) + mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            out[:, hd, :] = (scores / scores.sum(axis=-1, keepdims=True)) @ v[:, kv, :]
        x = x + out.reshape(T, n_heads * head_dim) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = h @ w[p + "mlp.gate_proj.weight"].T, h @ w[p + "mlp.up_proj.weight"].T
        x = x + (silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T
