"""The registry of known source checkpoints (models/registry.json), as validated dataclasses.

    from ra_lite.models.registry import load_registry, resolve, parse_model_ref
    entry = resolve("rewardanything-8b")              # ModelEntry
    entry, quant = parse_model_ref("rewardanything-8b:Q4_K_M")
    entry.gguf_artifacts["Q4_K_M"]                    # GgufArtifact or None (nothing published yet)

The schema is documented in models/README.md. Loading validates every field, so a typo in the
data file fails loudly at the first use instead of producing a wrong download later.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from ra_lite.errors import RaLiteError

REGISTRY_PATH = Path(__file__).with_name("registry.json")
SCHEMA_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
LICENSE_STATUSES = ("verified", "unverified")


@dataclass(frozen=True)
class GgufArtifact:
    """A published GGUF file for one quant type."""

    repo: str
    file: str
    sha256: str
    size_bytes: int | None = None
    revision: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LicenseInfo:
    spdx: str | None
    status: str  # "verified" or "unverified"
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    display_name: str
    description: str
    repo_ids: tuple[str, ...]  # first one is canonical; the rest are mirrors
    revision: str
    revision_pinned: bool
    revision_note: str | None
    architecture: str
    gguf_architecture: str
    parameters: str
    source_format: dict
    license: LicenseInfo
    recommended_quants: tuple[str, ...]
    default_quant: str
    gguf_artifacts: dict[str, GgufArtifact | None] = field(default_factory=dict)

    @property
    def repo_id(self) -> str:
        return self.repo_ids[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["repo_ids"] = list(self.repo_ids)
        d["recommended_quants"] = list(self.recommended_quants)
        d["gguf_artifacts"] = {q: (a.to_dict() if a else None) for q, a in self.gguf_artifacts.items()}
        return d


def _bad(where: str, why: str) -> RaLiteError:
    return RaLiteError(f"model registry: {where}: {why}", "fix models/registry.json (schema in models/README.md)")


def _field(raw: dict, key: str, kind, where: str, optional: bool = False):
    if key not in raw or raw[key] is None:
        if optional:
            return None
        raise _bad(where, f"missing {key!r}")
    if not isinstance(raw[key], kind) or (kind is int and isinstance(raw[key], bool)):
        raise _bad(where, f"{key!r} should be {getattr(kind, '__name__', kind)}")
    return raw[key]


def _artifact(raw, where: str) -> GgufArtifact | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _bad(where, "an artifact is an object or null")
    sha = _field(raw, "sha256", str, where)
    if not _SHA256.match(sha):
        raise _bad(where, "sha256 must be 64 lowercase hex digits")
    repo = _field(raw, "repo", str, where)
    if not _REPO_ID.match(repo):
        raise _bad(where, f"repo {repo!r} is not an org/name repo id")
    return GgufArtifact(repo=repo, file=_field(raw, "file", str, where), sha256=sha,
                        size_bytes=_field(raw, "size_bytes", int, where, optional=True),
                        revision=_field(raw, "revision", str, where, optional=True))


def _entry(raw: dict) -> ModelEntry:
    if not isinstance(raw, dict):
        raise _bad("models", "each model is an object")
    name = _field(raw, "name", str, "model")
    where = f"model {name!r}"
    if not _NAME.match(name):
        raise _bad(where, "name must be lowercase letters, digits, '.' and '-'")
    repo_ids = tuple(_field(raw, "repo_ids", list, where))
    if not repo_ids or not all(isinstance(r, str) and _REPO_ID.match(r) for r in repo_ids):
        raise _bad(where, "repo_ids must be a non-empty list of org/name ids")
    lic = _field(raw, "license", dict, where)
    status = _field(lic, "status", str, where + " license")
    if status not in LICENSE_STATUSES:
        raise _bad(where, f"license status must be one of {LICENSE_STATUSES}")
    artifacts_raw = _field(raw, "gguf_artifacts", dict, where)
    artifacts = {q: _artifact(a, f"{where} artifact {q}") for q, a in artifacts_raw.items()}
    recommended = tuple(_field(raw, "recommended_quants", list, where))
    default_quant = _field(raw, "default_quant", str, where)
    for quant in (*recommended, default_quant):
        if quant not in artifacts:
            raise _bad(where, f"quant {quant!r} has no slot in gguf_artifacts (use null when nothing is published)")
    return ModelEntry(
        name=name, display_name=_field(raw, "display_name", str, where),
        description=_field(raw, "description", str, where, optional=True) or "",
        repo_ids=repo_ids, revision=_field(raw, "revision", str, where),
        revision_pinned=_field(raw, "revision_pinned", bool, where),
        revision_note=_field(raw, "revision_note", str, where, optional=True),
        architecture=_field(raw, "architecture", str, where),
        gguf_architecture=_field(raw, "gguf_architecture", str, where),
        parameters=_field(raw, "parameters", str, where),
        source_format=_field(raw, "source_format", dict, where, optional=True) or {},
        license=LicenseInfo(spdx=_field(lic, "spdx", str, where, optional=True), status=status,
                            note=_field(lic, "note", str, where + " license")),
        recommended_quants=recommended, default_quant=default_quant, gguf_artifacts=artifacts)


def parse_registry(data: dict) -> list[ModelEntry]:
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise _bad("top level", f"schema_version must be {SCHEMA_VERSION}")
    models = [_entry(m) for m in _field(data, "models", list, "top level")]
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise _bad("models", "duplicate model names")
    return models


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> tuple[ModelEntry, ...]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RaLiteError(f"cannot read the model registry {path}: {err}", "reinstall ra-lite") from err
    return tuple(parse_registry(data))


def load_registry(path: str | Path | None = None) -> list[ModelEntry]:
    """All known models, validated. `path` defaults to the registry.json shipped with ra-lite."""
    p = Path(path) if path else REGISTRY_PATH
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise RaLiteError(f"cannot read the model registry {p}: {err.strerror}", "reinstall ra-lite") from err
    return list(_load_cached(str(p), mtime))


def find_model(name: str, path: str | Path | None = None) -> ModelEntry | None:
    """The entry whose short name (case-insensitive) or any repo id matches `name`, else None."""
    wanted = name.strip().lower()
    for entry in load_registry(path):
        if wanted == entry.name or wanted in (r.lower() for r in entry.repo_ids):
            return entry
    return None


def resolve(name: str, path: str | Path | None = None) -> ModelEntry:
    entry = find_model(name, path)
    if entry is None:
        known = ", ".join(e.name for e in load_registry(path))
        raise RaLiteError(f"unknown model {name!r}", f"known models: {known}")
    return entry


def parse_model_ref(ref: str, path: str | Path | None = None) -> tuple[ModelEntry, str]:
    """'rewardanything-8b:Q4_K_M' -> (entry, 'Q4_K_M'); without ':QUANT' the entry's default_quant."""
    name, _, quant = ref.partition(":")
    entry = resolve(name, path)
    if not quant:
        return entry, entry.default_quant
    matches = [q for q in entry.gguf_artifacts if q.lower() == quant.lower()]
    if not matches:
        raise RaLiteError(f"{entry.name} has no quant {quant!r}", f"choose one of {', '.join(entry.gguf_artifacts)}")
    return entry, matches[0]
