"""Bad input gives one clear RaLiteError and never leaves a partial (or any) output file."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from ra_lite.convert import hf_to_gguf
from ra_lite.convert.hf_to_gguf import convert
from ra_lite.errors import RaLiteError
from tests.convert_support.checkpoint import TinySpec, bf16_round, build_checkpoint, write_safetensors
from tests.convert_support.fixtures import copy_checkpoint, edit_config, leftovers


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("pristine") / "qwen3", TinySpec())


@pytest.fixture
def ckpt(pristine, tmp_path):
    """A private copy each test may break."""
    return copy_checkpoint(pristine.directory, tmp_path / "src")


@pytest.fixture
def out_dir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def _fails(ckpt, out_dir, match, **kwargs):
    with pytest.raises(RaLiteError, match=match) as info:
        convert(ckpt, out_dir / "model.gguf", kwargs.pop("outtype", "f16"), progress=False, **kwargs)
    assert leftovers(out_dir) == [], "a failed conversion left files behind"
    assert info.value.fix, "every user-facing error says how to fix it"
    return info.value


def test_unsupported_architecture(ckpt, out_dir):
    edit_config(ckpt, architectures=["MixtralForCausalLM"])
    _fails(ckpt, out_dir, "unsupported architecture 'MixtralForCausalLM'")


@pytest.mark.parametrize("field", ["hidden_size", "num_hidden_layers", "rope_theta", "rms_norm_eps", "vocab_size",
                                   "head_dim", "max_position_embeddings", "intermediate_size"])
def test_config_missing_a_field(ckpt, out_dir, field):
    edit_config(ckpt, **{field: None})
    _fails(ckpt, out_dir, f"config.json is missing '{field}'")


def test_config_wrong_type_and_missing_file(ckpt, out_dir):
    edit_config(ckpt, hidden_size="256")
    _fails(ckpt, out_dir, "'hidden_size' should be int")
    (ckpt / "config.json").unlink()
    _fails(ckpt, out_dir, "no config.json")


def test_config_that_does_not_match_the_weights(ckpt, out_dir):
    edit_config(ckpt, intermediate_size=384)
    _fails(ckpt, out_dir, r"shape \[512, 256\], config.json implies \[384, 256\]")


def test_unsupported_features_are_refused(ckpt, out_dir):
    edit_config(ckpt, use_sliding_window=True)
    _fails(ckpt, out_dir, "sliding-window")
    edit_config(ckpt, use_sliding_window=False, rope_scaling={"rope_type": "llama3", "factor": 8.0})
    _fails(ckpt, out_dir, "rope_scaling")


def test_unknown_tensor_is_refused(ckpt, out_dir):
    write_safetensors(ckpt / "model-extra.safetensors",
                      {"model.layers.0.mlp.experts.0.weight": ("BF16", bf16_round(np.ones((4, 4), np.float32)))})
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.0.mlp.experts.0.weight"] = "model-extra.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    _fails(ckpt, out_dir, "does not know.*experts")


def test_missing_tensor_is_refused(ckpt, out_dir):
    edit_config(ckpt, num_hidden_layers=3)
    _fails(ckpt, out_dir, r"missing 11 tensor\(s\), e.g. \[.model.layers.2.input_layernorm.weight")


def test_missing_shard(ckpt, out_dir):
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    _fails(ckpt, out_dir, "missing shard.*model-00002-of-00002.safetensors")


def test_truncated_shard(ckpt, out_dir):
    shard = ckpt / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1000])
    _fails(ckpt, out_dir, "truncated")


def test_shard_truncated_while_converting_leaves_nothing(ckpt, out_dir, monkeypatch):
    # The header was fine when checked; the file shrinks afterwards (a download still in flight).
    real = hf_to_gguf._write_array
    shard = ckpt / "model-00002-of-00002.safetensors"
    calls = {"n": 0}

    def write_then_truncate(fout, array):
        real(fout, array)
        calls["n"] += 1
        if calls["n"] == 3:
            with open(shard, "r+b") as f:
                f.truncate(shard.stat().st_size // 2)

    monkeypatch.setattr(hf_to_gguf, "_write_array", write_then_truncate)
    _fails(ckpt, out_dir, "ended early")


def test_disk_full_leaves_no_partial_file(ckpt, out_dir, monkeypatch):
    calls = {"n": 0}
    real = hf_to_gguf._write_array

    def fill_up(fout, array):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fout, array)

    monkeypatch.setattr(hf_to_gguf, "_write_array", fill_up)
    _fails(ckpt, out_dir, "No space left on device")


def test_not_enough_free_space_is_refused_up_front(ckpt, out_dir, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    _fails(ckpt, out_dir, "GB free")


def test_interrupt_removes_the_temp_file(ckpt, out_dir, monkeypatch):
    def interrupted(fout, array):
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_to_gguf, "_write_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(ckpt, out_dir / "model.gguf", progress=False)
    assert leftovers(out_dir) == []


def test_unwritable_or_missing_output_location(ckpt, tmp_path):
    with pytest.raises(RaLiteError, match="does not exist"):
        convert(ckpt, tmp_path / "nope" / "model.gguf", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RaLiteError, match="is not a directory"):
        convert(ckpt, tmp_path / "file" / "model.gguf", progress=False)
    with pytest.raises(RaLiteError, match="is a directory"):
        convert(ckpt, tmp_path, progress=False)


def test_existing_output_needs_force(ckpt, out_dir):
    target = out_dir / "model.gguf"
    target.write_bytes(b"precious")
    with pytest.raises(RaLiteError, match="already exists.*--force"):
        convert(ckpt, target, progress=False)
    assert target.read_bytes() == b"precious"
    convert(ckpt, target, force=True, progress=False, manifest=False)
    assert target.read_bytes()[:4] == b"GGUF"


def test_tokenizer_problems(ckpt, out_dir):
    tok_path = ckpt / "tokenizer.json"
    tok = json.loads(tok_path.read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    tok_path.write_text(json.dumps(tok))
    _fails(ckpt, out_dir, "pre-tokenizer is not one llama.cpp implements")
    # An explicit override is the escape hatch, and unknown names are refused.
    _fails(ckpt, out_dir, "unknown pre-tokenizer 'bogus'", pre_tokenizer="bogus")
    tok["added_tokens"].append({"id": 900, "content": "<|extra|>", "special": True, "normalized": False,
                                "lstrip": False, "rstrip": False, "single_word": False})
    tok_path.write_text(json.dumps(tok))
    _fails(ckpt, out_dir, "token id 900 but config.json vocab_size is 768", pre_tokenizer="qwen2")
    tok_path.unlink()
    _fails(ckpt, out_dir, "no tokenizer.json")


def test_error_messages_are_one_line(ckpt, out_dir):
    edit_config(ckpt, architectures=["GPT2LMHeadModel"])
    err = _fails(ckpt, out_dir, "unsupported")
    assert "\n" not in err.one_line() and " — " in err.one_line()
