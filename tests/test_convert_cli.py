"""`ra-lite convert` / `ra-lite quantize` commands, quantizer safety, and the model registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest
from click.testing import CliRunner

from ra_lite.convert import quantize as quantize_mod
from ra_lite.cli import main
from ra_lite.convert.hf_to_gguf import convert
from ra_lite.convert.quantize import output_path_for, parse_types, quantize
from ra_lite.errors import RaLiteError
from ra_lite.models.registry import REGISTRY_PATH, find_model, load_registry, parse_model_ref, resolve
from tests.convert_support.checkpoint import TinySpec, build_checkpoint
from tests.convert_support.fixtures import leftovers


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    ck = build_checkpoint(root / "ck", TinySpec(), n_shards=3)
    out = root / "tiny-F16.gguf"
    convert(ck.directory, out, "f16", progress=False, manifest=False)
    return ck, out


def test_cli_module_imports_only_click():
    code = ("import sys, ra_lite.convert.cli as c; heavy = {'numpy', 'gguf', 'llama_cpp', 'huggingface_hub', 'tqdm'}"
            " & set(sys.modules); assert not heavy, heavy; assert c.convert_command.name == 'convert'"
            " and c.quantize_command.name == 'quantize'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_convert_command_end_to_end(f16_model, tmp_path):
    ck, _ = f16_model
    runner = CliRunner()
    out = tmp_path / "cli.gguf"
    result = runner.invoke(main, ["convert", str(ck.directory), "-o", str(out), "--outtype", "q8_0",
                                             "--source-repo", "Org/Tiny", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["outtype"] == "q8_0" and payload["gguf_architecture"] == "qwen3" and out.is_file()
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"][0]["source_repo"] == "Org/Tiny"
    # Second run without --force: a one-line error, exit 1, no traceback.
    again = runner.invoke(main, ["convert", str(ck.directory), "-o", str(out)])
    assert again.exit_code == 2 and "error: " in again.output and "already exists" in again.output and "Traceback" not in again.output
    assert len(again.output.strip().splitlines()) == 1


def test_convert_command_bad_source(tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tmp_path), "-o", str(tmp_path / "x.gguf")])
    assert result.exit_code == 2 and "no config.json" in result.output


def test_quantize_command(f16_model, tmp_path):
    _, src = f16_model
    result = CliRunner().invoke(main, ["quantize", str(src), "--types", "q4_k_m,Q6_K", "--out-dir", str(tmp_path),
                                                   "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["quant_type"] for r in payload] == ["Q4_K_M", "Q6_K"]
    assert sorted(p.name for p in tmp_path.glob("*.gguf")) == ["tiny-Q4_K_M.gguf", "tiny-Q6_K.gguf"]
    # Existing outputs are refused before any work (nothing is touched), and --force overwrites.
    before = (tmp_path / "tiny-Q6_K.gguf").stat().st_mtime_ns
    refused = CliRunner().invoke(main, ["quantize", str(src), "--types", "Q2_K,Q6_K", "--out-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "tiny-Q6_K.gguf already exists" in refused.output
    assert not (tmp_path / "tiny-Q2_K.gguf").exists()
    assert (tmp_path / "tiny-Q6_K.gguf").stat().st_mtime_ns == before
    forced = CliRunner().invoke(main, ["quantize", str(src), "--types", "Q6_K", "--out-dir", str(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output


def test_quantize_failure_leaves_no_partial_file(f16_model, tmp_path, monkeypatch):
    _, src = f16_model

    def half_written_then_fail(fname_in, fname_out, params):
        Path(fname_out.decode()).write_bytes(b"GGUF half written")
        return 1

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", half_written_then_fail)
    with pytest.raises(RaLiteError, match="llama.cpp failed to quantize"):
        quantize(src, "Q4_K_M", out_dir=tmp_path, progress=False)
    assert leftovers(tmp_path) == []


def test_quantize_input_checks(f16_model, tmp_path):
    ck, src = f16_model
    with pytest.raises(RaLiteError, match="unknown quant type 'Q1_X'"):
        quantize(src, "Q1_X", out_dir=tmp_path, progress=False)
    with pytest.raises(RaLiteError, match="no quant types"):
        quantize(src, " , ", out_dir=tmp_path, progress=False)
    with pytest.raises(RaLiteError, match="does not exist"):
        quantize(tmp_path / "missing.gguf", "Q4_K_M", progress=False)
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf at all" * 10)
    with pytest.raises(RaLiteError, match="not a readable GGUF"):
        quantize(bogus, "Q4_K_M", out_dir=tmp_path, progress=False)
    q8 = tmp_path / "m-Q8_0.gguf"
    convert(ck.directory, q8, "q8_0", progress=False, manifest=False)
    with pytest.raises(RaLiteError, match="already quantized.*--allow-requantize"):
        quantize(q8, "Q4_K_M", progress=False)
    done = quantize(q8, "Q4_K_M", allow_requantize=True, progress=False, manifest=False)
    assert done[0].output == tmp_path / "m-Q4_K_M.gguf" and done[0].output.is_file()


def test_quantize_names_and_types():
    assert parse_types("q4_k_m, Q8_0,Q4_K_M") == ["Q4_K_M", "Q8_0"]
    assert output_path_for(Path("/m/ra-8b-F16.gguf"), "Q4_K_M", Path("/o")) == Path("/o/ra-8b-Q4_K_M.gguf")
    assert output_path_for(Path("/m/ra-8b.bf16.gguf"), "Q2_K", Path("/o")) == Path("/o/ra-8b-Q2_K.gguf")
    assert output_path_for(Path("/m/plain.gguf"), "Q6_K", Path("/o")) == Path("/o/plain-Q6_K.gguf")
    assert all(code == getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name}") for name, code in quantize_mod.QUANT_TYPES.items())


def test_registry_rewardanything_entry():
    entry = resolve("rewardanything-8b")
    assert entry.repo_ids == ("WisdomShell/RewardAnything-8B-v1", "zhuohaoyu/RewardAnything-8B-v1")
    assert entry.architecture == "Qwen3ForCausalLM" and entry.gguf_architecture == "qwen3"
    assert entry.revision == "main" and entry.revision_pinned is False and entry.revision_note
    assert entry.license.status == "unverified"
    assert set(entry.recommended_quants) <= set(entry.gguf_artifacts)
    assert all(a is None for a in entry.gguf_artifacts.values())  # nothing published: no invented hashes
    assert parse_model_ref("rewardanything-8b:q4_k_m") == (entry, "Q4_K_M")
    assert parse_model_ref("rewardanything-8b") == (entry, entry.default_quant)
    assert find_model("zhuohaoyu/rewardanything-8b-v1") == entry and find_model("nope") is None
    assert json.loads(json.dumps(entry.to_dict()))["name"] == "rewardanything-8b"
    with pytest.raises(RaLiteError, match="unknown model 'nope'.*rewardanything-8b"):
        resolve("nope")
    with pytest.raises(RaLiteError, match="no quant 'Q9'"):
        parse_model_ref("rewardanything-8b:Q9")


def test_registry_validation(tmp_path):
    data = json.loads(REGISTRY_PATH.read_text())
    data["models"][0]["gguf_artifacts"]["Q4_K_M"] = {"repo": "Org/GGUF", "file": "x.gguf", "sha256": "abc"}
    bad = tmp_path / "registry.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(RaLiteError, match="sha256 must be 64"):
        load_registry(bad)
    data["models"][0]["gguf_artifacts"]["Q4_K_M"]["sha256"] = "0" * 64
    bad.write_text(json.dumps(data))
    assert load_registry(bad)[0].gguf_artifacts["Q4_K_M"].repo == "Org/GGUF"
    del data["models"][0]["gguf_artifacts"]["Q4_K_M"]
    bad.write_text(json.dumps(data))
    with pytest.raises(RaLiteError, match="'Q4_K_M' has no slot"):
        load_registry(bad)
