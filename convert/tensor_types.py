"""Which GGML type each tensor gets for a given --outtype, and how a chunk of rows is encoded.

Rules follow upstream convert_hf_to_gguf.py so that our files quantize and run like theirs:
1-D tensors (norm weights, biases) stay F32 in every outtype (they are tiny and llama.cpp computes
norms in f32); 2-D weights take the outtype; q8_0 needs rows that are a multiple of its 32-element
block and falls back to F16 otherwise.
"""

from __future__ import annotations

from math import prod

import gguf
import numpy as np

from ra_lite.errors import RaLiteError

Q = gguf.GGMLQuantizationType
OUTTYPES: dict[str, tuple[gguf.LlamaFileType, Q]] = {
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
}
# Source dtypes whose bytes can be copied unchanged into a tensor of this GGML type.
_SAME_BYTES = {("BF16", Q.BF16), ("F16", Q.F16), ("F32", Q.F32)}


def check_outtype(outtype: str) -> str:
    if outtype.lower() not in OUTTYPES:
        raise RaLiteError(f"unknown outtype {outtype!r}", f"choose one of {', '.join(OUTTYPES)}")
    return outtype.lower()


def tensor_type(outtype: str, shape: tuple[int, ...]) -> Q:
    if len(shape) == 1:
        return Q.F32
    target = OUTTYPES[outtype][1]
    block_size = gguf.GGML_QUANT_SIZES[target][0]
    if shape[-1] % block_size != 0:
        return Q.F16
    return target


def tensor_nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    return prod(shape) // block_size * type_size


def copies_raw_bytes(src_dtype: str, qtype: Q) -> bool:
    """bf16 -> BF16 etc.: copy the bytes (exact, and the fastest path by far)."""
    return (src_dtype, qtype) in _SAME_BYTES


def encode_rows(rows_f32: np.ndarray, qtype: Q, tensor_name: str) -> np.ndarray:
    """Encode a (rows, cols) float32 chunk as `qtype`; the result's bytes go straight into the file."""
    if qtype == Q.F32:
        return np.ascontiguousarray(rows_f32, dtype=np.float32)
    if qtype == Q.F16:
        out = rows_f32.astype(np.float16)
        # bf16 reaches 3e38, f16 only 65504: an overflow would become inf and poison every logit.
        if not np.isfinite(out).all() and np.isfinite(rows_f32).all():
            raise RaLiteError(f"tensor {tensor_name} has values outside the float16 range",
                              "convert with --outtype bf16 or f32 instead")
        return out
    # BF16 (round-to-nearest-even, as ggml does) and Q8_0 (bit-exact with ggml's reference quantizer).
    return gguf.quants.quantize(np.ascontiguousarray(rows_f32, dtype=np.float32), qtype)
