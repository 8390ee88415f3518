"""The streaming safetensors reader: exact decoding, sharded and single-file checkpoints, bad files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tests.convert_support.checkpoint import bf16_round, bf16_to_f32, write_safetensors

from ra_lite.convert.safetensors_reader import SafetensorsCheckpoint, decode_to_f32, parse_header
from ra_lite.errors import RaLiteError


def test_test_writer_matches_the_safetensors_package(tmp_path):
    # Our fixture writer must produce real safetensors files, or every other test proves nothing.
    import safetensors.numpy as safetensors_numpy
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.linspace(-2, 2, 10).astype(np.float16)
    write_safetensors(tmp_path / "model.safetensors", {"a": ("F32", a), "b": ("F16", b)})
    loaded = safetensors_numpy.load_file(str(tmp_path / "model.safetensors"))
    np.testing.assert_array_equal(loaded["a"], a)
    np.testing.assert_array_equal(loaded["b"], b)


def test_reads_files_written_by_the_safetensors_package(tmp_path):
    import safetensors.numpy as safetensors_numpy
    rng = np.random.default_rng(0)
    tensors = {"x": rng.standard_normal((5, 7)).astype(np.float32), "y": rng.standard_normal(9).astype(np.float16)}
    safetensors_numpy.save_file(tensors, str(tmp_path / "model.safetensors"))
    ckpt = SafetensorsCheckpoint(tmp_path)
    np.testing.assert_array_equal(ckpt.read_f32("x"), tensors["x"])
    np.testing.assert_array_equal(ckpt.read_f32("y"), tensors["y"].astype(np.float32))


def test_bf16_decodes_exactly_including_specials():
    values = np.array([0.0, -0.0, 1.0, -2.5, 3.0e38, -3.0e38, 1e-40, np.inf, -np.inf, 0.1], dtype=np.float32)
    bits = bf16_round(values)
    decoded = decode_to_f32(bits.view(np.uint8), "BF16")
    np.testing.assert_array_equal(decoded.view(np.uint32), bits.astype(np.uint32) << 16)
    assert np.isnan(decode_to_f32(np.array([0x7FC0], dtype="<u2").view(np.uint8), "BF16")[0])


def test_sharded_checkpoint_with_index_and_row_chunks(tmp_path):
    rng = np.random.default_rng(1)
    big = bf16_to_f32(bf16_round(rng.standard_normal((37, 16)).astype(np.float32)))
    small = bf16_to_f32(bf16_round(rng.standard_normal(16).astype(np.float32)))
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {"big": ("BF16", bf16_round(big))})
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {"small": ("BF16", bf16_round(small))})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "big": "model-00001-of-00002.safetensors", "small": "model-00002-of-00002.safetensors"}}))
    ckpt = SafetensorsCheckpoint(tmp_path)
    assert set(ckpt.tensors) == {"big", "small"} and ckpt.total_bytes == (37 * 16 + 16) * 2
    chunks = list(ckpt.iter_row_chunks("big", max_bytes=5 * 16 * 2, row_multiple=2))
    assert [first for first, _ in chunks] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]  # 5 rows -> 4 (multiple of 2)
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), big)
    np.testing.assert_array_equal(ckpt.read_f32("small"), small)
    raw = np.concatenate([c for _, c in ckpt.iter_row_chunks("big", raw=True)])
    np.testing.assert_array_equal(raw.view("<u2").reshape(37, 16), bf16_round(big))


def _one_tensor_file(path, n=64):
    write_safetensors(path, {"w": ("BF16", bf16_round(np.ones((n, 4), dtype=np.float32)))})


def test_missing_shard_is_named(tmp_path):
    _one_tensor_file(tmp_path / "model-00001-of-00002.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "w": "model-00001-of-00002.safetensors", "v": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(RaLiteError, match="missing shard.*model-00002-of-00002"):
        SafetensorsCheckpoint(tmp_path)


def test_index_that_disagrees_with_shards(tmp_path):
    _one_tensor_file(tmp_path / "model-00001-of-00001.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "w": "model-00001-of-00001.safetensors", "ghost": "model-00001-of-00001.safetensors"}}))
    with pytest.raises(RaLiteError, match="ghost"):
        SafetensorsCheckpoint(tmp_path)


def test_truncated_file_is_detected_from_the_header(tmp_path):
    path = tmp_path / "model.safetensors"
    _one_tensor_file(path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(RaLiteError, match="truncated"):
        parse_header(path)
    path.write_bytes(data[:5])
    with pytest.raises(RaLiteError, match="truncated"):
        parse_header(path)


def test_header_length_beyond_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(RaLiteError, match="header claims 10000 bytes"):
        parse_header(path)


def test_bad_header_json(tmp_path):
    path = tmp_path / "model.safetensors"
    body = b"{not json at all"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(RaLiteError, match="corrupt safetensors header"):
        parse_header(path)


def test_offsets_that_do_not_match_shape(tmp_path):
    path = tmp_path / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(RaLiteError, match="do not match its shape"):
        parse_header(path)


def test_unsupported_dtype_is_refused(tmp_path):
    write_safetensors(tmp_path / "model.safetensors", {"w": ("I8", np.zeros(4, dtype=np.int8))})
    with pytest.raises(RaLiteError, match="dtype I8"):
        SafetensorsCheckpoint(tmp_path)


def test_shards_without_index_and_no_weights(tmp_path):
    with pytest.raises(RaLiteError, match="no safetensors weights"):
        SafetensorsCheckpoint(tmp_path)
    _one_tensor_file(tmp_path / "a.safetensors")
    _one_tensor_file(tmp_path / "b.safetensors")
    with pytest.raises(RaLiteError, match="no model.safetensors.index.json"):
        SafetensorsCheckpoint(tmp_path)


def test_file_shrinking_during_read_is_an_error(tmp_path):
    path = tmp_path / "model.safetensors"
    _one_tensor_file(path)
    ckpt = SafetensorsCheckpoint(tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 8)
    with pytest.raises(RaLiteError, match="ended early"):
        ckpt.read_f32("w")
