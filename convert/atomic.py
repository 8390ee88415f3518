"""Write-to-temp-then-rename, so that a final path never holds a half-written file.

The temp file lives in the destination directory (os.replace is only atomic within one filesystem),
is fsynced before the rename, and is removed on any failure, Ctrl-C and a full disk included.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from ra_lite.errors import RaLiteError


def check_destination(final: Path, force: bool) -> None:
    """Fail early, before any expensive work, if `final` cannot or must not be written."""
    parent = final.parent
    if not parent.is_dir():
        raise RaLiteError(f"output directory {parent} does not exist" if not parent.exists()
                          else f"{parent} is not a directory", "create the directory or choose another output path")
    if final.is_dir():
        raise RaLiteError(f"output path {final} is a directory", "give a file name ending in .gguf")
    if final.exists() and not force:
        raise RaLiteError(f"{final} already exists", "pass --force to overwrite it")
    if not os.access(parent, os.W_OK):
        raise RaLiteError(f"cannot write to {parent}", "choose a writable output location")


def temp_path_for(final: Path) -> Path:
    # Hidden, pid-tagged and clearly partial, so a crash leaves something obviously deletable.
    return final.with_name(f".{final.name}.{os.getpid()}.partial")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def os_error_message(err: OSError, path: Path) -> RaLiteError:
    """Turn an OSError raised while writing `path` into a user-facing error."""
    if err.errno == errno.ENOSPC:
        return RaLiteError(f"no space left on the device while writing {path}",
                           "free some disk space or write the output somewhere else")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RaLiteError(f"cannot write {path}: {err.strerror}", "choose a writable output location")
    return RaLiteError(f"writing {path} failed: {err.strerror or err}", "check the output location")


@contextmanager
def atomic_destination(final: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; on success it is fsynced and renamed to `final`."""
    final = Path(final)
    check_destination(final, force)
    tmp = temp_path_for(final)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, final)
        with suppress(OSError):  # make the rename itself durable; not possible on every filesystem
            fsync_path(final.parent)
    except OSError as err:
        with suppress(OSError):
            tmp.unlink()
        raise os_error_message(err, final) from err
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
