"""Per-item result cache for mini-RABench, keyed by (model sha256, settings, item id).

One small JSON file per judgment, written atomically as soon as it exists. This is what makes a
bench run resumable (a rerun finds what an interrupted one finished) and what lets a new quant be
compared with a reference without judging the reference again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ra_lite.judgment import Judgment

# Bump when the prompt, grammar or decoder change what a model would output for the same settings.
CACHE_FORMAT = 2   # 2: records say why reasoning ended (think_end)


@dataclass(frozen=True)
class BenchSettings:
    """Generation settings of a bench run. Greedy by default: differences between quants
    should come from the weights, not from sampling noise."""

    think_budget: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    n_ctx: int = 8192
    # Part of the key: judgments with and without the guard differ and must not be mixed.
    repetition_guard: bool = True

    def key(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


def _write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _safe(item_id: str) -> str:
    """Item ids come from user files: keep them from escaping the cache directory."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id)[:80]
    return f"{readable}-{hashlib.sha256(item_id.encode()).hexdigest()[:8]}"


class ResultCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def model_sha256(self, path: Path) -> str:
        """sha256 of a model file, remembered by (path, size, mtime): hashing 5 GB takes a while."""
        from ra_lite.convert.manifest import sha256_file

        stat = path.stat()
        memo_key = hashlib.sha256(
            f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
        memo = self.root / "file-hashes" / f"{memo_key}.txt"
        if memo.exists():
            return memo.read_text().strip()
        digest = sha256_file(path)
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(digest + "\n")
        return digest

    def _path(self, model_sha: str, settings: BenchSettings, kind: str, item_id: str) -> Path:
        return self.root / model_sha[:16] / settings.key() / kind / f"{_safe(item_id)}.json"

    def get_judgment(self, model_sha: str, settings: BenchSettings, item_id: str) -> dict | None:
        path = self._path(model_sha, settings, "judged", item_id)
        return json.loads(path.read_text("utf-8")) if path.exists() else None

    def put_judgment(self, model_sha: str, settings: BenchSettings, item_id: str,
                     judgment: Judgment | None, error: str | None = None) -> dict:
        record = {"id": item_id, "judgment": judgment.to_record() if judgment else None,
                  "error": error}
        _write_json_atomic(self._path(model_sha, settings, "judged", item_id), record)
        return record

    def get_replay(self, model_sha: str, settings: BenchSettings, reference_sha: str,
                   item_id: str) -> dict | None:
        path = self._path(model_sha, settings, f"replay-{reference_sha[:16]}", item_id)
        return json.loads(path.read_text("utf-8")) if path.exists() else None

    def put_replay(self, model_sha: str, settings: BenchSettings, reference_sha: str,
                   item_id: str, probabilities: dict[str, list[float]]) -> dict:
        record = {"id": item_id, "score_probabilities": probabilities}
        _write_json_atomic(self._path(model_sha, settings, f"replay-{reference_sha[:16]}", item_id),
                           record)
        return record
