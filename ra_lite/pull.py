"""`ra-lite pull`: get a GGUF into the local cache, verified.

    pull("rewardanything-8b:Q4_K_M")       # the registry's published file, sha256-checked
    pull("hf://owner/repo/x-Q4_K_M.gguf")  # any Hub GGUF, checked against the Hub's LFS hash
    pull("rewardanything-8b:Q4_K_M", from_source=True)   # download the checkpoint, convert, quantize

Downloads go through huggingface_hub into the standard cache (HF_HOME), so they are resumable
(an interrupted download continues from its `.incomplete` file), show a progress bar, honour
HF_HUB_OFFLINE and HF_ENDPOINT, and are shared with every other Hugging Face tool. A file whose
sha256 does not match is deleted from the cache before the error is raised: nothing unverified is
left where a later load would pick it up. Files built from source live in ra_lite_home()/models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import click

from ra_lite.atomic_files import replace_into
from ra_lite.errors import RaLiteError
from ra_lite.file_hash import remembered_sha256
from ra_lite.notices import print_notice
from ra_lite.model_ref import (ModelRef, hub_cache_dir, hub_offline, parse_model_ref, ra_lite_home,
                              registry_path)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class PullResult:
    ref: str
    path: Path
    repo: str | None
    file: str | None
    revision: str | None
    sha256: str | None
    size_bytes: int
    source: str          # "download", "cache", "local-build" (found) or "converted" (built now)
    verified: bool       # sha256 checked against the registry or the Hub's LFS hash
    checked_against: str | None = None   # "registry", "hub-lfs" or None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def pull(ref: str, *, from_source: bool = False, force: bool = False,
         registry: str | Path | None = None, endpoint: str | None = None,
         cache_dir: str | Path | None = None, keep_f16: bool = False, progress: bool = True,
         offline: bool | None = None, notify=None, imatrix: bool = True) -> PullResult:
    """Make the GGUF named by `ref` available locally and return where it is.

    force: download (or rebuild) even when a copy is already there. endpoint / cache_dir: passed to
    huggingface_hub (default: HF_ENDPOINT / HF_HOME). keep_f16: with from_source, keep the
    intermediate F16 GGUF (as large as the checkpoint) instead of deleting it. offline: only
    look in the cache (default: HF_HUB_OFFLINE). imatrix: with from_source, quantize types at or
    below 4 bits with an importance matrix collected on ra-lite's calibration set (the default).
    """
    offline = hub_offline() if offline is None else offline
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    cache_dir = cache_dir or hub_cache_dir()
    notify = notify or (lambda message: None)
    parsed = parse_model_ref(ref, registry)
    if parsed.kind == "hf":
        if from_source:
            raise RaLiteError("--from-source needs a registry name (it knows the source checkpoint)",
                              "pull the hf:// file as is, or pass a registry name such as "
                              "rewardanything-8b:Q4_K_M")
        return _fetch(parsed, None, force=force, endpoint=endpoint, cache_dir=cache_dir,
                      progress=progress, offline=offline)
    if parsed.kind != "registry":
        raise RaLiteError(f"{ref or 'the embedded model'} is a local file, there is nothing to pull",
                          "pass a registry name (rewardanything-8b:Q4_K_M) or hf://owner/repo/file.gguf")
    from ra_lite.models.registry import parse_model_ref as parse_registry_ref

    entry, quant = parse_registry_ref(ref, registry or registry_path())
    artifact = entry.gguf_artifacts.get(quant)
    built = local_build_path(entry, quant)
    if from_source:
        if built.exists() and not force:
            return _local_result(ref, built, "local-build")
        return _local_result(ref, build_from_source(entry, quant, keep_f16=keep_f16,
                                                    progress=progress, notify=notify,
                                                    imatrix=imatrix, force=force), "converted")
    if artifact is None:
        if built.exists():
            return _local_result(ref, built, "local-build")
        raise RaLiteError(f"no GGUF file is published for {entry.name}:{quant} yet",
                          f"build it here: ra-lite pull {entry.name}:{quant} --from-source "
                          "(downloads the original checkpoint, then converts and quantizes it)")
    return _fetch(parsed, artifact.sha256, force=force, endpoint=endpoint, cache_dir=cache_dir,
                  progress=progress, offline=offline)


def local_build_path(entry, quant: str) -> Path:
    """Where `--from-source` puts its output (quantize's own naming: <name>-<QUANT>.gguf)."""
    return ra_lite_home() / "models" / entry.name / f"{entry.display_name}-{quant}.gguf"


def _local_result(ref: str, path: Path, source: str) -> PullResult:
    return PullResult(ref=ref, path=path, repo=None, file=path.name, revision=None, sha256=None,
                      size_bytes=path.stat().st_size, source=source, verified=False)


def _fetch(ref: ModelRef, expected_sha: str | None, *, force: bool, endpoint, cache_dir,
           progress: bool, offline: bool) -> PullResult:
    import huggingface_hub

    where = f"{ref.repo}/{ref.file}" + (f"@{ref.revision}" if ref.revision else "")
    cached = None if force else huggingface_hub.try_to_load_from_cache(
        ref.repo, ref.file, cache_dir=cache_dir, revision=ref.revision)
    if isinstance(cached, str) and Path(cached).exists():
        path, source = Path(cached), "cache"
    else:
        if offline:
            raise RaLiteError(f"offline (HF_HUB_OFFLINE) and {where} is not in the Hugging Face cache",
                              f"unset HF_HUB_OFFLINE and run `ra-lite pull {ref.text}` once while "
                              "online, or pass a local .gguf path")
        path, source = Path(_download(ref, where, force, endpoint, cache_dir, progress)), "download"
    blob = path.resolve()
    # The Hub stores LFS files under their sha256 (the ETag), which hf_hub_download uses as the
    # blob name: a free second opinion for hf:// files the registry knows nothing about.
    hub_sha = blob.name if _SHA256.match(blob.name) else None
    expected, against = (expected_sha, "registry") if expected_sha else (hub_sha, "hub-lfs")
    actual = None
    if expected:
        actual = remembered_sha256(blob, progress=progress and source == "download")
        if actual != expected:
            _delete_cached(path)
            raise RaLiteError(
                f"checksum mismatch for {where}: expected sha256 {expected} ({against}), got "
                f"{actual}; the file was deleted from the cache",
                f"run `ra-lite pull {ref.text}` again; if it fails the same way, the published "
                "file or its registry entry is wrong: report it")
    return PullResult(ref=ref.text, path=path, repo=ref.repo, file=ref.file, revision=ref.revision,
                      sha256=actual, size_bytes=blob.stat().st_size, source=source,
                      verified=actual is not None, checked_against=against if actual else None)


def _download(ref: ModelRef, where: str, force: bool, endpoint, cache_dir, progress: bool) -> str:
    import huggingface_hub

    from ra_lite.hub import hub_errors

    kwargs = {} if progress else {"tqdm_class": _SilentTqdm()}
    with hub_errors(ref.repo, file=ref.file, revision=ref.revision, kind="model repository",
                    retry=f"run `ra-lite pull {ref.text}` again: the download resumes where it "
                          "stopped", offline_alternative="pass a local .gguf path"):
        return huggingface_hub.hf_hub_download(ref.repo, ref.file, revision=ref.revision,
                                               cache_dir=cache_dir, endpoint=endpoint,
                                               force_download=force, **kwargs)


def _SilentTqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


def _delete_cached(path: Path) -> None:
    """Remove the snapshot entry and the blob it points to (both, or a plain copied file)."""
    blob = path.resolve()
    blob.unlink(missing_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink(missing_ok=True)


def build_from_source(entry, quant: str, *, keep_f16: bool = False, progress: bool = True,
                      notify=None, imatrix: bool = True, force: bool = False) -> Path:
    """Download the entry's checkpoint, convert it to F16 GGUF, quantize it to `quant`.

    Needs room for the checkpoint (HF cache) plus the F16 file plus the output. For types at or
    below 4 bits (and imatrix=True) an importance matrix is collected on the F16 model first, on
    ra-lite's calibration set, and kept next to the output (<name>-imatrix.gguf) for reuse.
    """
    from ra_lite.convert.hf_to_gguf import convert
    from ra_lite.convert.quantize import benefits_from_imatrix, quantize

    notify = notify or (lambda message: None)
    out_dir = ra_lite_home() / "models" / entry.name
    out_dir.mkdir(parents=True, exist_ok=True)
    target = local_build_path(entry, quant)
    f16 = out_dir / f"{entry.display_name}-F16.gguf"
    approx = (entry.source_format or {}).get("approx_size_bytes")
    free = shutil.disk_usage(out_dir).free
    if approx and free < 2 * approx:
        notify(f"warning: {free / 1e9:.0f} GB free in {out_dir}; converting {entry.display_name} "
               f"needs about {2 * approx / 1e9:.0f} GB there (F16 file + output)")
    notify(f"building {target.name} from {entry.repo_id}@{entry.revision}: download, convert, "
           f"quantize")
    convert(entry.repo_id, f16, "f16", revision=entry.revision, force=True, progress=progress)
    try:
        imatrix_file = None
        if imatrix and benefits_from_imatrix(quant):
            # Named by the source revision: an imatrix is reused only for the same weights.
            revision = (entry.revision or "main")[:12]
            imatrix_file = _build_imatrix(
                f16, out_dir / f"{entry.display_name}-{revision}-imatrix.gguf", notify, force)
        elif benefits_from_imatrix(quant):
            notify(f"quantizing {quant} without an importance matrix (--no-imatrix)")
        results = quantize(f16, quant, out_dir=out_dir, force=True, progress=progress, imatrix=imatrix_file)
    finally:
        if not keep_f16:
            f16.unlink(missing_ok=True)
    produced = results[0].output
    if produced != target:   # quantize names outputs itself; keep ours stable for resolve_model
        replace_into(produced, target)
    return target


def _build_imatrix(f16: Path, target: Path, notify, force: bool) -> Path:
    """Collect (or, unless force, reuse) the importance matrix of the F16 model, on ra-lite's
    calibration set."""
    from ra_lite.convert.calibration import load_calibration
    from ra_lite.convert.imatrix import write_imatrix
    from ra_lite.convert.imatrix_collect import collect_imatrix

    if target.exists() and not force:
        notify(f"using the importance matrix {target} (delete it to collect a new one)")
        return target
    calibration = load_calibration()
    notify(f"types at or below 4 bits lose less with an importance matrix: collecting one on "
           f"{f16.name} over {calibration.name} (a few minutes on a CPU; --no-imatrix skips it)")
    result = collect_imatrix(f16, calibration.texts, datasets=[calibration.name])
    return write_imatrix(result.imatrix, target, force=True)


def resolve_model(model: str | Path | None, registry: str | Path | None = None) -> tuple[Path, bool]:
    """(path to a GGUF file, whether it is the embedded smoke-test model).

    Registry names and hf:// references are fetched into the Hugging Face cache when missing
    (checksum-verified, see ra_lite.pull) and found there offline afterwards.
    """
    ref = parse_model_ref(model, registry)
    if ref.kind in ("embedded", "path"):
        return ref.path, ref.kind == "embedded"
    return pull(ref.text, registry=registry).path, False


# --- `ra-lite pull` (registered lazily by ra_lite.cli) ----------------------------------------
@click.command("pull")
@click.argument("ref")
@click.option("--from-source", is_flag=True,
              help="Download the original checkpoint and convert + quantize it here.")
@click.option("--force", is_flag=True, help="Download (or rebuild) even if a copy is cached.")
@click.option("--keep-f16", is_flag=True, help="With --from-source, keep the F16 GGUF.")
@click.option("--no-imatrix", is_flag=True,
              help="With --from-source, quantize without an importance matrix (used by default "
                   "for types at or below 4 bits).")
@click.option("--registry", type=click.Path(dir_okay=False), default=None,
              help="Another registry file (default: the bundled one, or RA_LITE_REGISTRY).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def pull_command(ref, from_source, force, keep_f16, no_imatrix, registry, as_json):
    """Download REF into the Hugging Face cache and verify its sha256.

    REF: a registry name (rewardanything-8b:Q4_K_M) or hf://owner/repo/file.gguf[@revision].
    """
    result = pull(ref, from_source=from_source, force=force, registry=registry,
                  keep_f16=keep_f16, progress=not as_json, notify=print_notice, imatrix=not no_imatrix)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    check = f"sha256 verified ({result.checked_against})" if result.verified else \
        "no checksum known to verify against"
    click.echo(f"{result.path} ({result.size_bytes / 1e9:.2f} GB, {result.source}, {check})")
