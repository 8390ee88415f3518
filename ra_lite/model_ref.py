"""What a `--model` argument names: the embedded model, a local file, a registry entry or a Hub file.

    None / ""                           the embedded smoke-test model
    ./RewardAnything-8B-v1.Q4_K_M.gguf  a local file (anything that exists, ends in .gguf or has a /)
    rewardanything-8b[:Q4_K_M]          an entry of the model registry (models/registry.json)
    hf://owner/repo/path/file.gguf[@revision]   a GGUF file on the Hugging Face Hub

Registry and hf:// references resolve through the standard Hugging Face cache (`hf_hub_download`),
so a file pulled once is found again offline (HF_HUB_OFFLINE=1) and shared with other tools.
Nothing here touches the network on import; resolving a reference that is not cached downloads
it (see ra_lite.pull).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ra_lite.errors import RaLiteError

HF_SCHEME = "hf://"
# owner/repo/path/to/file.gguf, then an optional @revision (branch, tag or commit)
_HF_REF = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)/(?P<file>[^@]+?\.gguf)(?:@(?P<rev>.+))?$")


def ra_lite_home() -> Path:
    """ra-lite's own cache: GGUF files built locally by `pull --from-source`, verified checksums.

    RA_LITE_HOME overrides it; the default follows XDG (~/.cache/ra-lite, where install.sh keeps
    its wheels too).
    """
    explicit = os.environ.get("RA_LITE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "ra-lite"


def registry_path() -> str | None:
    """RA_LITE_REGISTRY points at another registry file (tests, private model lists)."""
    return os.environ.get("RA_LITE_REGISTRY") or None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment now (HF_HUB_CACHE, else HF_HOME/hub).

    huggingface_hub computes it once at import; reading it per call keeps a changed HF_HOME
    (tests, or a long-lived process) effective.
    """
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or str(Path(os.environ.get("XDG_CACHE_HOME") or
                                                  Path.home() / ".cache") / "huggingface")
    return Path(home).expanduser() / "hub"


from ra_lite.hub import hub_offline  # noqa: E402,F401  (re-exported; used by pull)


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. kind: "embedded", "path", "registry" or "hf"."""

    kind: str
    text: str
    path: Path | None = None          # path / embedded
    repo: str | None = None           # hf / registry (once the artifact is known)
    file: str | None = None
    revision: str | None = None
    name: str | None = None           # registry: entry name
    quant: str | None = None          # registry: quant type

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["path"] = str(self.path) if self.path else None
        return d


def parse_hf_ref(text: str) -> ModelRef:
    body = text[len(HF_SCHEME):]
    match = _HF_REF.match(body)
    if not match:
        raise RaLiteError(f"{text!r} is not an hf:// model reference",
                          "write hf://owner/repo/file.gguf, optionally with @revision at the end")
    return ModelRef("hf", text, repo=match["repo"], file=match["file"], revision=match["rev"])


def looks_like_path(text: str) -> bool:
    return text.endswith(".gguf") or "/" in text or os.sep in text or text.startswith((".", "~"))


def parse_model_ref(model: str | Path | None, registry: str | Path | None = None) -> ModelRef:
    """Classify a --model argument; raises RaLiteError for a name that is none of the four."""
    if model is None or str(model) == "":
        from ra_lite.embedded import embedded_model_path

        return ModelRef("embedded", "", path=embedded_model_path())
    if isinstance(model, Path):
        return ModelRef("path", str(model), path=model.expanduser())
    text = str(model)
    if text.startswith(HF_SCHEME):
        return parse_hf_ref(text)
    path = Path(text).expanduser()
    # An existing file always wins over a registry name that happens to be spelled the same.
    if path.exists() or looks_like_path(text):
        return ModelRef("path", text, path=path)
    from ra_lite.models.registry import find_model, load_registry, parse_model_ref as parse_registry_ref

    registry = registry or registry_path()
    if find_model(text.partition(":")[0], registry) is None:
        known = ", ".join(e.name for e in load_registry(registry))
        raise RaLiteError(f"model {text!r} is not a file, a known model name or an hf:// reference",
                          f"pass a .gguf path, a registry name ({known}, optionally :QUANT) or "
                          "hf://owner/repo/file.gguf")
    entry, quant = parse_registry_ref(text, registry)
    artifact = entry.gguf_artifacts.get(quant)
    return ModelRef("registry", text, name=entry.name, quant=quant,
                    repo=artifact.repo if artifact else None, file=artifact.file if artifact else None,
                    revision=artifact.revision if artifact else None)
