"""Builds a tiny random-weight Llama GGUF that borrows a real model's tokenizer.

Random weights make the model's choices arbitrary, which is the point: whatever such a model
prefers, ra-lite's decoder must still produce a valid judgment. The tokenizer, its metadata and
chat template come from a real GGUF so prompts tokenize as in production.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COPIED_TOKENIZER_FIELDS = {
    "tokenizer.ggml.model": "add_tokenizer_model",
    "tokenizer.ggml.pre": "add_tokenizer_pre",
    "tokenizer.ggml.tokens": "add_token_list",
    "tokenizer.ggml.token_type": "add_token_types",
    "tokenizer.ggml.merges": "add_token_merges",
    "tokenizer.ggml.bos_token_id": "add_bos_token_id",
    "tokenizer.ggml.eos_token_id": "add_eos_token_id",
    "tokenizer.ggml.padding_token_id": "add_pad_token_id",
    "tokenizer.ggml.add_bos_token": "add_add_bos_token",
    "tokenizer.chat_template": "add_chat_template",
}


def write_random_gguf(path: Path, tokenizer_from: Path, seed: int = 0, n_embd: int = 64,
                      n_layers: int = 2, n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128,
                      architecture: str = "llama", context_length: int = 4096,
                      pad_vocab_to: int | None = None, head_dim: int | None = None,
                      dtype=np.float32, chat_template: str | None = None) -> Path:
    """pad_vocab_to: append unused tokens up to this vocabulary size (e.g. Qwen's 151,936) to
    measure per-token costs that grow with the vocabulary, such as stock grammar sampling."""
    import gguf

    source = gguf.GGUFReader(tokenizer_from)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("random-weights test model")
    writer.add_block_count(n_layers)
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim or n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == np.float16
                         else gguf.LlamaFileType.ALL_F32)
    if architecture == "bert":
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    tokens = source.fields["tokenizer.ggml.tokens"].contents()
    token_types = source.fields["tokenizer.ggml.token_type"].contents()
    if pad_vocab_to and pad_vocab_to > len(tokens):
        extra = pad_vocab_to - len(tokens)
        tokens = tokens + [f"<|unused_{i}|>" for i in range(extra)]
        token_types = token_types + [int(gguf.TokenType.UNUSED)] * extra
    for key, method in COPIED_TOKENIZER_FIELDS.items():
        field = source.fields.get(key)
        if key == "tokenizer.ggml.tokens":
            writer.add_token_list(tokens)
        elif key == "tokenizer.ggml.token_type":
            writer.add_token_types(token_types)
        elif key == "tokenizer.chat_template" and chat_template is not None:
            writer.add_chat_template(chat_template)
        elif field is not None:
            getattr(writer, method)(field.contents())
    n_vocab = len(tokens)

    rng = np.random.default_rng(seed)
    head_dim = head_dim or n_embd // n_head
    if head_dim * n_head != n_embd:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)

    def weight(*shape):   # GGUF numpy shapes are (rows=out, cols=in)
        return (rng.standard_normal(shape, dtype=np.float32) * (0.5 / np.sqrt(shape[-1]))).astype(dtype)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", (weight(n_vocab, n_embd) * 8).astype(dtype))  # peakier
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_head * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_head * head_dim))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
