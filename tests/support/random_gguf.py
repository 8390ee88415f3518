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
                      architecture: str = "llama", context_length: int = 4096) -> Path:
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
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    if architecture == "bert":
        writer.add_pooling_type(gguf.PoolingType.MEAN)
    for key, method in COPIED_TOKENIZER_FIELDS.items():
        field = source.fields.get(key)
        if field is not None:
            getattr(writer, method)(field.contents())
    n_vocab = len(source.fields["tokenizer.ggml.tokens"].contents())

    rng = np.random.default_rng(seed)
    head_dim = n_embd // n_head

    def weight(*shape):   # GGUF numpy shapes are (rows=out, cols=in)
        return (rng.standard_normal(shape) * 0.5 / np.sqrt(shape[-1])).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, n_embd) * 8)  # peakier logits
    for i in range(n_layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
