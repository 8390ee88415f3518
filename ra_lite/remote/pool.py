"""Several servers behind one Judge: judgments spread by least outstanding work, failover.

    judge = load_remote(["http://box-a:8080", "http://box-b:8080"], kind="llama.cpp")
    ra-lite batch in.jsonl -o out.jsonl --remote http://box-a:8080,http://box-b:8080

Every server is health-checked when the pool is made (llama-server answers /health with 503
while it loads a model); those that are not ready are left out, and the pool needs at least one.
Each judgment goes to the ready server with the fewest judgments in flight (ties: the one used
least recently), so a fast box takes more. A server that fails mid-judgment (unreachable,
connection dropped, timeout, 5xx: client.ServerUnavailable) is taken out of rotation and the
judgment starts again, from the beginning, on another: a judgment always runs once to completion
on one server, so a batch record is written once, whichever server judged it. A request the
server refuses (4xx, e.g. it does not fit its context) is that request's error and not retried.
A server out of rotation is probed again after RECHECK_S and comes back when ready. When no
server is left the judgment fails with every server's last error named.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ra_lite.errors import RaLiteError
from ra_lite.remote.client import RemoteBackend, ServerUnavailable

RECHECK_S = 30.0


@dataclass(eq=False)
class _Server:
    backend: RemoteBackend
    outstanding: int = 0
    ready: bool = True
    failed_at: float = 0.0
    last_error: str = ""
    used_at: float = 0.0
    judged: int = 0
    failures: int = 0
    slots: int | None = field(default=None)


class ServerPool:
    """The Backend protocol (judge.py) over several RemoteBackends (see the module docstring)."""

    def __init__(self, backends: list[RemoteBackend], notify=None, recheck_s: float = RECHECK_S):
        if not backends:
            raise RaLiteError("no server given", "pass --remote URL[,URL...]")
        self._notify = notify or (lambda message: None)
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self.servers = [_Server(b) for b in backends]
        for server in self.servers:
            problem = server.backend.health()
            if problem is None:
                server.slots = server.backend.slots()
            else:
                self._out(server, problem)
        if not any(s.ready for s in self.servers):
            raise RaLiteError(
                "no server is ready: " + "; ".join(f"{s.backend.base_url}: {s.last_error}"
                                                  for s in self.servers),
                "start the servers (llama-server answers /health once its model is loaded), "
                "or check the URLs")
        urls = ", ".join(s.backend.base_url for s in self.servers)
        self.description = f"{len(self.servers)} {backends[0].kind} servers ({urls})"
        self.template = backends[0].template

    @property
    def base_url(self) -> str:
        return ",".join(s.backend.base_url for s in self.servers)

    @property
    def route(self) -> str:
        """The route judgments take (every server is of one kind; see client.py)."""
        return self.servers[0].backend.route

    def slots(self) -> int:
        """Judgments worth sending at once: every ready server's slots (1 when unknown)."""
        return sum(s.slots or 1 for s in self.servers if s.ready)

    def render(self, chat, thinking: bool) -> str:
        return self.servers[0].backend.render(chat, thinking)

    def generate(self, chat, options, forcing=None, on_reasoning=None, cancelled=None):
        tried: set[int] = set()
        while True:
            server = self._take(tried)
            try:
                result = server.backend.generate(chat, options, forcing, on_reasoning, cancelled)
            except ServerUnavailable as e:
                self._give_back(server, error=e)
                tried.add(id(server))
                continue
            except BaseException:
                self._give_back(server)
                raise
            self._give_back(server, judged=True)
            return result

    def _take(self, tried: set[int]) -> _Server:
        with self._lock:
            now = time.monotonic()
            candidates = [s for s in self.servers if id(s) not in tried and
                          (s.ready or now - s.failed_at >= self.recheck_s)]
        for server in candidates:
            if not server.ready:            # out of rotation long enough: probe it again
                problem = server.backend.health()
                with self._lock:
                    if problem is None:
                        server.ready = True
                        self._notify(f"{server.backend.base_url} is back in rotation")
                    else:
                        server.failed_at, server.last_error = time.monotonic(), problem
        with self._lock:
            ready = [s for s in candidates if s.ready]
            if not ready:
                raise RaLiteError(
                    "every server failed: " + "; ".join(
                        f"{s.backend.base_url}: {s.last_error or 'not ready'}"
                        for s in self.servers),
                    "check the servers' logs; the judgment was not completed anywhere")
            server = min(ready, key=lambda s: (s.outstanding / (s.slots or 1), s.used_at))
            server.outstanding += 1
            server.used_at = time.monotonic()
            return server

    def _give_back(self, server: _Server, error: ServerUnavailable | None = None,
                   judged: bool = False) -> None:
        with self._lock:
            server.outstanding -= 1
            server.judged += judged
            if error is not None:
                server.failures += 1
                was_ready = server.ready
                self._out(server, error.problem)
        if error is not None and was_ready:
            self._notify(f"{server.backend.base_url} failed ({error.problem}); taken out of "
                         f"rotation, its judgment starts again on another server")

    def _out(self, server: _Server, problem: str) -> None:
        server.ready = False
        server.failed_at = time.monotonic()
        server.last_error = problem

    def close(self) -> None:
        for server in self.servers:
            server.backend.close()


def parse_urls(url) -> list[str]:
    """'a,b', ['a', 'b'] or 'a' -> ['a', 'b'] (blank entries refused)."""
    urls = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip() for u in urls]
    if not urls or any(not u for u in urls):
        raise RaLiteError(f"--remote {url!r} has an empty URL",
                          "write --remote http://HOST:PORT[,http://HOST2:PORT2]")
    if len(set(urls)) != len(urls):
        raise RaLiteError(f"--remote {url!r} names a server twice", "list each server once")
    return urls


def load_remote(url, kind: str = "llama.cpp", *, api_key: str | None = None,
                model: str | None = None, template=None, timeout: float = 600.0, options=None,
                text_prompts: bool = False, tokenizer=None, notify=None, route: str = "auto"):
    """A Judge whose generation runs on the server(s) at `url` (one URL, 'a,b' or a list).

    tokenizer: the served model's GGUF, to build token-id prompts locally (needed for vLLM).
    text_prompts: send text instead of token ids (the only way for kind "openai"); a request whose
    messages contain control-token text is then refused. Several URLs make a ServerPool.
    route: "choices" (choice points read from the server's probabilities), "grammar" (the answer
    decoded on the server under grammars), or "auto" (choices wherever possible; client.py).
    """
    from ra_lite.judge import Judge

    urls = parse_urls(url)
    backends = [RemoteBackend(u, kind, api_key=api_key, model=model, template=template,
                              timeout=timeout, text_prompts=text_prompts, tokenizer=tokenizer,
                              route=route, notify=notify)
                for u in urls]
    backend = backends[0] if len(backends) == 1 else ServerPool(backends, notify=notify)
    return Judge(backend, options, model_name=model or backend.description, notify=notify)
