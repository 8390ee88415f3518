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

One model, one context: judgments run on worker threads (one for a local model) fed by a bounded
queue, so concurrent requests wait their turn instead of interleaving, and a full queue answers
503 at once. HTTP handling runs on ThreadingHTTPServer threads that only parse, validate and wait.
`shutdown()` is graceful: stop accepting, finish every queued and running judgment, send their
answers, then close.
"""

from __future__ import annotations

import hmac
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest, reject_duplicate_keys

SERVICE = "RewardAnything API"
SINGLE, BATCH, HEALTH = "/api/rewardanything", "/api/rewardanything_batch", "/health"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_request_bytes: int = 1 << 20
    max_responses: int = 32           # responses in one request
    max_batch: int = 64               # requests in one batch
    queue_size: int = 64              # waiting jobs (a batch is one job)
    workers: int = 1                  # judgment threads: 1 for a local model (one KV cache)
    read_timeout: float = 30.0        # seconds a client may take to send its request

    def __post_init__(self):
        for name in ("max_request_bytes", "max_responses", "max_batch", "queue_size", "workers"):
            if getattr(self, name) < 1:
                raise RaLiteError(f"{name.replace('_', '-')} must be at least 1",
                                  f"pass --{name.replace('_', '-')} 1 or more")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["api_key"] = bool(self.api_key)
        return d


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class JudgeWorker:
    """Runs jobs (lists of requests) one at a time per worker thread, in arrival order."""

    def __init__(self, judge, queue_size: int, workers: int = 1):
        self.judge = judge
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.closed = False
        self.started = False
        self.running = 0
        self.completed = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"ra-lite-judge-{i}", daemon=True)
                         for i in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        self.started = True

    @property
    def pending(self) -> int:
        return self.queue.qsize() + self.running

    def submit(self, requests: list[JudgeRequest]) -> Future:
        future: Future = Future()
        with self._lock:   # so that no job slips in after close() queued the stop markers
            if self.closed:
                raise HttpError(503, "the server is shutting down", {"Connection": "close"})
            try:
                self.queue.put_nowait((requests, future))
            except queue.Full:
                raise HttpError(503, f"the queue is full ({self.queue.maxsize} jobs waiting); "
                                     "retry shortly", {"Retry-After": "1"}) from None
        return future

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, finish the queued ones; True when every worker stopped in time."""
        with self._lock:
            self.closed = True
        if not self.started:
            return True
        for _ in self._threads:
            self.queue.put((None, None))   # after every queued job (FIFO)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _run(self) -> None:
        while True:
            requests, future = self.queue.get()
            if future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self.running += 1
            try:
                future.set_result([self.judge.judge_request(r) for r in requests])
            except BaseException as e:   # delivered to the waiting handler, never kills the worker
                future.set_exception(e)
            finally:
                with self._lock:
                    self.running -= 1
                    self.completed += 1


class RewardServer:
    """The HTTP server around a Judge. `start()` serves on a background thread."""

    def __init__(self, judge, config: ServerConfig | None = None, log=None):
        self.judge = judge
        self.config = config or ServerConfig()
        self.log = log
        self.worker = JudgeWorker(judge, self.config.queue_size, self.config.workers)
        self.draining = False
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
        """Stop accepting, finish queued and running judgments, answer them, close.

        Returns True when everything finished within `timeout` (None = wait as long as needed).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.draining = True
        if self._thread is not None:
            self.httpd.shutdown()          # the accept loop ends; open handlers carry on
        finished = self.worker.close(None if deadline is None else deadline - time.monotonic())
        with self._idle:
            while self._active and finished:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    finished = False
                    break
                self._idle.wait(left)
        self.httpd.server_close()
        return finished

    def __enter__(self) -> "RewardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown(timeout=60)

    # --- request handling (called from handler threads) ---------------------------------------
    def health(self) -> tuple[int, dict]:
        import ra_lite

        body = {"status": "draining" if self.draining else "healthy", "service": SERVICE,
                "model": self.judge.model_name,
                "backend": getattr(self.judge.backend, "description", ""),
                "ra_lite": ra_lite.__version__,
                "queue": {"pending": self.worker.pending, "capacity": self.config.queue_size,
                          "completed": self.worker.completed, "workers": self.config.workers},
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
            obj = json.loads(body.decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HttpError(400, f"the body is not valid JSON ({getattr(e, 'msg', e)})") from None
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

    def judge_now(self, requests: list[JudgeRequest]) -> list:
        future = self.worker.submit(requests)
        try:
            return future.result()
        except RaLiteError as e:      # e.g. the request does not fit the context
            raise HttpError(400, e.one_line()) from None

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
            if path not in (SINGLE, BATCH):
                raise HttpError(405 if path == HEALTH else 404,
                                "Method Not Allowed" if path == HEALTH else "Not Found")
            app.check_key(self.headers.get("Authorization"))
            body = self._read_body(app.config.max_request_bytes)
            requests, batch = app.parse(path, body)
            results = [j.to_dict() for j in app.judge_now(requests)]
            status = 200
            self._send(200, results if batch else results[0])
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
            pass   # the client left; its judgment was still done in order
        if headers.get("Connection") == "close":
            self.close_connection = True
