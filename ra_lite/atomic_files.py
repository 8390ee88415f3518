"""Files written whole or not at all, and the one way an I/O failure is told to the user.

`replace_into` is the only rename into a final path in ra-lite (os.replace is atomic only within
one filesystem, so temp files live beside their destination); `write_atomic` writes bytes through
it, `atomic_destination` hands a temp path to a writer that streams (the converter, the
quantizer). `write_error` turns an OSError into a one-line RaLiteError with the fix.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from ra_lite.errors import RaLiteError


def write_error(path: Path, error: OSError, kept: str = "") -> RaLiteError:
    """One line for an I/O failure on `path`, with what to do about it (and, for a resumable
    output, what was kept)."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOSPC:
        fix = "free disk space (or write to another disk) and rerun"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "write to a directory you can write to"
    else:
        fix = "check the path and the disk, then rerun"
    return RaLiteError(f"cannot write {path}: {reason} (errno {error.errno})",
                       f"{fix}; {kept}" if kept else fix)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_into(tmp: Path, final: Path) -> None:
    """Move a finished temp file onto `final` durably: fsync it, rename, fsync the directory
    (not possible on every filesystem; the rename is atomic either way)."""
    fsync_path(Path(tmp))
    os.replace(tmp, final)
    with suppress(OSError):
        fsync_path(Path(final).parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all (a temp file beside it, then replace_into)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        replace_into(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_destination(final: Path, force: bool) -> None:
    """Fail early, before any expensive work, if `final` cannot or must not be written."""
    parent = final.parent
    if not parent.is_dir():
        raise RaLiteError(f"output directory {parent} does not exist" if not parent.exists()
                          else f"{parent} is not a directory",
                          "create the directory or choose another output path")
    if final.is_dir():
        raise RaLiteError(f"output path {final} is a directory", "give a file name ending in .gguf")
    if final.exists() and not force:
        raise RaLiteError(f"{final} already exists", "pass --force to overwrite it")
    if not os.access(parent, os.W_OK):
        raise RaLiteError(f"cannot write to {parent}", "choose a writable output location")


def temp_path_for(final: Path) -> Path:
    # Hidden, pid-tagged and clearly partial, so a crash leaves something obviously deletable.
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


@contextmanager
def atomic_destination(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; on success it is moved onto `final` (replace_into). The temp
    file is removed on any failure, Ctrl-C and a full disk included."""
    final = Path(final)
    check_destination(final, force)
    tmp = temp_path_for(final)
    try:
        yield tmp
        replace_into(tmp, final)
    except OSError as err:
        with suppress(OSError):
            tmp.unlink()
        raise write_error(final, err) from err
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
