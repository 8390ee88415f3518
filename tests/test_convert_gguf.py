"""HF checkpoint -> GGUF, checked by reading the GGUF back with gguf-py (no llama.cpp needed here)."""

from __future__ import annotations

import hashlib
import json

import gguf
import numpy as np
import pytest

from ra_lite.convert.hf_to_gguf import convert
from ra_lite.errors import RaLiteError
from tests.convert_support.checkpoint import CHAT_TEMPLATE, TinySpec, bf16_round, build_checkpoint
from tests.convert_support.fixtures import expected_gguf_weight, gguf_fields, gguf_tensors

ARCHS = {"qwen3": "qwen2", "qwen2": "qwen2", "llama": "llama3"}  # arch -> tokenizer style


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {arch: build_checkpoint(root / arch, TinySpec(arch=arch, tokenizer_style=style), seed=i)
            for i, (arch, style) in enumerate(ARCHS.items())}


def test_qwen3_metadata_is_complete(checkpoints, tmp_path):
    ck = checkpoints["qwen3"]
    out = tmp_path / "q.gguf"
    result = convert(ck.directory, out, "f16", source_repo="Org/Tiny", source_revision="a" * 40, progress=False)
    f = gguf_fields(out)
    spec = ck.spec
    assert f["general.architecture"] == "qwen3" and f["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert f["general.source.repo_id"] == "Org/Tiny" and f["general.source.revision"] == "a" * 40
    assert f["general.source.repo_url"] == "https://huggingface.co/Org/Tiny"
    assert f["general.converter"].startswith("ra-lite ")
    expected = {
        "qwen3.context_length": spec.max_position_embeddings, "qwen3.embedding_length": spec.hidden,
        "qwen3.block_count": spec.n_layers, "qwen3.feed_forward_length": spec.intermediate,
        "qwen3.attention.head_count": spec.n_heads, "qwen3.attention.head_count_kv": spec.n_kv_heads,
        "qwen3.attention.key_length": spec.head_dim, "qwen3.attention.value_length": spec.head_dim,
        "qwen3.rope.dimension_count": spec.head_dim, "qwen3.vocab_size": spec.vocab_size,
    }
    assert {k: f[k] for k in expected} == expected
    assert f["qwen3.rope.freq_base"] == pytest.approx(spec.rope_theta)
    assert f["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(spec.rms_norm_eps)

    tok = ck.tokenizer
    tok_json = json.loads((ck.directory / "tokenizer.json").read_text())
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == spec.vocab_size
    assert len(f["tokenizer.ggml.merges"]) == len(tok_json["model"]["merges"])
    for text, token_id in tok.get_vocab().items():
        assert tokens[token_id] == text
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert types[tok.token_to_id(special)] == gguf.TokenType.CONTROL
    for added in ("<think>", "</think>"):  # added but not special in Qwen3: user-defined
        assert types[tok.token_to_id(added)] == gguf.TokenType.USER_DEFINED
    assert tokens[-1] == f"[PAD{spec.vocab_size - 1}]" and types[-1] == gguf.TokenType.UNUSED
    assert f["tokenizer.ggml.eos_token_id"] == tok.token_to_id("<|im_end|>")
    assert f["tokenizer.ggml.padding_token_id"] == tok.token_to_id("<|endoftext|>")
    assert f["tokenizer.ggml.bos_token_id"] == tok.token_to_id("<|endoftext|>")  # from config.json
    assert f["tokenizer.ggml.add_bos_token"] is False
    assert f["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert result.chat_template_source == "chat_template.jinja" and result.warnings == []


@pytest.mark.parametrize("arch", list(ARCHS))
def test_f32_tensors_equal_the_checkpoint(checkpoints, tmp_path, arch):
    ck = checkpoints[arch]
    out = tmp_path / "f32.gguf"
    result = convert(ck.directory, out, "f32", progress=False, manifest=False)
    tensors = gguf_tensors(out)
    gguf_arch = {"qwen3": gguf.MODEL_ARCH.QWEN3, "qwen2": gguf.MODEL_ARCH.QWEN2, "llama": gguf.MODEL_ARCH.LLAMA}[arch]
    name_map = gguf.get_tensor_name_map(gguf_arch, ck.spec.n_layers)
    assert len(tensors) == len(ck.weights) == result.n_tensors
    for hf_name, weight in ck.weights.items():
        t = tensors[name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(t.data).reshape(weight.shape),
                                      expected_gguf_weight(hf_name, weight, ck.config), err_msg=hf_name)


def test_bf16_copies_bits_and_q8_0_matches_ggml_reference(checkpoints, tmp_path):
    ck = checkpoints["qwen3"]
    convert(ck.directory, tmp_path / "b.gguf", "bf16", progress=False, manifest=False)
    convert(ck.directory, tmp_path / "q.gguf", "q8_0", progress=False, manifest=False)
    bf16, q8 = gguf_tensors(tmp_path / "b.gguf"), gguf_tensors(tmp_path / "q.gguf")
    w = ck.weights["model.layers.1.mlp.down_proj.weight"]
    t = bf16["blk.1.ffn_down.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.BF16
    np.testing.assert_array_equal(np.asarray(t.data).view(np.uint16).reshape(w.shape), bf16_round(w))
    t = q8["blk.1.ffn_down.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    np.testing.assert_array_equal(np.asarray(t.data).reshape(-1), gguf.quants.quantize(w, t.tensor_type).reshape(-1))
    for name in ("blk.0.attn_q_norm.weight", "output_norm.weight"):  # 1-D tensors stay f32 in every outtype
        assert bf16[name].tensor_type == q8[name].tensor_type == gguf.GGMLQuantizationType.F32


@pytest.mark.parametrize("arch,outtype", [("llama", "f32"), ("qwen3", "q8_0"), ("qwen2", "bf16")])
def test_small_chunks_give_identical_files(checkpoints, tmp_path, arch, outtype):
    # Streaming must not change a byte: chunk boundaries fall inside tensors (and inside the
    # permuted q/k of Llama) when chunks are ~2 KB.
    ck = checkpoints[arch]
    convert(ck.directory, tmp_path / "a.gguf", outtype, progress=False, manifest=False)
    convert(ck.directory, tmp_path / "b.gguf", outtype, progress=False, manifest=False, chunk_bytes=2048)
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_tied_embeddings_have_no_output_tensor(tmp_path):
    ck = build_checkpoint(tmp_path / "tied", TinySpec(tie_word_embeddings=True), n_shards=1)
    convert(ck.directory, tmp_path / "t.gguf", "f32", progress=False, manifest=False)
    names = set(gguf_tensors(tmp_path / "t.gguf"))
    assert "token_embd.weight" in names and "output.weight" not in names


def test_template_from_tokenizer_config_and_llama_bos(tmp_path):
    ck = build_checkpoint(tmp_path / "ll", TinySpec(arch="llama", tokenizer_style="llama3", template_in="config"))
    result = convert(ck.directory, tmp_path / "l.gguf", "f16", progress=False, manifest=False)
    f = gguf_fields(tmp_path / "l.gguf")
    assert result.chat_template_source == "tokenizer_config.json"
    assert f["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert f["tokenizer.ggml.pre"] == "llama-bpe" and f["tokenizer.ggml.add_bos_token"] is True
    assert f["tokenizer.ggml.bos_token_id"] == ck.tokenizer.token_to_id("<|begin_of_text|>")


def test_manifest_records_hash_and_provenance(checkpoints, tmp_path):
    ck = checkpoints["qwen2"]
    out = tmp_path / "m.gguf"
    for _ in range(2):  # converting again with --force replaces the entry instead of adding one
        result = convert(ck.directory, out, "f16", source_repo="Org/Tiny", source_revision="r1", force=True,
                         progress=False)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["schema_version"] == 1 and len(data["artifacts"]) == 1
    entry = data["artifacts"][0]
    assert entry["file"] == "m.gguf" and entry["quant_type"] == "F16" and entry["produced_by"] == "convert"
    assert entry["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
    assert entry["size_bytes"] == out.stat().st_size
    assert (entry["source_repo"], entry["source_revision"]) == ("Org/Tiny", "r1")
    assert entry["converter_version"].startswith("ra-lite ")
    assert json.loads(json.dumps(result.to_dict()))["hparams"]["head_dim"] == ck.spec.head_dim


def test_hub_source_downloads_only_needed_files(checkpoints, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "hub" / "models--WisdomShell--RewardAnything-8B-v1" / "snapshots" / commit
    shutil.copytree(checkpoints["qwen3"].directory, snapshot)
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    result = convert("rewardanything-8b", tmp_path / "ra.gguf", "f16", progress=False, manifest=False)
    (repo_id, revision, patterns), = calls
    assert (repo_id, revision) == ("WisdomShell/RewardAnything-8B-v1", "main")
    assert "*.bin" not in patterns and "config.json" in patterns and "model.safetensors.index.json" in patterns
    assert (result.source.repo_id, result.source.revision) == ("WisdomShell/RewardAnything-8B-v1", commit)
    assert gguf_fields(tmp_path / "ra.gguf")["general.source.revision"] == commit

    # A local directory inside the HF cache knows its provenance from its path.
    result = convert(snapshot, tmp_path / "local.gguf", "f16", progress=False, manifest=False)
    assert (result.source.repo_id, result.source.revision) == ("WisdomShell/RewardAnything-8B-v1", commit)


def test_hub_failure_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(RaLiteError, match="could not download Org/Missing"):
        convert("Org/Missing", out / "x.gguf", progress=False)
    with pytest.raises(RaLiteError, match="not a directory, a Hub repo id"):
        convert("./does/not/exist/", out / "x.gguf", progress=False)
    assert list(out.iterdir()) == []
