"""`ra-lite pull` and model references, against a fake Hub on 127.0.0.1 (no network).

The real huggingface_hub client does the downloading, so caching, resuming and offline mode are
the library's own behaviour; the fake hub only serves bytes and headers.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from ra_lite.errors import RaLiteError
from ra_lite.model_ref import parse_model_ref
from ra_lite.pull import resolve_model
from ra_lite.pull import pull
from tests.support.fake_hub import COMMIT, FakeHub

REPO, FILE = "test-org/tiny-GGUF", "tiny-Q8_0.gguf"
CONTENT = b"GGUF" + bytes(range(256)) * 1200          # ~300 kB: several download chunks
SHA = hashlib.sha256(CONTENT).hexdigest()


def registry_json(artifact_sha=SHA, q4=None):
    artifact = {"repo": REPO, "file": FILE, "sha256": artifact_sha, "size_bytes": len(CONTENT)}
    return {"schema_version": 1, "models": [{
        "name": "tiny", "display_name": "Tiny-v1", "repo_ids": ["test-org/tiny"],
        "revision": "main", "revision_pinned": False, "architecture": "Qwen3ForCausalLM",
        "gguf_architecture": "qwen3", "parameters": "1M",
        "license": {"spdx": "Apache-2.0", "status": "verified", "note": "test"},
        "recommended_quants": ["Q8_0"], "default_quant": "Q8_0",
        "gguf_artifacts": {"Q8_0": artifact, "Q4_K_M": q4}}]}


@pytest.fixture
def registry(tmp_path, monkeypatch):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(registry_json()))
    monkeypatch.setenv("RA_LITE_REGISTRY", str(path))
    return path


@pytest.fixture
def hub(registry, monkeypatch):
    import huggingface_hub.constants as constants

    hub = FakeHub({(REPO, FILE): CONTENT, (REPO, "other.gguf"): CONTENT[::-1]})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)   # read at import by the library
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16 << 10)
    yield hub
    hub.close()


def cache_root() -> Path:
    return Path(os.environ["HF_HOME"]) / "hub" / "models--test-org--tiny-GGUF"


def files_in_cache() -> list[str]:
    root = cache_root()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def test_registry_name_downloads_verifies_and_is_cached(hub):
    result = pull("tiny:Q8_0", progress=False)
    assert result.source == "download" and result.verified and result.checked_against == "registry"
    assert result.sha256 == SHA and result.path.read_bytes() == CONTENT
    assert result.path == cache_root() / "snapshots" / COMMIT / FILE    # the standard HF layout
    gets = len(hub.gets())
    again = pull("tiny", progress=False)                   # default quant, from the cache
    assert again.source == "cache" and again.path == result.path and len(hub.gets()) == gets
    assert resolve_model("tiny:Q8_0") == (result.path, False)


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(hub, registry):
    registry.write_text(json.dumps(registry_json(artifact_sha="0" * 64)))
    with pytest.raises(RaLiteError, match="checksum mismatch.*deleted") as info:
        pull("tiny:Q8_0", progress=False)
    assert SHA in str(info.value) and "0" * 64 in str(info.value)
    assert not [f for f in files_in_cache() if not f.startswith("refs")]   # no blob, no link


def test_interrupted_download_resumes_with_a_range_request(hub):
    hub.drop_after = 100_000
    result = pull("tiny:Q8_0", progress=False)
    assert result.path.read_bytes() == CONTENT and result.verified
    ranges = [r for _, _, r in hub.gets() if r]
    assert ranges and int(ranges[0].split("=")[1].rstrip("-")) > 0


def test_offline_uses_the_cache_and_says_what_is_missing(hub, monkeypatch):
    pulled = pull("tiny:Q8_0", progress=False).path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.close()                                            # nothing may be contacted now
    assert pull("tiny:Q8_0", progress=False).path == pulled
    assert resolve_model("tiny")[0] == pulled
    with pytest.raises(RaLiteError, match="HF_HUB_OFFLINE.*not in the Hugging Face cache"):
        pull(f"hf://{REPO}/other.gguf", progress=False)


def test_hf_reference_is_checked_against_the_hubs_lfs_hash(hub):
    result = pull(f"hf://{REPO}/other.gguf", progress=False)
    assert result.verified and result.checked_against == "hub-lfs"
    assert result.sha256 == hashlib.sha256(CONTENT[::-1]).hexdigest()
    hub.etags[(REPO, FILE)] = "f" * 64                      # the Hub announces another file
    with pytest.raises(RaLiteError, match="checksum mismatch"):
        pull(f"hf://{REPO}/{FILE}@main", progress=False)
    assert not any(FILE in f for f in files_in_cache())


def test_missing_file_and_unpublished_quant_are_clear_errors(hub):
    with pytest.raises(RaLiteError, match="has no file 'nope.gguf'"):
        pull(f"hf://{REPO}/nope.gguf", progress=False)
    with pytest.raises(RaLiteError, match="no GGUF file is published for tiny:Q4_K_M.*--from-source"):
        pull("tiny:Q4_K_M", progress=False)
    with pytest.raises(RaLiteError, match="has no quant 'Q9'"):
        pull("tiny:Q9", progress=False)
    with pytest.raises(RaLiteError, match="local file"):
        pull("./model.gguf")


def test_model_references_are_classified(registry, tmp_path):
    assert parse_model_ref(None).kind == "embedded"
    assert parse_model_ref("x.gguf").kind == "path"
    (tmp_path / "tiny").write_bytes(b"GGUF")                 # an existing file beats a registry name
    assert parse_model_ref(str(tmp_path / "tiny")).kind == "path"
    ref = parse_model_ref("hf://org/repo/sub/dir/m-Q4_K_M.gguf@v1.0")
    assert (ref.kind, ref.repo, ref.file, ref.revision) == ("hf", "org/repo", "sub/dir/m-Q4_K_M.gguf", "v1.0")
    ref = parse_model_ref("tiny")
    assert (ref.kind, ref.name, ref.quant, ref.repo, ref.file) == ("registry", "tiny", "Q8_0", REPO, FILE)
    with pytest.raises(RaLiteError, match="not a file, a known model name"):
        parse_model_ref("no-such-model")
    with pytest.raises(RaLiteError, match="not an hf:// model reference"):
        parse_model_ref("hf://just-a-repo")


def test_pull_command_prints_the_file_and_fails_with_exit_2(hub):
    import ra_lite.cli as cli

    runner = CliRunner()
    ok = runner.invoke(cli.main, ["pull", "tiny:Q8_0", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["sha256"] == SHA
    bad = runner.invoke(cli.main, ["pull", "tiny:Q4_K_M"])
    assert bad.exit_code == 2 and "--from-source" in bad.output


@pytest.mark.slow
def test_from_source_converts_and_quantizes_and_is_then_resolvable(registry, monkeypatch, tmp_path):
    """--from-source: the checkpoint 'download' is a tiny local checkpoint; convert and quantize
    are the real ones."""
    import ra_lite.convert.source as source
    from tests.convert_support.checkpoint import TinySpec, build_checkpoint

    checkpoint = build_checkpoint(tmp_path / "ckpt", TinySpec(n_layers=1))
    asked = []
    monkeypatch.setattr(source, "download", lambda repo, rev: asked.append((repo, rev)) or checkpoint.directory)
    result = pull("tiny:Q4_K_M", from_source=True, progress=False)
    assert asked == [("test-org/tiny", "main")] and result.source == "converted"
    assert result.path.name == "Tiny-v1-Q4_K_M.gguf" and result.path.read_bytes()[:4] == b"GGUF"
    assert not list(result.path.parent.glob("*F16*"))       # the intermediate file is gone
    assert resolve_model("tiny:Q4_K_M") == (result.path, False)
    assert pull("tiny:Q4_K_M", progress=False).source == "local-build"
