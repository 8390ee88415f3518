"""llama.cpp's real llama-server for the tests: built (or found cached) by
scripts/build_llama_server.sh, started on a free loopback port, stopped by the test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def server_binary(wheel_cache: Path) -> Path:
    """The llama-server binary; compiled once per machine (the script prints its path last)."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "build_llama_server.sh")],
                          env={**os.environ, "RA_LITE_WHEEL_CACHE": str(wheel_cache)},
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file(), path
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One llama-server process on 127.0.0.1 (SIGTERM on stop; kill() is SIGKILL)."""

    def __init__(self, binary: Path, model: Path, *, slots: int | None = 2, n_ctx: int = 4096,
                 extra: tuple[str, ...] = (), log: Path | None = None, threads: int = 2):
        """slots None: llama-server's own default (-np auto: 4 slots over one unified KV)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w") if log else subprocess.DEVNULL
        parallel = ["-c", str(n_ctx * slots), "-np", str(slots)] if slots else \
            ["-c", str(n_ctx * 4)]
        self.proc = subprocess.Popen(
            [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             *parallel, "-t", str(threads), "--no-webui",
             *extra], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError("llama-server did not become ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log is not subprocess.DEVNULL:
            self.log.close()

    def __enter__(self) -> "LlamaServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
