"""A small, streaming safetensors reader: no torch, no `safetensors` package, bf16 decoded exactly.

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the raw
little-endian tensor bytes; offsets are relative to the first byte after the header.

Why not np.memmap: pages of a memory map that we touch count towards the process's RSS until they
are unmapped, so converting a 1.2 GB embedding through a map shows up as 1.2 GB of RSS. Reading row
chunks with `os.pread` into a reused buffer keeps the resident set at one chunk; the file data sits in
the kernel's page cache, which the kernel can drop at will.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Iterator

import numpy as np

from ra_lite.errors import RaLiteError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# The dtypes a HF LLM checkpoint uses for weights. Anything else (int8, fp8, ...) is a quantized
# checkpoint that this converter does not understand, so we refuse it rather than guess.
_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4}
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors spec's own limit


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives on disk."""

    name: str
    dtype: str  # safetensors dtype string: "BF16", "F16" or "F32"
    shape: tuple[int, ...]
    file: Path
    offset: int  # absolute byte offset of the first element in `file`
    nbytes: int

    @property
    def n_rows(self) -> int:
        # Streaming works row by row: a 1-D tensor is one row, an N-D tensor is (shape[0], rest).
        return self.shape[0] if len(self.shape) >= 2 else 1

    @property
    def row_elements(self) -> int:
        return prod(self.shape[1:]) if len(self.shape) >= 2 else prod(self.shape)


def decode_to_f32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw little-endian bytes (uint8) -> float32 (callers reshape). bf16 is the top half of an f32: exact."""
    if dtype == "BF16":
        # One output allocation, no temporaries: the ufunc widens u16 to u32 as it shifts.
        out = np.empty(raw.size // 2, dtype=np.uint32)
        np.left_shift(raw.reshape(-1).view("<u2"), np.uint32(16), out=out)
        return out.view(np.float32)
    if dtype == "F16":
        return raw.view("<f2").astype(np.float32)
    if dtype == "F32":
        return raw.view("<f4").astype(np.float32, copy=True)
    raise AssertionError(f"unsupported dtype {dtype}")  # parse_header already refused it


def parse_header(path: Path) -> dict[str, TensorEntry]:
    """Read and validate one .safetensors file's header; every tensor must lie inside the file."""
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise RaLiteError(f"{path} is truncated: {file_size} bytes, too short for a safetensors header",
                                  "re-download the checkpoint")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > file_size:
                raise RaLiteError(f"{path} is truncated or not a safetensors file: header claims {header_len} bytes "
                                  f"but the file has {file_size}", "re-download the checkpoint")
            header_bytes = f.read(header_len)
    except OSError as err:
        raise RaLiteError(f"cannot read {path}: {err.strerror or err}", "check the path and permissions") from err
    try:
        header = json.loads(header_bytes)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (UnicodeDecodeError, ValueError) as err:
        raise RaLiteError(f"{path} has a corrupt safetensors header ({err})", "re-download the checkpoint") from err

    data_start = 8 + header_len
    data_size = file_size - data_start
    entries: dict[str, TensorEntry] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise RaLiteError(f"{path}: malformed header entry for tensor {name!r}", "re-download the checkpoint") from err
        if dtype not in _ITEMSIZE:
            raise RaLiteError(f"{path}: tensor {name!r} has dtype {dtype}; only BF16, F16 and F32 are supported",
                              "convert from the original (unquantized) checkpoint")
        nbytes = prod(shape) * _ITEMSIZE[dtype]
        if end - begin != nbytes or begin < 0:
            raise RaLiteError(f"{path}: tensor {name!r} has offsets [{begin}, {end}) that do not match its shape "
                              f"{list(shape)} and dtype {dtype}", "re-download the checkpoint")
        if end > data_size:
            raise RaLiteError(f"{path} is truncated: tensor {name!r} ends at byte {data_start + end} but the file "
                              f"has {file_size}", "re-download the checkpoint")
        entries[name] = TensorEntry(name, dtype, shape, path, data_start + begin, nbytes)
    return entries


class SafetensorsCheckpoint:
    """All tensors of a checkpoint directory (sharded with an index file, or a single file)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.tensors: dict[str, TensorEntry] = {}
        index_path = self.directory / INDEX_FILE
        if index_path.is_file():
            self.shard_files = self._shards_from_index(index_path)
        elif (self.directory / SINGLE_FILE).is_file():
            self.shard_files = [self.directory / SINGLE_FILE]
        else:
            found = sorted(p.name for p in self.directory.glob("*.safetensors"))
            if len(found) > 1:
                # Several shards but no index: we could glob them, but a missing shard would then go
                # unnoticed until a tensor is missing. The index is what says which shards exist.
                raise RaLiteError(f"{self.directory} has {len(found)} .safetensors files but no {INDEX_FILE}",
                                  "download the index file too (it ships with every sharded checkpoint)")
            if not found:
                raise RaLiteError(f"no safetensors weights in {self.directory}",
                                  f"expected {SINGLE_FILE} or {INDEX_FILE} with its shards (.bin/.pt checkpoints "
                                  "are not supported)")
            self.shard_files = [self.directory / found[0]]
        for shard in self.shard_files:
            for name, entry in parse_header(shard).items():
                if name in self.tensors:
                    raise RaLiteError(f"tensor {name!r} appears in both {self.tensors[name].file.name} and "
                                      f"{shard.name}", "the checkpoint is inconsistent; re-download it")
                self.tensors[name] = entry
        if index_path.is_file():
            self._check_index_matches(index_path)

    def _shards_from_index(self, index_path: Path) -> list[Path]:
        try:
            self._weight_map: dict[str, str] = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RaLiteError(f"{index_path} is not a valid safetensors index ({err})", "re-download it") from err
        shards = sorted(set(self._weight_map.values()))
        missing = [s for s in shards if not (self.directory / s).is_file()]
        if missing:
            raise RaLiteError(f"missing shard file(s) in {self.directory}: {', '.join(missing)}",
                              "download every shard listed in " + INDEX_FILE)
        return [self.directory / s for s in shards]

    def _check_index_matches(self, index_path: Path) -> None:
        for name, shard in self._weight_map.items():
            entry = self.tensors.get(name)
            if entry is None or entry.file.name != shard:
                raise RaLiteError(f"{index_path.name} says tensor {name!r} is in {shard}, but it is not there",
                                  "the checkpoint is inconsistent; re-download it")

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.tensors.values())

    def read_f32(self, name: str) -> np.ndarray:
        """The whole tensor as float32 (for small tensors and tests; conversion uses iter_row_chunks)."""
        entry = self.tensors[name]
        parts = [chunk for _, chunk in self.iter_row_chunks(name, max_bytes=1 << 62)]
        return np.concatenate(parts).reshape(entry.shape) if parts else np.zeros(entry.shape, np.float32)

    def iter_row_chunks(self, name: str, max_bytes: int = 16 << 20, row_multiple: int = 1,
                        raw: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first_row, 2-D array) chunks of at most ~max_bytes of source data.

        `row_multiple` keeps chunk boundaries on multiples of that many rows (Llama's q/k permutation
        only moves rows within one head, so chunks aligned to head_dim can be permuted independently).
        raw=True yields the undecoded little-endian bytes as uint8 (rows, row_bytes).
        """
        entry = self.tensors[name]
        row_bytes = entry.row_elements * _ITEMSIZE[entry.dtype]
        rows_per_chunk = max(1, max_bytes // max(row_bytes, 1))
        rows_per_chunk = max(row_multiple, rows_per_chunk // row_multiple * row_multiple)
        fd = os.open(entry.file, os.O_RDONLY)
        try:
            for first in range(0, entry.n_rows, rows_per_chunk):
                n = min(rows_per_chunk, entry.n_rows - first)
                want = n * row_bytes
                buf = os.pread(fd, want, entry.offset + first * row_bytes)
                if len(buf) != want:
                    raise RaLiteError(f"{entry.file} ended early while reading {name!r} (file truncated?)",
                                      "re-download the checkpoint")
                data = np.frombuffer(buf, dtype=np.uint8).reshape(n, row_bytes)
                yield first, (data if raw else decode_to_f32(data, entry.dtype).reshape(n, entry.row_elements))
        finally:
            os.close(fd)
