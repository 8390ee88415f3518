"""Quantize a GGUF with llama.cpp's own quantizer, in-process, through llama-cpp-python's binding.

    from ra_lite.convert.quantize import quantize
    results = quantize("model-F16.gguf", ["Q4_K_M", "Q8_0"])   # -> model-Q4_K_M.gguf, model-Q8_0.gguf

K-quants only exist in llama.cpp (gguf-py cannot write them), so this is llama.cpp's
llama_model_quantize: the same code path as the `llama-quantize` tool, minus the executable.

With an importance matrix (`imatrix=`, from `ra-lite imatrix` or llama.cpp's llama-imatrix), the
quantizer weighs each column's rounding error by how large the activations that meet it are, which
matters most at 4 bits and below (see ra_lite.convert.imatrix). The imatrix is checked against the
model first: llama.cpp would quietly skip tensors whose entries are missing or of the wrong size.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ra_lite import atomic_files as atomic
from ra_lite.convert import manifest as manifest_mod
from ra_lite.errors import RaLiteError

# Quant types offered: every llama.cpp type that works without an importance matrix. Names are
# llama.cpp's; the code is the LLAMA_FTYPE_MOSTLY_* value.
QUANT_TYPES = {
    "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_K_S": 16, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15, "Q4_K_S": 14,
    "Q4_0": 2, "Q4_1": 3, "Q3_K_L": 13, "Q3_K_M": 12, "Q3_K_S": 11, "Q2_K": 10,
}
# Offered only with an importance matrix: the i-quants were designed around one, and llama.cpp
# refuses the lowest of them (IQ1_*, IQ2_XXS, IQ2_XS, Q2_K_S) without it.
IMATRIX_QUANT_TYPES = {
    "IQ4_XS": 30, "IQ4_NL": 25, "IQ3_M": 27, "IQ3_S": 26, "IQ3_XS": 22, "IQ3_XXS": 23, "IQ2_M": 29,
    "IQ2_S": 28, "IQ2_XS": 20, "IQ2_XXS": 19, "IQ1_M": 31, "IQ1_S": 24, "Q2_K_S": 21,
}
ALL_QUANT_TYPES = {**QUANT_TYPES, **IMATRIX_QUANT_TYPES}


def benefits_from_imatrix(quant_type: str) -> bool:
    """Types at or below 4 bits per weight, where an importance matrix measurably helps
    (llama.cpp's numbers: KLD -10 % at Q4_K_M, -17 % at Q3_K_M, -25 % at Q2_K)."""
    return quant_type in IMATRIX_QUANT_TYPES or quant_type[:2] in ("Q4", "Q3", "Q2")


# general.file_type values of unquantized inputs (ALL_F32, MOSTLY_F16, MOSTLY_BF16).
UNQUANTIZED_FILE_TYPES = {0: "F32", 1: "F16", 32: "BF16"}
_PRECISION_SUFFIX = re.compile(r"[-_.](f32|f16|bf16|q8_0)$", re.IGNORECASE)


@dataclass
class QuantizeResult:
    output: Path
    quant_type: str
    size_bytes: int
    sha256: str | None
    seconds: float
    source: Path
    manifest: Path | None = None
    imatrix: dict | None = None   # file, sha256, datasets, chunk_count, chunk_size

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(output=str(self.output), source=str(self.source), manifest=str(self.manifest) if self.manifest else None)
        return d


def parse_types(types: str | list[str] | tuple[str, ...], with_imatrix: bool = False) -> list[str]:
    names = [t.strip() for t in (types.split(",") if isinstance(types, str) else types) if t.strip()]
    offered = ALL_QUANT_TYPES if with_imatrix else QUANT_TYPES
    if not names:
        raise RaLiteError("no quant types given", f"pass --types, e.g. Q4_K_M (choose from {', '.join(offered)})")
    out = []
    for name in names:
        canonical = name.upper()
        if canonical in IMATRIX_QUANT_TYPES and not with_imatrix:
            raise RaLiteError(f"{canonical} needs an importance matrix",
                              "make one with `ra-lite imatrix MODEL -o imatrix.gguf` and pass --imatrix imatrix.gguf")
        if canonical not in offered:
            raise RaLiteError(f"unknown quant type {name!r}", f"choose from {', '.join(offered)}")
        if canonical not in out:
            out.append(canonical)
    return out


def output_path_for(src: Path, quant_type: str, out_dir: Path) -> Path:
    """model-F16.gguf -> model-Q4_K_M.gguf (the precision suffix is replaced, not stacked)."""
    stem = _PRECISION_SUFFIX.sub("", src.stem)
    return out_dir / f"{stem}-{quant_type}.gguf"


def _read_input_info(src: Path) -> dict:
    """general.file_type, provenance, and every tensor's GGUF shape (to check an imatrix against)."""
    import gguf
    try:
        reader = gguf.GGUFReader(src)
    except Exception as err:  # GGUFReader raises ValueError/struct errors/OSError on a bad file
        raise RaLiteError(f"{src} is not a readable GGUF file ({type(err).__name__}: {err})",
                          "pass a GGUF written by `ra-lite convert`") from err

    def field(key):
        f = reader.get_field(key)
        return None if f is None else f.contents()

    from ra_lite.convert.imatrix import weight_shapes

    return {"file_type": field("general.file_type"), "repo": field("general.source.repo_id"),
            "revision": field("general.source.revision"), "shapes": weight_shapes(reader)}


def _sync_bar(path: Path, bar) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        return
    if size > bar.n:
        bar.update(size - bar.n)


def _watch_size(path: Path, bar, stop: threading.Event) -> None:
    # llama.cpp writes tensors in order as it quantizes them, so the file's growth is the progress.
    while not stop.wait(0.5):
        _sync_bar(path, bar)


def _run_llama_quantize(src: Path, dst: Path, ftype: int, nthread: int, allow_requantize: bool,
                        verbose: bool, imatrix=None) -> None:
    """imatrix: a QuantizerImatrix (kept alive by the caller for the duration of the call)."""
    try:
        import llama_cpp
        from llama_cpp._logger import logger as llama_logger
    except ImportError as err:
        raise RaLiteError("llama-cpp-python is not installed", "install ra-lite with scripts/install.sh") from err
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    params.allow_requantize = allow_requantize
    if imatrix is not None:
        params.imatrix = imatrix.pointer
    # llama.cpp logs one line per tensor (hundreds for an 8B); keep errors only unless asked.
    previous_level = llama_logger.level
    if not verbose:
        llama_logger.setLevel(logging.ERROR)
    try:
        rc = llama_cpp.llama_model_quantize(os.fsencode(src), os.fsencode(dst), ctypes.byref(params))
    finally:
        llama_logger.setLevel(previous_level)
    if rc != 0:
        raise RaLiteError(f"llama.cpp failed to quantize {src.name} (return code {rc}); see its log above",
                          "check the input is a GGUF from `ra-lite convert` and that there is disk space")


def quantize(src: str | Path, types: str | list[str], *, out_dir: str | Path | None = None, force: bool = False,
             nthread: int | None = None, allow_requantize: bool = False, manifest: bool = True,
             manifest_path: str | Path | None = None, progress: bool = True,
             verbose: bool = False, imatrix: str | Path | None = None) -> list[QuantizeResult]:
    """Quantize `src` to each type in `types` (e.g. "Q4_K_M,Q8_0"); outputs go next to `src` unless out_dir.

    Every output path is checked before any work starts: existing files are refused unless force.
    allow_requantize: accept an already-quantized input (q8_0); quality suffers, so it is opt-in.
    verbose: show llama.cpp's per-tensor log (errors are always shown).
    imatrix: an importance-matrix GGUF for this model (checked against it before any work); its
    sha256 and calibration set are recorded in the manifest.
    """
    from tqdm import tqdm

    src = Path(src).expanduser()
    if not src.is_file():
        raise RaLiteError(f"{src} does not exist", "pass the GGUF written by `ra-lite convert`")
    quant_types = parse_types(types, with_imatrix=imatrix is not None)
    out_dir = Path(out_dir).expanduser() if out_dir else src.parent
    outputs = [output_path_for(src, q, out_dir) for q in quant_types]
    for out in outputs:
        if out.resolve() == src.resolve():
            raise RaLiteError(f"{out} would overwrite the input", "choose another --out-dir")
        atomic.check_destination(out, force)
    info = _read_input_info(src)
    if info["file_type"] not in UNQUANTIZED_FILE_TYPES and not allow_requantize:
        raise RaLiteError(f"{src.name} is already quantized (general.file_type={info['file_type']})",
                          "quantize from an f32/f16/bf16 GGUF, or pass --allow-requantize")
    quantizer_imatrix, imatrix_record = None, None
    if imatrix is not None:
        from ra_lite.convert import imatrix as imatrix_mod

        imatrix_path = Path(imatrix).expanduser()
        data = imatrix_mod.read_imatrix(imatrix_path)
        imatrix_mod.check_matches_model(data, info["shapes"], imatrix_name=imatrix_path.name, model_name=src.name)
        quantizer_imatrix = imatrix_mod.QuantizerImatrix(data)
        imatrix_record = {"file": imatrix_path.name, "sha256": manifest_mod.sha256_file(imatrix_path),
                          "datasets": data.datasets, "chunk_count": data.chunk_count,
                          "chunk_size": data.chunk_size}
    nthread = nthread or os.cpu_count() or 1
    manifest_file = Path(manifest_path) if manifest_path else manifest_mod.default_manifest_path(outputs[0])
    parent = None
    if manifest:
        parent = {"file": manifest_mod.file_name_for(manifest_file, src), "sha256": manifest_mod.sha256_file(src, progress)}
    try:
        import llama_cpp
        binding_version = llama_cpp.__version__
    except ImportError:
        binding_version = None

    results = []
    for quant_type, out in zip(quant_types, outputs):
        started = time.perf_counter()
        with atomic.atomic_destination(out, force) as tmp:
            stop = threading.Event()
            with tqdm(unit="B", unit_scale=True, desc=f"quantize {quant_type}", file=sys.stderr,
                      disable=not progress) as bar:
                watcher = threading.Thread(target=_watch_size, args=(tmp, bar, stop), daemon=True)
                watcher.start()
                try:
                    _run_llama_quantize(src, tmp, ALL_QUANT_TYPES[quant_type], nthread, allow_requantize,
                                        verbose, quantizer_imatrix)
                finally:
                    stop.set()
                    watcher.join()
                _sync_bar(tmp, bar)
        result = QuantizeResult(output=out, quant_type=quant_type, size_bytes=out.stat().st_size, sha256=None,
                                seconds=time.perf_counter() - started, source=src, imatrix=imatrix_record)
        if manifest:
            result.sha256 = manifest_mod.sha256_file(out, progress)
            result.manifest = manifest_file
            manifest_mod.record(manifest_file, manifest_mod.ManifestEntry(
                file=manifest_mod.file_name_for(manifest_file, out), quant_type=quant_type,
                size_bytes=result.size_bytes, sha256=result.sha256, source_repo=info["repo"],
                source_revision=info["revision"], converter_version=manifest_mod.converter_version(),
                produced_by="quantize", parent=parent, llama_cpp_python_version=binding_version,
                imatrix=imatrix_record))
        results.append(result)
    return results
