"""`ra-lite serve`: the official RewardAnything HTTP API, on the standard library.

Endpoints and JSON shapes are those of `rewardanything` 1.0.1's server, so its `Client` works
unchanged:

    POST /api/rewardanything        {"principle", "prompt", "responses": {name: text},
                                     "mask_responses": true}  ->  {"thoughts", "results":
                                     {"scores", "best-to-worst"}, "ra_lite": {...}}
    POST /api/rewardanything_batch  [request, ...]  ->  [result, ...]   (in request order)
    GET  /health                    {"status": "healthy", "service": "RewardAnything API", ...}

Differences from the original, all deliberate: results always carry the caller's names (the
original returned masked names from its batch path) and batch results come in request order;
`mask_responses` is accepted and ignored because ra-lite always shows the model masked names (the
format it was trained on) and always maps them back; errors are 4xx with a `detail` that says
what to fix, never a 500 for bad input.

This module is the HTTP adapter only: it parses, validates and waits. Judgments run behind the
server's job queue (ra_lite.serve.jobs: bounded, so a full queue answers 503 at once; a batch is
one job), which feeds the one judge queue (ra_lite.judge_queue) with `parallel` slots: a local
model decodes up to that many requests in shared llama.cpp batches, admitting queued requests
into free slots (a batch request may fill several); a remote backend gets that many concurrent
calls. HTTP handling runs on ThreadingHTTPServer threads.

Operations, because an operator's server must not work for nobody (ra_lite.serve.jobs):
- A client that closes its connection cancels its job: a queued job is dropped unrun, a running
  one stops between two decode steps (its slot is freed for the next request).
- `shutdown()` (SIGTERM in `ra-lite serve`) drains: new requests get 503 at once, queued jobs
  keep being judged until the drain deadline, then every job still queued is answered 503 and
  every running judgment is stopped between decode steps and answered 503, so the process exits
  within the deadline plus one decode step, never "20 minutes after SIGTERM".
"""

from __future__ import annotations

import hmac
import json
import select
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ra_lite.errors import RaLiteError
from ra_lite.judge_queue import JudgeQueue
from ra_lite.request import JudgeRequest, loads_request_json
from ra_lite.serve.jobs import HttpError, JobQueue

SERVICE = "RewardAnything API"
SINGLE, BATCH, HEALTH = "/api/rewardanything", "/api/rewardanything_batch", "/health"
REWARD = "/get_reward"          # OpenRLHF's remote reward model (ra_lite.rewards.for_openrlhf)
# Kubernetes sends SIGKILL 30 s after SIGTERM by default; 25 s leaves time to answer everyone.
DEFAULT_DRAIN_TIMEOUT = 25.0
# How often a waiting handler checks whether its client is still connected.
DISCONNECT_POLL_S = 0.2
# After the drain deadline, how long a running judgment may take to reach its next decode step
# (a long prompt is one step) before its client is answered 503 anyway and the server closes.
STOP_GRACE_S = 10.0


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_request_bytes: int = 1 << 20
    max_responses: int = 32           # responses in one request
    max_batch: int = 64               # requests in one batch
    queue_size: int = 64              # waiting jobs (a batch is one job)
    parallel: int = 1                 # judgments at once: a local model's slots, or concurrent
                                      # calls to a remote server (ra_lite.slots)
    workers: int | None = None        # deprecated name of `parallel` (remote servers)
    read_timeout: float = 30.0        # seconds a client may take to send its request
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT   # seconds queued jobs may still run at shutdown
    reward_principle: str | None = None   # the principle POST /get_reward judges by

    def __post_init__(self):
        if self.workers is not None:
            if self.parallel > 1 and self.workers > 1 and self.workers != self.parallel:
                raise RaLiteError(f"--parallel {self.parallel} and --workers {self.workers} "
                                  "together", "pass --parallel alone (--workers is its old name)")
            self.parallel = max(self.parallel, self.workers)
            self.workers = None
        for name in ("max_request_bytes", "max_responses", "max_batch", "queue_size",
                     "parallel"):
            if getattr(self, name) < 1:
                raise RaLiteError(f"{name.replace('_', '-')} must be at least 1",
                                  f"pass --{name.replace('_', '-')} 1 or more")
        if not self.drain_timeout >= 0:
            raise RaLiteError(f"drain timeout {self.drain_timeout} is negative",
                              "pass --drain-timeout 0 or more seconds")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["api_key"] = bool(self.api_key)
        return d


class ClientGone(Exception):
    """The client closed its connection while its job waited or ran: nobody to answer."""


class RewardServer:
    """The HTTP server around a Judge. `start()` serves on a background thread."""

    def __init__(self, judge, config: ServerConfig | None = None, log=None, cache=None):
        self.judge = judge
        self.config = config or ServerConfig()
        self.log = log
        # cache: a ra_lite.judgment_cache.ModelCache for the judge's model (serve --cache), or
        # None; the judge queue looks requests up in it and stores what it judges.
        self.worker = JobQueue(JudgeQueue(judge, self.config.parallel, cache),
                               self.config.queue_size)
        self.draining = False
        self._drain_deadline: float | None = None
        self._active = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        try:
            self.httpd = _HTTPServer((self.config.host, self.config.port), _Handler)
        except OSError as e:
            raise RaLiteError(f"cannot listen on {self.config.host}:{self.config.port} "
                              f"({e.strerror or e})", "choose another --port (0 = any free one)"
                              ) from None
        self.httpd.app = self

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def start(self) -> "RewardServer":
        self.worker.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="ra-lite-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        return self

    def shutdown(self, timeout: float | None = None) -> bool:
        """Drain and close: new requests get 503 at once; queued jobs keep running until the
        drain deadline (`timeout`, default config.drain_timeout); then queued jobs are answered
        503 and running judgments are stopped between decode steps (503). Returns True when
        every accepted job was judged, False when the deadline cut some off."""
        drain = self.config.drain_timeout if timeout is None else timeout
        self._drain_deadline = time.monotonic() + drain
        self.draining = True              # the accept loop keeps running: late clients get 503
        self.worker.close()
        while not self.worker.idle() and time.monotonic() < self._drain_deadline:
            time.sleep(0.05)
        finished = self.worker.idle()
        self.worker.expire()
        # Running judgments stop between two decode steps; a remote backend finishes its call.
        stopped = self.worker.join(timeout=STOP_GRACE_S)
        if not stopped:
            self.worker.abandon()
        with self._idle:                  # handlers send their answers
            grace = time.monotonic() + 5.0
            while self._active and time.monotonic() < grace:
                self._idle.wait(0.05)
        if self._thread is not None:
            self.httpd.shutdown()
        self.httpd.server_close()
        return finished and stopped

    def hurry(self) -> None:
        """End the drain now (a second SIGTERM/SIGINT): queued jobs get 503 at once."""
        self._drain_deadline = time.monotonic()

    def __enter__(self) -> "RewardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown(timeout=60)

    # --- request handling (called from handler threads) ---------------------------------------
    def health(self) -> tuple[int, dict]:
        import ra_lite

        worker = self.worker
        body = {"status": "draining" if self.draining else "healthy", "service": SERVICE,
                "model": self.judge.model_name,
                "backend": getattr(self.judge.backend, "description", ""),
                "ra_lite": ra_lite.__version__,
                "queue": {"pending": worker.pending, "running": worker.running,
                          "capacity": self.config.queue_size, "completed": worker.completed,
                          "cancelled": worker.cancelled, "workers": self.config.parallel,
                          "parallel": self.config.parallel},
                "limits": {"max_request_bytes": self.config.max_request_bytes,
                           "max_responses": self.config.max_responses,
                           "max_batch": self.config.max_batch}}
        return (503 if self.draining else 200), body

    def check_key(self, header: str | None) -> None:
        key = self.config.api_key
        if not key:
            return
        scheme, _, given = (header or "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the key was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise HttpError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                            {"WWW-Authenticate": "Bearer"})

    def parse(self, path: str, body: bytes) -> tuple[list[JudgeRequest], bool]:
        try:
            obj = loads_request_json(body, "the body")
        except RaLiteError as e:
            raise HttpError(400, e.one_line()) from None
        if path == SINGLE:
            return [self._request(obj, "")], False
        if not isinstance(obj, list):
            raise HttpError(400, f"the batch body must be a JSON list of requests, not "
                                 f"{type(obj).__name__}")
        if not obj:
            raise HttpError(400, "No requests provided")
        if len(obj) > self.config.max_batch:
            raise HttpError(422, f"the batch has {len(obj)} requests, more than this server's "
                                 f"limit of {self.config.max_batch}: split it")
        return [self._request(o, f"request {i}: ") for i, o in enumerate(obj)], True

    def _request(self, obj, where: str) -> JudgeRequest:
        if isinstance(obj, dict) and not isinstance(obj.get("mask_responses", True), bool):
            raise HttpError(400, f"{where}mask_responses must be true or false")
        try:
            request = JudgeRequest.from_dict(obj)
        except RaLiteError as e:
            raise HttpError(400, where + e.one_line()) from None
        if len(request.responses) > self.config.max_responses:
            raise HttpError(422, f"{where}{len(request.responses)} responses, more than this "
                                 f"server's limit of {self.config.max_responses}: split them")
        return request

    def judge_now(self, requests: list[JudgeRequest], client_gone=lambda: False) -> list:
        """Queue the requests and wait for their judgments; `client_gone` is polled while
        waiting, and a client that left cancels the job (ClientGone)."""
        from ra_lite.runtime.decode import JudgmentCancelled

        job = self.worker.submit(requests)
        try:
            while True:
                try:
                    return job.future.result(timeout=DISCONNECT_POLL_S)
                except FutureTimeout:
                    if client_gone():
                        job.cancel("client")
                        raise ClientGone() from None
        except RaLiteError as e:      # e.g. the request does not fit the context
            raise HttpError(400, e.one_line()) from None
        except JudgmentCancelled:
            raise ClientGone() from None

    def get_reward(self, body: bytes, client_gone=lambda: False) -> dict:
        """POST /get_reward: OpenRLHF's request in, its rewards out (pointwise against the
        labels; see ra_lite.rewards.for_openrlhf). A sample that cannot be judged gets the
        failure score, never an error answer that would stop the trainer."""
        from ra_lite.rewards.for_openrlhf import assemble, reward_requests

        try:
            obj = loads_request_json(body, "the body")
        except RaLiteError as e:
            raise HttpError(400, e.one_line()) from None
        if not isinstance(obj, dict) or not isinstance(obj.get("query"), list):
            raise HttpError(400, 'send {"query": [...], "prompts": [...], "labels": [...]}')
        principle = obj.get("principle") or self.config.reward_principle
        if not principle:
            raise HttpError(400, "this server has no principle for /get_reward: start it with "
                                 "--reward-principle TEXT (or send \"principle\")")
        try:
            requests = reward_requests(obj["query"], obj.get("prompts") or [""] * len(obj["query"]),
                                       obj.get("labels"), principle)
        except RaLiteError as e:
            raise HttpError(400, e.one_line()) from None
        outcomes = list(requests)
        valid = [r for r in requests if isinstance(r, JudgeRequest)]
        if len(valid) > self.config.max_batch:
            raise HttpError(422, f"{len(valid)} samples, more than this server's limit of "
                                 f"{self.config.max_batch}: split them")
        if valid:
            try:
                judged = iter(self.judge_now(valid, client_gone))
                outcomes = [next(judged) if isinstance(o, JudgeRequest) else o for o in outcomes]
            except HttpError as e:
                if e.status != 400:
                    raise
                outcomes = [RaLiteError(e.detail) if isinstance(o, JudgeRequest) else o
                            for o in outcomes]
        return assemble(outcomes)

    def enter(self) -> None:
        with self._idle:
            self._active += 1

    def leave(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of clients would see resets.
    request_queue_size = 256
    app: RewardServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, as the official client's requests expects
    server_version = "ra-lite"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm may hold
    # the body back until the client ACKs the headers (measured no difference on loopback).
    disable_nagle_algorithm = True

    def setup(self):
        self.timeout = self.server.app.config.read_timeout   # slow senders cannot pin a thread
        self.pipelined = False
        super().setup()

    def log_message(self, format, *args):   # the app decides what to log
        pass

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == HEALTH:
            self._send(*self.server.app.health())
        elif path in (SINGLE, BATCH):
            self._send(405, {"detail": "Method Not Allowed"}, {"Allow": "POST"})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self):
        app, started = self.server.app, time.perf_counter()
        path = urlsplit(self.path).path
        app.enter()
        status, self.body_read = 500, False
        try:
            if path not in (SINGLE, BATCH, REWARD):
                raise HttpError(405 if path == HEALTH else 404,
                                "Method Not Allowed" if path == HEALTH else "Not Found")
            app.check_key(self.headers.get("Authorization"))
            body = self._read_body(app.config.max_request_bytes)
            if path == REWARD:
                answer = app.get_reward(body, self._client_gone)
                status = 200
                self._send(200, answer)
                return
            requests, batch = app.parse(path, body)
            results = [j.to_dict() for j in app.judge_now(requests, self._client_gone)]
            status = 200
            self._send(200, results if batch else results[0])
        except ClientGone:
            status = 499                      # nginx's "client closed request": nothing sent
            self.close_connection = True
        except HttpError as e:
            status = e.status
            # An unread body would be taken for the next request on a kept-alive connection.
            headers = e.headers if self.body_read else {**e.headers, "Connection": "close"}
            self._send(e.status, {"detail": e.detail}, headers)
        except Exception as e:  # a bug: answer, log, keep serving
            self._send(500, {"detail": f"internal error: {type(e).__name__}: {e}"})
        finally:
            app.leave()
            if app.log:
                app.log(f"POST {path} {status} {time.perf_counter() - started:.2f}s")

    def _client_gone(self) -> bool:
        """True when the client closed (or reset) its connection. It has sent its whole request,
        so a readable socket with nothing to read is an end of stream. A client that pipelines
        its next request cannot be told apart from a live one later: stop looking."""
        if self.pipelined:
            return False
        try:
            if not _readable_now(self.connection):
                return False
            data = self.connection.recv(1, socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0))
        except BlockingIOError:
            return False
        except OSError:                       # reset, or the socket is already gone
            return True
        if data:
            self.pipelined = True
            return False
        return True

    def _method_not_allowed(self):
        self._send(405, {"detail": "Method Not Allowed"})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = _method_not_allowed

    def _read_body(self, limit: int) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise HttpError(411, "send the body with a Content-Length (chunked is not accepted)",
                            {"Connection": "close"})
        length = self.headers.get("Content-Length")
        if length is None:
            raise HttpError(411, "a Content-Length header is required", {"Connection": "close"})
        try:
            size = int(length)
        except ValueError:
            raise HttpError(400, f"bad Content-Length {length!r}", {"Connection": "close"}) from None
        if size < 0:
            raise HttpError(400, f"bad Content-Length {length!r}", {"Connection": "close"})
        if size > limit:
            # The body is not read: close the connection rather than leave it in the stream.
            raise HttpError(413, f"the request is {size} bytes, more than this server's limit of "
                                 f"{limit} (--max-request-bytes)", {"Connection": "close"})
        body = self.rfile.read(size)
        self.body_read = True
        if len(body) != size:
            raise HttpError(400, "the body ended before Content-Length bytes",
                            {"Connection": "close"})
        return body

    def _send(self, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        headers = dict(headers or {})
        if self.server.app.draining:
            headers["Connection"] = "close"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client left after its judgment was done
        if headers.get("Connection") == "close":
            self.close_connection = True


def _readable_now(connection) -> bool:
    """Whether a socket has data (or an end of stream) to read, without waiting. poll where it
    exists: select.select fails on descriptors >= 1024, which a busy server reaches. (recv with
    MSG_DONTWAIT alone would not do: a socket with a timeout waits inside recv first.)"""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(connection, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([connection], [], [], 0)[0])
