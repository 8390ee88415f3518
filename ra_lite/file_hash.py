"""Whole-file sha256 of model files, computed once per file version.

Hashing a 5 GB GGUF takes tens of seconds, and three places need it: `pull` (checksum against
the registry or the Hub), the prompt cache (a saved KV state belongs to exactly one model) and
mini-RABench's result cache. They share one record per file, so a model hashed by one is never
hashed again by another while it is unchanged: same path, size, mtime and quick signature (a
hash of its first and last MiB, which catches a rewrite that kept size and mtime).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ra_lite.atomic_files import write_atomic

EDGE_BYTES = 1 << 20           # how much of each end of a file the quick signature hashes


def default_records_dir() -> Path:
    from ra_lite.model_ref import ra_lite_home

    return ra_lite_home() / "file-sha256"


def remembered_sha256(path: str | Path, records_dir: Path | None = None,
                      progress: bool = False) -> str:
    """The sha256 of `path`, from its record when the file is unchanged, else hashed (with a
    progress bar when asked) and recorded. A read-only record directory only costs re-hashing."""
    from ra_lite.convert.manifest import sha256_file

    path = Path(path).resolve()
    st = path.stat()
    with open(path, "rb") as f:
        quick = hashlib.sha256(f.read(EDGE_BYTES))
        if st.st_size > 2 * EDGE_BYTES:
            f.seek(st.st_size - EDGE_BYTES)
        quick.update(f.read(EDGE_BYTES))
    signature = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                 "quick_sha256": quick.hexdigest()}
    records_dir = records_dir if records_dir is not None else default_records_dir()
    record = records_dir / (hashlib.sha256(str(path).encode()).hexdigest()[:32] + ".json")
    try:
        saved = json.loads(record.read_text())
        if {k: saved.get(k) for k in signature} == signature and len(saved["sha256"]) == 64:
            return saved["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    sha = sha256_file(path, progress)
    try:
        write_atomic(record, json.dumps({**signature, "sha256": sha}).encode())
    except OSError:
        pass
    return sha
