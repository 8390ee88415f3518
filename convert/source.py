"""Where the checkpoint comes from: a local directory, a Hub repo id, or a registry short name.

Provenance (repo id + revision) travels into the GGUF and the manifest, so we work it out here:
a Hub download knows its commit; a local directory inside the HF cache (models--org--name/snapshots/<sha>)
reveals it from its path; any other local directory only knows what the user tells us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ra_lite.errors import RaLiteError

# Only what the converter reads: never the .bin/.pt duplicates many repos also ship.
HUB_ALLOW_PATTERNS = [
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class SourceInfo:
    directory: Path
    repo_id: str | None
    revision: str | None
    downloaded: bool

    def to_dict(self) -> dict:
        return {"directory": str(self.directory), "repo_id": self.repo_id, "revision": self.revision,
                "downloaded": self.downloaded}


def _from_hf_cache_path(directory: Path) -> tuple[str | None, str | None]:
    parts = directory.resolve().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        repo = parts[-3][len("models--"):].replace("--", "/", 1)
        return repo, parts[-1]
    return None, None


def download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise RaLiteError("huggingface-hub is not installed", "pip install huggingface-hub") from err
    from ra_lite.hub import hub_errors

    with hub_errors(repo_id, revision=revision, kind="model repository",
                    retry="or download the checkpoint yourself and pass its directory",
                    offline_alternative="pass a local checkpoint directory"):
        return Path(snapshot_download(repo_id=repo_id, revision=revision, allow_patterns=HUB_ALLOW_PATTERNS))


def resolve_source(src: str | Path, revision: str | None = None, source_repo: str | None = None,
                   source_revision: str | None = None) -> SourceInfo:
    """Find the checkpoint directory for `src`, downloading from the Hub if `src` is a repo id."""
    path = Path(src).expanduser()
    if path.is_dir():
        repo, rev = _from_hf_cache_path(path)
        return SourceInfo(path, source_repo or repo, source_revision or rev, downloaded=False)
    if path.exists():
        raise RaLiteError(f"{src} is a file, not a checkpoint directory", "pass the directory holding config.json")

    text = str(src)
    from ra_lite.models.registry import find_model
    entry = find_model(text)
    if entry is not None:
        text, revision = entry.repo_ids[0], revision or entry.revision
    if not _REPO_ID.match(text):
        raise RaLiteError(f"{src} is not a directory, a Hub repo id (org/name) or a known model name",
                          "pass a local checkpoint directory or a repo id like WisdomShell/RewardAnything-8B-v1")
    directory = download(text, revision)
    rev = directory.name if _COMMIT.match(directory.name) else revision
    return SourceInfo(directory, source_repo or text, source_revision or rev, downloaded=True)
