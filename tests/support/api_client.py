"""Helpers for the server tests: a stdlib client written against the official RewardAnything API
(the same endpoints, fields and auth header as rewardanything 1.0.1's `Client`), raw HTTP, and a
slow fake backend."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from ra_lite.testing import FakeBackend, ascending_answer


class OfficialApiClient:
    """What rewardanything.Client sends: POST JSON with Content-Type, User-Agent and, with a key,
    'Authorization: Bearer <key>'; results read from "thoughts" and "results"."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json",
                        "User-Agent": "RewardAnything-Python-Client/1.0.1"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def _post(self, endpoint: str, data):
        request = urllib.request.Request(self.base_url + endpoint, json.dumps(data).encode(),
                                         self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def judge(self, principle, prompt, responses, mask_responses=True) -> dict:
        data = self._post("/api/rewardanything", {"principle": principle, "prompt": prompt,
                                                  "responses": responses,
                                                  "mask_responses": mask_responses})
        results = data.get("results", {})
        return {"reasoning": data.get("thoughts", ""), "scores": results.get("scores", {}),
                "ranking": results.get("best-to-worst", [])}

    def judge_batch(self, requests: list[dict]) -> list[dict]:
        body = [{"principle": r["principle"], "prompt": r["prompt"], "responses": r["responses"],
                 "mask_responses": r.get("mask_responses", True)} for r in requests]
        return [{"reasoning": item.get("thoughts", ""),
                 "scores": item.get("results", {}).get("scores", {}),
                 "ranking": item.get("results", {}).get("best-to-worst", [])}
                for item in self._post("/api/rewardanything_batch", body)]

    def health_check(self) -> bool:
        try:
            request = urllib.request.Request(self.base_url + "/health", headers=self.headers)
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False


def raw(url: str, method: str, path: str, body: bytes | None = None,
        headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) for any request, errors included."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else {}), dict(response.getheaders())
    finally:
        conn.close()


def post_json(url: str, path: str, obj, headers: dict | None = None, timeout: float = 60):
    return raw(url, "POST", path, json.dumps(obj).encode(),
               {"Content-Type": "application/json", **(headers or {})}, timeout)


class SlowFake(FakeBackend):
    """A thread-unsafe fake on purpose: it fails loudly if two judgments ever overlap."""

    def __init__(self, delay: float = 0.0):
        super().__init__(fallback=ascending_answer)
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self._guard = threading.Lock()

    def generate(self, chat, options, forcing=None):
        with self._guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            return super().generate(chat, options, forcing)
        finally:
            with self._guard:
                self.active -= 1


def read_lines(stream) -> queue.Queue:
    """A queue fed with a subprocess stream's lines (so tests can wait with a timeout)."""
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not seen within {timeout}s; got: {''.join(seen)}")


@contextlib.contextmanager
def serve_subprocess(args: list[str], ready: str = " on http://", timeout: float = 60):
    """`python ARGS` (a `-m ra_lite serve ...` or `-c CODE` command) in a subprocess: yields
    (process, its stderr lines, the URL it announced after `ready`); killed if still running."""
    proc = subprocess.Popen([sys.executable, *args], cwd=os.getcwd(), text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lines = read_lines(proc.stderr)
        url = wait_for_line(lines, ready, timeout).split(" on ")[1].split()[0]
        yield proc, lines, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
