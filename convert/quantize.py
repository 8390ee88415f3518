"""Quantize a GGUF with llama.cpp's own quantizer, in-process, through llama-cpp-python's binding.

    from ra_lite.convert.quantize import quantize
    results = quantize("model-F16.gguf", ["Q4_K_M", "Q8_0"])   # -> model-Q4_K_M.gguf, model-Q8_0.gguf

K-quants only exist in llama.cpp (gguf-py cannot write them), so this is llama.cpp's
llama_model_quantize: the same code path as the `llama-quantize` tool, minus the executable.

No importance matrix: llama_model_quantize accepts one (`params.imatrix`), but computing it needs an
activation-statistics pass over calibration text (llama.cpp's `llama-imatrix` tool, which
llama-cpp-python does not ship) and a calibration corpus representative of reward-model prompts,
which ra-lite does not have. Offering the option without an honest source of data would be worse
than leaving it out.
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

from ra_lite.convert import atomic, manifest as manifest_mod
from ra_lite.errors import RaLiteError

# Quant types offered: every llama.cpp type that works without an importance matrix (the IQ* types
# and Q2_K_S require one). Names are llama.cpp's; the code is the LLAMA_FTYPE_MOSTLY_* value.
QUANT_TYPES = {
    "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q5_K_S": 16, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15, "Q4_K_S": 14,
    "Q4_0": 2, "Q4_1": 3, "Q3_K_L": 13, "Q3_K_M": 12, "Q3_K_S": 11, "Q2_K": 10,
}
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

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(output=str(self.output), source=str(self.source), manifest=str(self.manifest) if self.manifest else None)
        return d


def parse_types(types: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [t.strip() for t in (types.split(",") if isinstance(types, str) else types) if t.strip()]
    if not names:
        raise RaLiteError("no quant types given", f"pass --types, e.g. Q4_K_M (choose from {', '.join(QUANT_TYPES)})")
    out = []
    for name in names:
        canonical = name.upper()
        if canonical not in QUANT_TYPES:
            raise RaLiteError(f"unknown quant type {name!r}", f"choose from {', '.join(QUANT_TYPES)}")
        if canonical not in out:
            out.append(canonical)
    return out


def output_path_for(src: Path, quant_type: str, out_dir: Path) -> Path:
    """model-F16.gguf -> model-Q4_K_M.gguf (the precision suffix is replaced, not stacked)."""
    stem = _PRECISION_SUFFIX.sub("", src.stem)
    return out_dir / f"{stem}-{quant_type}.gguf"


def _read_input_info(src: Path) -> dict:
    import gguf
    try:
        reader = gguf.GGUFReader(src)
    except Exception as err:  # GGUFReader raises ValueError/struct errors/OSError on a bad file
        raise RaLiteError(f"{src} is not a readable GGUF file ({type(err).__name__}: {err})",
                          "pass a GGUF written by `ra-lite convert`") from err

    def field(key):
        f = reader.get_field(key)
        return None if f is None else f.contents()

    return {"file_type": field("general.file_type"), "repo": field("general.source.repo_id"),
            "revision": field("general.source.revision")}


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
                        verbose: bool) -> None:
    try:
        import llama_cpp
        from llama_cpp._logger import logger as llama_logger
    except ImportError as err:
        raise RaLiteError("llama-cpp-python is not installed", "install ra-lite with scripts/install.sh") from err
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    params.allow_requantize = allow_requantize
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
             verbose: bool = False) -> list[QuantizeResult]:
    """Quantize `src` to each type in `types` (e.g. "Q4_K_M,Q8_0"); outputs go next to `src` unless out_dir.

    Every output path is checked before any work starts: existing files are refused unless force.
    allow_requantize: accept an already-quantized input (q8_0); quality suffers, so it is opt-in.
    verbose: show llama.cpp's per-tensor log (errors are always shown).
    """
    from tqdm import tqdm

    src = Path(src).expanduser()
    if not src.is_file():
        raise RaLiteError(f"{src} does not exist", "pass the GGUF written by `ra-lite convert`")
    quant_types = parse_types(types)
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
                    _run_llama_quantize(src, tmp, QUANT_TYPES[quant_type], nthread, allow_requantize, verbose)
                finally:
                    stop.set()
                    watcher.join()
                _sync_bar(tmp, bar)
        result = QuantizeResult(output=out, quant_type=quant_type, size_bytes=out.stat().st_size, sha256=None,
                                seconds=time.perf_counter() - started, source=src)
        if manifest:
            result.sha256 = manifest_mod.sha256_file(out, progress)
            result.manifest = manifest_file
            manifest_mod.record(manifest_file, manifest_mod.ManifestEntry(
                file=manifest_mod.file_name_for(manifest_file, out), quant_type=quant_type,
                size_bytes=result.size_bytes, sha256=result.sha256, source_repo=info["repo"],
                source_revision=info["revision"], converter_version=manifest_mod.converter_version(),
                produced_by="quantize", parent=parent, llama_cpp_python_version=binding_version))
        results.append(result)
    return results
