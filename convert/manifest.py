"""A JSON manifest of produced GGUF files: what each one is, its hash, and where it came from.

One manifest per output directory (`manifest.json` next to the files), one entry per file name;
re-producing a file replaces its entry. Publishers upload the manifest with the files so that users
(and `ra-lite pull`) can check the sha256 and see the exact source revision and converter version.

{"schema_version": 1, "artifacts": [{"file": "x-Q4_K_M.gguf", "quant_type": "Q4_K_M", "size_bytes": ...,
  "sha256": "...", "source_repo": "WisdomShell/RewardAnything-8B-v1", "source_revision": "<commit>|main|null",
  "converter_version": "ra-lite 0.1.0 (converter 1)", "produced_by": "convert|quantize",
  "parent": {"file": ..., "sha256": ...} | null, "llama_cpp_python_version": ... | null, "created_at": ISO-8601,
  "imatrix": {"file", "sha256", "datasets": [...], "chunk_count", "chunk_size"} | null}]}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ra_lite.atomic_files import write_atomic, write_error
from ra_lite.errors import RaLiteError

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1
# Bump when the converter's output changes for the same input (new metadata, different tensor types).
CONVERTER_FORMAT = 1


def converter_version() -> str:
    try:
        from importlib.metadata import version
        package = version("ra-lite")
    except Exception:  # running from a source tree that was never installed
        package = "unknown"
    return f"ra-lite {package} (converter {CONVERTER_FORMAT})"


@dataclass
class ManifestEntry:
    file: str
    quant_type: str
    size_bytes: int
    sha256: str
    source_repo: str | None
    source_revision: str | None
    converter_version: str
    produced_by: str
    parent: dict | None = None
    llama_cpp_python_version: str | None = None
    created_at: str = ""
    imatrix: dict | None = None   # the importance matrix a quant was made with, and its calibration set

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    from tqdm import tqdm
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                     disable=not progress, leave=False) as bar:
        while block := f.read(16 << 20):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def default_manifest_path(output: Path) -> Path:
    return Path(output).parent / MANIFEST_NAME


def load_manifest(path: Path) -> dict:
    if not Path(path).is_file():
        return {"schema_version": SCHEMA_VERSION, "artifacts": []}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data.get("artifacts"), list):
            raise ValueError("no 'artifacts' list")
        return data
    except (OSError, ValueError, AttributeError) as err:
        raise RaLiteError(f"{path} is not a ra-lite manifest ({err})", "move it away or pass another --manifest") from err


def record(manifest_path: Path, entry: ManifestEntry) -> None:
    """Add or replace the entry for entry.file; the manifest itself is rewritten atomically."""
    manifest_path = Path(manifest_path)
    data = load_manifest(manifest_path)
    if not entry.created_at:
        entry.created_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    data["schema_version"] = SCHEMA_VERSION
    data["artifacts"] = [a for a in data["artifacts"] if a.get("file") != entry.file] + [entry.to_dict()]
    data["artifacts"].sort(key=lambda a: a.get("file", ""))
    try:
        write_atomic(manifest_path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
    except OSError as err:
        raise write_error(manifest_path, err, "choose a writable --manifest path") from err


def file_name_for(manifest_path: Path, produced: Path) -> str:
    """Relative to the manifest's directory when the file lives there (the normal case)."""
    try:
        return str(Path(produced).resolve().relative_to(Path(manifest_path).resolve().parent))
    except ValueError:
        return str(Path(produced).resolve())
