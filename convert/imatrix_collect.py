"""Collect an importance matrix in-process, the way llama.cpp's `llama-imatrix` does.

    from ra_lite.convert.imatrix_collect import collect_imatrix
    imatrix = collect_imatrix("model-F16.gguf", chunks)      # chunks: lists of token ids

llama.cpp calls a context's eval callback (`cb_eval`) for every node of the compute graph, first
with ask=True ("do you want this tensor's data?") and, if we said yes, again with ask=False once
it is computed. We accept MUL_MAT nodes whose src0 is a weight of a block (`blk.N.*.weight`) and
whose src1, the activation, is F32; on the second call we read src1 and add x_j^2 over its rows to
that weight's statistics, exactly as tools/imatrix/imatrix.cpp (IMatrixCollector::collect_imatrix).

llama-cpp-python has no ggml_tensor struct, so it is declared here from the vendored ggml.h and its
size is checked against the library (ggml_tensor_overhead) before the first use.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ra_lite.convert.imatrix import Imatrix, ImatrixEntry
from ra_lite.errors import RaLiteError

GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_MAX_NAME = 64
GGML_TYPE_F32 = 0
GGML_OBJECT_SIZE = 32   # struct ggml_object {size_t offs, size; ggml_object *next; enum type; char pad[4]}
# llama-imatrix ignores matmuls over fewer rows than this (single-token decode steps).
MIN_ROWS = 16


class GgmlTensor(ctypes.Structure):
    """struct ggml_tensor of ggml.h (llama-cpp-python 0.3.36's vendored ggml)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def _ggml():
    """The ggml functions we call, with their signatures declared."""
    from llama_cpp._ggml import libggml as lib

    lib.ggml_op_name.argtypes, lib.ggml_op_name.restype = [ctypes.c_int], ctypes.c_char_p
    lib.ggml_nbytes.argtypes, lib.ggml_nbytes.restype = [ctypes.c_void_p], ctypes.c_size_t
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    lib.ggml_tensor_overhead.argtypes, lib.ggml_tensor_overhead.restype = [], ctypes.c_size_t
    tensor_size = lib.ggml_tensor_overhead() - GGML_OBJECT_SIZE
    if tensor_size != ctypes.sizeof(GgmlTensor):
        raise RaLiteError(f"this llama.cpp build's ggml_tensor is {tensor_size} bytes, ra-lite expects "
                          f"{ctypes.sizeof(GgmlTensor)}", "install the llama-cpp-python version ra-lite "
                          "supports (0.3.36) with scripts/install.sh")
    return lib


def weight_name(tensor_name: str) -> str:
    """Strip backend decorations: 'CUDA0#blk.0.attn_k.weight#0' -> 'blk.0.attn_k.weight'."""
    if "#" in tensor_name:
        return tensor_name.split("#")[1]
    return tensor_name


class StatsCollector:
    """The cb_eval callback: accumulates sum of x^2 per input column of every block weight."""

    def __init__(self):
        self.lib = _ggml()
        self.sum2: dict[str, np.ndarray] = {}     # name -> float64 [n_mat, n_cols]
        self.counts: dict[str, np.ndarray] = {}   # name -> float64 [n_mat]
        self.error: BaseException | None = None
        self._op_names: dict[int, str] = {}
        # Keep a reference: ctypes frees the trampoline with the Python object.
        from llama_cpp import llama_cpp as binding
        self.callback = binding.ggml_backend_sched_eval_callback(self._on_tensor)

    def _op(self, op: int) -> str:
        if op not in self._op_names:
            self._op_names[op] = self.lib.ggml_op_name(op).decode()
        return self._op_names[op]

    def _on_tensor(self, tensor_ptr, ask, _user_data) -> bool:
        # An exception must not escape into C (ctypes would print it and return 0 = abort).
        try:
            return self._handle(tensor_ptr, ask)
        except BaseException as err:   # noqa: BLE001 - re-raised by collect_imatrix after decode
            self.error = err
            return False   # aborts the graph; llama_decode then fails and we raise self.error

    def _handle(self, tensor_ptr, ask) -> bool:
        t = GgmlTensor.from_address(tensor_ptr)
        op = self._op(t.op)
        if op not in ("MUL_MAT", "MUL_MAT_ID") or not t.src[0] or not t.src[1]:
            return False if ask else True
        src0 = GgmlTensor.from_address(t.src[0])
        src1 = GgmlTensor.from_address(t.src[1])
        name = weight_name(src0.name.decode(errors="replace"))
        if not name.startswith("blk."):
            return False if ask else True
        if op == "MUL_MAT_ID":
            raise RaLiteError(f"{name} is a mixture-of-experts weight",
                              "ra-lite imatrix supports dense models (Qwen3, Qwen2, Llama) only")
        if ask:
            return src1.ne[1] >= MIN_ROWS and src1.type == GGML_TYPE_F32
        self._accumulate(name, src0, src1)
        return True

    def _activations(self, src1: GgmlTensor) -> np.ndarray:
        """src1 as a float32 array [ne3, ne2, ne1, ne0], copied from device memory if needed."""
        nbytes = self.lib.ggml_nbytes(ctypes.addressof(src1))
        assert src1.nb[0] == 4, "activations must be contiguous rows of float32"
        if self.lib.ggml_backend_buffer_is_host(src1.buffer):
            raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(src1.data))
        else:
            raw = np.empty(nbytes, dtype=np.uint8)
            self.lib.ggml_backend_tensor_get(ctypes.addressof(src1), raw.ctypes.data, 0, nbytes)
        shape = tuple(int(src1.ne[i]) for i in reversed(range(GGML_MAX_DIMS)))
        strides = tuple(int(src1.nb[i]) for i in reversed(range(GGML_MAX_DIMS)))
        return np.lib.stride_tricks.as_strided(raw.view(np.float32), shape=shape, strides=strides,
                                               writeable=False)

    def _accumulate(self, name: str, src0: GgmlTensor, src1: GgmlTensor) -> None:
        x = self._activations(src1)                      # [ne3, ne2, ne1, n_cols]
        n_cols = int(src1.ne[0])
        assert n_cols == int(src0.ne[0]), (name, n_cols, src0.ne[0])
        # Dense 2-D weights only (MUL_MAT_ID is refused in _handle): every row of every batch
        # dimension of src1 is one token. Squares in float32 (as llama-imatrix), sums in float64.
        n_mat = 1
        assert int(src0.ne[2]) * int(src0.ne[3]) == 1, (name, "a stacked weight")
        rows2d = x.reshape(-1, n_cols)
        per_mat = np.multiply(rows2d, rows2d).sum(axis=0, dtype=np.float64)[None, :]
        rows = np.array([rows2d.shape[0]], dtype=np.float64)
        if not np.all(np.isfinite(per_mat)):
            raise RaLiteError(f"non-finite activations in {name}",
                              "the model produces NaN/inf on the calibration text; check the GGUF")
        if name not in self.sum2:
            self.sum2[name] = np.zeros((n_mat, n_cols))
            self.counts[name] = np.zeros(n_mat)
        assert self.sum2[name].shape == (n_mat, n_cols), (name, self.sum2[name].shape, (n_mat, n_cols))
        self.sum2[name] += per_mat
        self.counts[name] += rows

    def imatrix(self, datasets: list[str], chunk_count: int, chunk_size: int) -> Imatrix:
        entries = {n: ImatrixEntry(self.sum2[n], self.counts[n]) for n in sorted(self.sum2)}
        return Imatrix(entries=entries, datasets=datasets, chunk_count=chunk_count, chunk_size=chunk_size)


@dataclass
class CollectResult:
    imatrix: Imatrix
    n_chunks: int
    n_tokens: int
    seconds: float


def _load_model(path: Path, n_gpu_layers: int):
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
    if not model:
        raise RaLiteError(f"llama.cpp could not load {path} as a model",
                          "pass a model GGUF (from `ra-lite convert`) that llama.cpp can run; "
                          "`ra-lite info` shows what the file is")
    return model


def tokenize(model, text: str) -> list[int]:
    """Token ids of `text`, special tokens (chat markers) parsed, no BOS added."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    capacity = len(data) + 16
    buffer = (llama_cpp.llama_token * capacity)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, capacity, False, True)
    assert 0 <= n <= capacity, n
    return list(buffer[:n])


def model_text(model):
    """The loaded model's chat template and end-of-turn token text (for rendering judge records)."""
    import llama_cpp

    from ra_lite.convert.calibration import ModelText

    vocab = llama_cpp.llama_model_get_vocab(model)
    template = llama_cpp.llama_model_chat_template(model, None)
    template = template.decode("utf-8") if template else None
    if template is None or "<|im_end|>" in template:
        # ChatML (Qwen, SmolLM2; also ra-lite's fallback template) ends a turn with <|im_end|>,
        # which is not always the vocabulary's EOT token (SmolLM2's is <|endoftext|>).
        return ModelText(chat_template=template, end_of_turn="<|im_end|>\n")
    eot = llama_cpp.llama_vocab_eot(vocab)
    if eot < 0:
        eot = llama_cpp.llama_vocab_eos(vocab)
    piece = ""
    if eot >= 0:
        buffer = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(vocab, eot, buffer, len(buffer), 0, True)
        piece = buffer.raw[:max(n, 0)].decode("utf-8", errors="replace")
    return ModelText(chat_template=template, end_of_turn=piece)


def collect_imatrix(model_path: str | Path, texts: Sequence[str] | Callable[..., Sequence[str]], *, chunk_size: int = 512,
                    max_chunks: int | None = None, datasets: Sequence[str] = ("ra-lite calibration",),
                    n_threads: int | None = None, n_gpu_layers: int = 0,
                    progress: Callable[[int, int], None] | None = None,
                    verbose: bool = False) -> CollectResult:
    """Run `texts` through the model in chunks of `chunk_size` tokens and collect the statistics.

    texts: strings, or a function of the model's ModelText (chat template, end-of-turn text) that
    returns them, e.g. CalibrationSet.texts. The texts are tokenized, concatenated and cut into chunks like llama-imatrix's input file; the
    first token of each chunk is BOS when the model adds one. Every position requests its logits:
    otherwise llama.cpp keeps only the output rows before the last block's FFN, whose matmuls would
    then see one row and be skipped (llama-imatrix does the same). progress(done, total) is called
    after each chunk.
    """
    import time

    import llama_cpp
    from llama_cpp._logger import logger as llama_logger

    model_path = Path(model_path).expanduser()
    if not model_path.is_file():
        raise RaLiteError(f"{model_path} does not exist", "pass the GGUF model to calibrate on")
    if chunk_size < MIN_ROWS:
        raise RaLiteError(f"--chunk-size {chunk_size} is too small", f"use at least {MIN_ROWS} tokens")
    if max_chunks is not None and max_chunks < 1:
        raise RaLiteError(f"--chunks {max_chunks} is not a positive number", "pass --chunks 1 or more")
    previous_level = llama_logger.level
    if not verbose:
        llama_logger.setLevel(logging.ERROR)
    started = time.perf_counter()
    try:
        llama_cpp.llama_backend_init()
        collector = StatsCollector()
        model = _load_model(model_path, n_gpu_layers)
        ctx = None
        try:
            vocab = llama_cpp.llama_model_get_vocab(model)
            if callable(texts):
                texts = texts(model_text(model))
            stream: list[int] = []
            for text in texts:
                stream.extend(tokenize(model, text))
            chunks = [stream[i:i + chunk_size] for i in range(0, len(stream) - chunk_size + 1, chunk_size)]
            if max_chunks is not None:
                chunks = chunks[:max_chunks]
            if not chunks:
                raise RaLiteError(f"the calibration text is {len(stream)} tokens, less than one chunk "
                                  f"of {chunk_size}", "give more text (--data) or a smaller --chunk-size")
            if llama_cpp.llama_vocab_get_add_bos(vocab):
                bos = llama_cpp.llama_vocab_bos(vocab)
                chunks = [[bos] + c[1:] for c in chunks]
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = chunk_size
            cparams.n_batch = chunk_size
            cparams.n_ubatch = chunk_size   # one graph per chunk: every matmul sees all its rows
            cparams.n_seq_max = 1
            threads = n_threads or max(1, os.cpu_count() or 1)
            cparams.n_threads = cparams.n_threads_batch = threads
            cparams.cb_eval = collector.callback
            cparams.cb_eval_user_data = None
            ctx = llama_cpp.llama_init_from_model(model, cparams)
            if not ctx:
                raise RaLiteError(f"llama.cpp could not create a context for {model_path.name}",
                                  "free some memory or use a smaller --chunk-size")
            batch = llama_cpp.llama_batch_init(chunk_size, 0, 1)
            try:
                for done, chunk in enumerate(chunks, 1):
                    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
                    batch.n_tokens = len(chunk)
                    for i, token in enumerate(chunk):
                        batch.token[i] = token
                        batch.pos[i] = i
                        batch.n_seq_id[i] = 1
                        batch.seq_id[i][0] = 0
                        batch.logits[i] = True
                    rc = llama_cpp.llama_decode(ctx, batch)
                    if collector.error is not None:
                        raise collector.error
                    if rc != 0:
                        raise RaLiteError(f"llama.cpp failed to evaluate calibration chunk {done} "
                                          f"(llama_decode returned {rc})", "check the model runs: "
                                          f"ra-lite judge --model {model_path}")
                    if progress:
                        progress(done, len(chunks))
            finally:
                llama_cpp.llama_batch_free(batch)
        finally:
            if ctx:
                llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(model)
    finally:
        llama_logger.setLevel(previous_level)
    imatrix = collector.imatrix(list(datasets), chunk_count=len(chunks), chunk_size=chunk_size)
    if not imatrix.entries:
        raise RaLiteError(f"no weight matrix of {model_path.name} was seen during calibration",
                          "is this a transformer with blk.N.* weights? `ra-lite info` shows its tensors")
    return CollectResult(imatrix=imatrix, n_chunks=len(chunks), n_tokens=len(chunks) * chunk_size,
                         seconds=time.perf_counter() - started)
