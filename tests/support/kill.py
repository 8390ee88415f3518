"""Killing a `ra-lite batch` process mid-run, as a crash or an OOM kill would."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_after_records(command: list[str], out: Path, records: int, timeout: float) -> int:
    """Run `command` in its own process group, SIGKILL the group once `out` holds `records`
    lines (or after `timeout` seconds); returns how many lines `out` held then."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and (not out.exists() or
                                      out.read_text().count("\n") < records):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return out.read_text().count("\n") if out.exists() else 0
