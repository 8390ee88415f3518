"""Importance matrices: llama.cpp's GGUF imatrix format, read, written, and checked against a model.

An importance matrix holds, for every weight matrix W that the model multiplies by an activation
x (y = W x), the per-input-column sum of x_j^2 over every token of the calibration text, and the
number of tokens. The quantizer divides one by the other and uses the mean squared activation of
column j as the weight of column j's rounding error: columns that see large activations are
quantized more carefully.

The file is the one llama.cpp's `llama-imatrix` writes (tools/imatrix/imatrix.cpp, save_imatrix),
so llama.cpp's own `llama-quantize --imatrix` reads ours and we read theirs:

    general.type         = "imatrix"
    imatrix.datasets     = [str, ...]      what the statistics were collected on
    imatrix.chunk_count  = u32             chunks of calibration text processed
    imatrix.chunk_size   = u32             tokens per chunk
    <weight>.in_sum2     F32, ne = [n_cols, n_mat]   sum of squared activations per column
    <weight>.counts      F32, ne = [1, n_mat]        tokens seen (one count per matrix)

n_mat is 1 for dense weights (ne[2] of the weight, the expert count of a stacked MoE weight).
Newer llama-imatrix versions also write `<weight>.in_sum` (plain sums, for statistics only); the
quantizer ignores it, ra-lite neither writes nor needs it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ra_lite import atomic_files as atomic
from ra_lite.errors import RaLiteError

SUM2_SUFFIX = ".in_sum2"
COUNTS_SUFFIX = ".counts"
KEY_TYPE = "general.type"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"


@dataclass
class ImatrixEntry:
    """Statistics of one weight matrix: sum2[m, j] = sum over tokens of x_j^2 for matrix m."""

    sum2: np.ndarray     # float64 [n_mat, n_cols]
    counts: np.ndarray   # float64 [n_mat]

    def __post_init__(self):
        self.sum2 = np.asarray(self.sum2, dtype=np.float64)
        self.counts = np.asarray(self.counts, dtype=np.float64).reshape(-1)
        assert self.sum2.ndim == 2 and self.sum2.shape[0] == self.counts.shape[0], \
            (self.sum2.shape, self.counts.shape)

    @property
    def n_cols(self) -> int:
        return self.sum2.shape[1]

    @property
    def size(self) -> int:
        """What llama.cpp compares with the weight's ne[0] * ne[2]."""
        return self.sum2.size

    def mean_squares(self) -> np.ndarray:
        """What the quantizer is given: sum2 / count, flattened matrix by matrix (float32)."""
        counts = np.where(self.counts > 0, self.counts, 1.0)   # an unused expert: zeros, not NaN
        return (self.sum2 / counts[:, None]).astype(np.float32).reshape(-1)


@dataclass
class Imatrix:
    entries: dict[str, ImatrixEntry]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0


def write_imatrix(imatrix: Imatrix, path: str | Path, *, force: bool = False) -> Path:
    """Write in llama-imatrix's GGUF layout, atomically (temp file + rename)."""
    import gguf

    path = Path(path).expanduser()
    if not imatrix.entries:
        raise RaLiteError("the importance matrix is empty (no weight matrix saw any activation)",
                          "run more calibration text through the model")
    with atomic.atomic_destination(path, force) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch="imatrix")
        # GGUFWriter always adds general.architecture; llama-imatrix's files have none.
        writer.kv_data[0].pop("general.architecture", None)
        writer.add_string(KEY_TYPE, "imatrix")
        writer.add_array(KEY_DATASETS, list(imatrix.datasets))
        writer.add_uint32(KEY_CHUNK_COUNT, int(imatrix.chunk_count))
        writer.add_uint32(KEY_CHUNK_SIZE, int(imatrix.chunk_size))
        for name in sorted(imatrix.entries):   # llama-imatrix sorts too: deterministic files
            entry = imatrix.entries[name]
            # numpy shape (n_mat, n_cols) is GGUF ne = [n_cols, n_mat]
            writer.add_tensor(name + SUM2_SUFFIX, entry.sum2.astype(np.float32))
            writer.add_tensor(name + COUNTS_SUFFIX, entry.counts.astype(np.float32).reshape(-1, 1))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def read_imatrix(path: str | Path) -> Imatrix:
    """Read a GGUF imatrix (ours or llama-imatrix's); anything else is a clear error."""
    import gguf

    path = Path(path).expanduser()
    if not path.is_file():
        raise RaLiteError(f"importance matrix {path} does not exist",
                          "make one with `ra-lite imatrix MODEL -o imatrix.gguf`")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:   # GGUFReader raises ValueError/struct errors on a non-GGUF file
        raise RaLiteError(f"{path} is not a GGUF importance matrix ({type(err).__name__}: {err})",
                          "pass a file written by `ra-lite imatrix` or llama.cpp's llama-imatrix "
                          "(the old .dat format is not supported)") from err

    def field_value(key, default=None):
        f = reader.get_field(key)
        return default if f is None else f.contents()

    if field_value(KEY_TYPE) != "imatrix":
        raise RaLiteError(f"{path} is a GGUF file but not an importance matrix "
                          f"(general.type={field_value(KEY_TYPE)!r})",
                          "pass the imatrix file, not a model")
    sums, counts = {}, {}
    for tensor in reader.tensors:
        name = tensor.name
        data = np.asarray(tensor.data, dtype=np.float32)
        if name.endswith(SUM2_SUFFIX):
            sums[name[: -len(SUM2_SUFFIX)]] = data
        elif name.endswith(COUNTS_SUFFIX):
            counts[name[: -len(COUNTS_SUFFIX)]] = data
    unpaired = sorted(set(sums) ^ set(counts))
    if unpaired:
        raise RaLiteError(f"{path} is damaged: {unpaired[0]} has sums without counts or counts "
                          "without sums", "re-create the importance matrix")
    if not sums:
        raise RaLiteError(f"{path} holds no importance data", "re-create the importance matrix")
    entries = {}
    for name, s in sums.items():
        c = counts[name].reshape(-1)
        entries[name] = ImatrixEntry(s.reshape(len(c), -1), c)
    datasets = field_value(KEY_DATASETS, [])
    return Imatrix(entries=entries, datasets=list(datasets) if isinstance(datasets, list) else [datasets],
                   chunk_count=int(field_value(KEY_CHUNK_COUNT, 0)),
                   chunk_size=int(field_value(KEY_CHUNK_SIZE, 0)))


def weight_shapes(model_reader) -> dict[str, list[int]]:
    """GGUF ne of every tensor of a model (a gguf.GGUFReader)."""
    return {t.name: [int(n) for n in t.shape] for t in model_reader.tensors}


def check_matches_model(imatrix: Imatrix, shapes: dict[str, list[int]], *, imatrix_name: str,
                        model_name: str) -> None:
    """Refuse an imatrix made for another model.

    llama.cpp itself only logs a mismatched or missing entry and quantizes that tensor without
    the imatrix, so a wrong file would silently give an unweighted quant. Every weight matrix of
    the model's blocks (the tensors the collector sees) must have an entry of the right size, and
    every entry must name a tensor of the model.
    """
    fix = f"make an importance matrix from this model: ra-lite imatrix {model_name} -o imatrix.gguf"
    unknown = sorted(n for n in imatrix.entries if n not in shapes)
    if unknown:
        raise RaLiteError(f"{imatrix_name} was made for another model: {len(unknown)} of its "
                          f"{len(imatrix.entries)} entries name tensors {model_name} does not have "
                          f"(e.g. {unknown[0]})", fix)
    for name, entry in sorted(imatrix.entries.items()):
        ne = shapes[name] + [1] * (4 - len(shapes[name]))
        if entry.size != ne[0] * ne[2]:
            raise RaLiteError(f"{imatrix_name} was made for another model: {name} has {entry.size} "
                              f"values, the model's tensor needs {ne[0] * ne[2]} (shape {shapes[name]})", fix)
    missing = sorted(n for n, ne in shapes.items()
                     if n.startswith("blk.") and n.endswith(".weight") and len(ne) >= 2
                     and n not in imatrix.entries)
    if missing:
        raise RaLiteError(f"{imatrix_name} does not cover {model_name}: no data for {len(missing)} "
                          f"weight matrices (e.g. {missing[0]})", fix)


class QuantizerImatrix:
    """The NULL-terminated llama_model_imatrix_data array llama_model_quantize takes.

    Holds the float arrays too: llama.cpp copies them when quantizing starts, but they must stay
    alive until then, so keep this object referenced for the duration of the call.
    """

    def __init__(self, imatrix: Imatrix):
        import llama_cpp

        names = sorted(imatrix.entries)
        self._arrays = [np.ascontiguousarray(imatrix.entries[n].mean_squares()) for n in names]
        self._names = [n.encode() for n in names]
        self.array = (llama_cpp.llama_model_imatrix_data * (len(names) + 1))()
        for slot, name, values in zip(self.array, self._names, self._arrays):
            if not np.all(np.isfinite(values)):         # llama.cpp would throw on NaN/inf
                raise RaLiteError(f"the imatrix has non-finite values for {name.decode()}",
                                  "collect it again (ra-lite imatrix); the file is damaged")
            slot.name = name
            slot.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            slot.size = values.size
        self.array[len(names)].name = None   # the terminator

    @property
    def pointer(self):
        return ctypes.cast(self.array, ctypes.POINTER(type(self.array[0])))
