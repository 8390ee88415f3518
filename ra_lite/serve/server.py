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

Judgments run behind a bounded queue (a batch is one job), so a full queue answers 503 at once.
With `parallel == 1` worker threads take one job at a time (one thread for a local model: one KV
cache); with `parallel >= 2` one thread drives the judge's parallel runner, which decodes up to
`parallel` requests in shared llama.cpp batches, admitting queued requests into free slots (a
batch request may fill several). HTTP handling runs on ThreadingHTTPServer threads that only
parse, validate and wait.

Operations, because an operator's server must not work for nobody:
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
from collections import deque
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest, reject_duplicate_keys

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
SHUTTING_DOWN = "the server is shutting down; retry elsewhere"


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
    parallel: int = 1                 # slots of a local model's parallel runner; 1 = sequential
    read_timeout: float = 30.0        # seconds a client may take to send its request
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT   # seconds queued jobs may still run at shutdown
    reward_principle: str | None = None   # the principle POST /get_reward judges by

    def __post_init__(self):
        for name in ("max_request_bytes", "max_responses", "max_batch", "queue_size", "workers",
                     "parallel"):
            if getattr(self, name) < 1:
                raise RaLiteError(f"{name.replace('_', '-')} must be at least 1",
                                  f"pass --{name.replace('_', '-')} 1 or more")
        if self.parallel > 1 and self.workers > 1:
            raise RaLiteError(f"--parallel {self.parallel} and --workers {self.workers} together",
                              "--parallel is for a local model, --workers for --remote: pass one")
        if not self.drain_timeout >= 0:
            raise RaLiteError(f"drain timeout {self.drain_timeout} is negative",
                              "pass --drain-timeout 0 or more seconds")

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["api_key"] = bool(self.api_key)
        return d


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


class ClientGone(Exception):
    """The client closed its connection while its job waited or ran: nobody to answer."""


def _shutdown_error(what: str) -> HttpError:
    return HttpError(503, f"{what}: {SHUTTING_DOWN}", {"Connection": "close", "Retry-After": "1"})


@dataclass(eq=False)
class Job:
    """One HTTP request's work: its judge requests, the future its handler waits on, and why it
    was cancelled ("client" gone, or "shutdown" deadline), if it was."""

    requests: list[JudgeRequest]
    future: Future = field(default_factory=Future)
    reason: str = ""
    _cancel: threading.Event = field(default_factory=threading.Event)

    def cancel(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.reason = reason
            self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def resolve(self, results: list | None, error: BaseException | None = None) -> bool:
        """Deliver the answer once; False if it was already given (e.g. 503 at the deadline)."""
        try:
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(results)
            return True
        except InvalidStateError:
            return False

    def resolve_cancelled(self) -> None:
        """Resolve a job that stopped (or never started) because it was cancelled."""
        from ra_lite.runtime.decode import JudgmentCancelled

        self.resolve(None, _shutdown_error("the judgment was stopped at the drain deadline")
                     if self.reason == "shutdown" else JudgmentCancelled())


class JudgeWorker:
    """The queue of jobs and what runs them: `workers` sequential threads, or with
    `parallel >= 2` one thread driving `judge.parallel_runner(parallel)`."""

    def __init__(self, judge, queue_size: int, workers: int = 1, parallel: int = 1):
        self.judge = judge
        self.capacity = queue_size
        # Raises RaLiteError for a remote backend or more slots than fit: before anything runs.
        self.runner = judge.parallel_runner(parallel) if parallel > 1 else None
        self.closed = False           # no new jobs (draining)
        self.expired = False          # the drain deadline passed: hand out nothing more
        self.completed = 0
        self.cancelled = 0            # jobs dropped or stopped because their client left
        self.refused_at_deadline = 0  # jobs answered 503 (or stopped) at the drain deadline
        self._jobs: deque[Job] = deque()
        self._running: set[Job] = set()
        self._cond = threading.Condition()
        count = 1 if self.runner is not None else workers
        target = self._run_parallel if self.runner is not None else self._run_sequential
        self._threads = [threading.Thread(target=target, name=f"ra-lite-judge-{i}", daemon=True)
                         for i in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._jobs) + len(self._running)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def submit(self, requests: list[JudgeRequest]) -> Job:
        job = Job(requests)
        with self._cond:
            if self.closed:
                raise _shutdown_error("not accepting new requests")
            if len(self._jobs) >= self.capacity:
                raise HttpError(503, f"the queue is full ({self.capacity} jobs waiting); "
                                     "retry shortly", {"Retry-After": "1"})
            self._jobs.append(job)
            self._cond.notify()
        return job

    def close(self) -> None:
        """Refuse new jobs; the queued ones still run (until expire())."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return not self._jobs and not self._running

    def expire(self) -> None:
        """The drain deadline: answer every queued job 503, stop every running one."""
        with self._cond:
            self.closed = self.expired = True
            queued, self._jobs = list(self._jobs), deque()
            running = list(self._running)
            self._cond.notify_all()
        for job in queued:
            if job.resolve(None, _shutdown_error("still queued at the drain deadline")):
                self._count("refused_at_deadline")
        for job in running:
            job.cancel("shutdown")

    def abandon(self) -> None:
        """Answer 503 to jobs still running after the stop grace (their threads are left)."""
        with self._cond:
            running = list(self._running)
        for job in running:
            job.cancel("shutdown")
            job.resolve_cancelled()

    def _count(self, name: str) -> None:
        with self._cond:
            setattr(self, name, getattr(self, name) + 1)

    def join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def next_job(self, block: bool) -> Job | None:
        """The next job to run, skipping those whose client left. None: nothing now (block
        False), or the queue is closed and empty, or the drain deadline passed."""
        while True:
            with self._cond:
                while not self._jobs and block and not self.closed:
                    self._cond.wait()
                if self.expired or not self._jobs:
                    return None
                job = self._jobs.popleft()
                if not job.cancelled():
                    self._running.add(job)
                    return job
            self._count("cancelled")
            job.resolve_cancelled()

    def finish(self, job: Job, results: list | None, error: BaseException | None) -> None:
        """Resolve a job that ran, and count it."""
        from ra_lite.runtime.decode import JudgmentCancelled

        with self._cond:
            if job not in self._running:
                return                        # already answered (the runner failed)
            self._running.discard(job)
            if isinstance(error, JudgmentCancelled) and job.cancelled():
                if job.reason == "shutdown":
                    self.refused_at_deadline += 1
                else:
                    self.cancelled += 1
            else:
                self.completed += 1
            self._cond.notify_all()
        if isinstance(error, JudgmentCancelled) and job.cancelled():
            job.resolve_cancelled()
        else:
            job.resolve(results, error)

    def _run_sequential(self) -> None:
        while (job := self.next_job(block=True)) is not None:
            try:
                results = []
                for request in job.requests:
                    results.append(self.judge.judge_request(request, cancelled=job.cancelled))
                self.finish(job, results, None)
            except BaseException as e:   # delivered to the waiting handler, never kills the worker
                self.finish(job, None, e)

    def _run_parallel(self) -> None:
        source = QueueSource(self)
        try:
            while True:
                try:
                    self.runner.run(source)
                    return
                except Exception as error:   # a bug or a llama.cpp failure: answer, go on
                    self._recover(source, error)
        finally:
            close = getattr(self.runner, "close", None)
            if close is not None:
                close()

    def _recover(self, source: "QueueSource", error: Exception) -> None:
        """The runner failed: end its slots, answer every job it held with the error (500),
        and let the next run start clean."""
        abort = getattr(self.runner, "abort", None)
        if abort is not None:
            try:
                abort(error)
            except Exception:   # noqa: BLE001 - the jobs are answered below either way
                pass
        source.clear()
        with self._cond:
            running = list(self._running)
        for job in running:
            self.finish(job, None, error)


class QueueSource:
    """The server queue as the parallel runner's JobSource: each request of a job becomes one
    JudgeJob; the job's results are gathered in request order and delivered when all are done.
    The first error (or a cancellation) stops the job's other requests, as in sequential mode."""

    def __init__(self, worker: JudgeWorker):
        self.worker = worker
        self._pending: deque = deque()     # JudgeJobs taken from a job, not yet handed out

    def clear(self) -> None:
        self._pending.clear()

    def take(self, block: bool):
        from ra_lite.parallel_judge import JudgeJob
        from ra_lite.runtime.decode import JudgmentCancelled

        while True:
            while self._pending:
                judge_job = self._pending.popleft()
                if judge_job.cancelled() or self.worker.expired:
                    judge_job.done(None, JudgmentCancelled())
                    continue
                return judge_job
            job = self.worker.next_job(block)
            if job is None:
                return None
            gather = _Gather(self.worker, job)
            self._pending.extend(JudgeJob(request, None, gather.done_callback(i),
                                          gather.cancelled)
                                 for i, request in enumerate(job.requests))


class _Gather:
    """Collects one job's per-request results (called from the runner thread)."""

    def __init__(self, worker: JudgeWorker, job: Job):
        self.worker, self.job = worker, job
        self.results: list = [None] * len(job.requests)
        self.left = len(job.requests)
        self.error: BaseException | None = None

    def cancelled(self) -> bool:
        return self.job.cancelled() or self.error is not None

    def done_callback(self, index: int):
        def done(judgment, error):
            from ra_lite.runtime.decode import JudgmentCancelled

            if error is not None and self.error is None and not (
                    isinstance(error, JudgmentCancelled) and self.job.cancelled()):
                self.error = error            # the first real error stops the others
            self.results[index] = judgment
            self.left -= 1
            if self.left == 0:
                if self.error is not None:
                    self.worker.finish(self.job, None, self.error)
                elif self.job.cancelled():
                    self.worker.finish(self.job, None, JudgmentCancelled())
                else:
                    self.worker.finish(self.job, self.results, None)
        return done


class RewardServer:
    """The HTTP server around a Judge. `start()` serves on a background thread."""

    def __init__(self, judge, config: ServerConfig | None = None, log=None, cache=None):
        self.judge = judge
        self.config = config or ServerConfig()
        self.log = log
        # A ra_lite.judgment_cache.ModelCache for the judge's model (serve --cache), or None.
        # Looked up on the handler's thread, before the queue: a hit never waits for a slot.
        self.cache = cache
        self.worker = JudgeWorker(judge, self.config.queue_size, self.config.workers,
                                  self.config.parallel)
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
                          "cancelled": worker.cancelled, "workers": self.config.workers,
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

    def judge_now(self, requests: list[JudgeRequest], client_gone=lambda: False) -> list:
        """Queue the requests and wait for their judgments; `client_gone` is polled while
        waiting, and a client that left cancels the job (ClientGone)."""
        from ra_lite.runtime.decode import JudgmentCancelled

        options = self.judge.options
        found = [self.cache.lookup(r, options) for r in requests] if self.cache else \
            [None] * len(requests)
        missing = [r for r, hit in zip(requests, found) if hit is None]
        judged = []
        if missing:
            job = self.worker.submit(missing)
            try:
                while True:
                    try:
                        judged = job.future.result(timeout=DISCONNECT_POLL_S)
                        break
                    except FutureTimeout:
                        if client_gone():
                            job.cancel("client")
                            raise ClientGone() from None
            except RaLiteError as e:      # e.g. the request does not fit the context
                raise HttpError(400, e.one_line()) from None
            except JudgmentCancelled:
                raise ClientGone() from None
        fresh = iter(judged)
        results = []
        for request, hit in zip(requests, found):
            if hit is None:
                hit = next(fresh)
                if self.cache is not None:
                    self.cache.store(request, options, hit)
            results.append(hit)
        return results

    def get_reward(self, body: bytes, client_gone=lambda: False) -> dict:
        """POST /get_reward: OpenRLHF's request in, its rewards out (pointwise against the
        labels; see ra_lite.rewards.for_openrlhf). A sample that cannot be judged gets the
        failure score, never an error answer that would stop the trainer."""
        from ra_lite.rewards.for_openrlhf import assemble, reward_requests

        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HttpError(400, f"the body is not valid JSON ({getattr(e, 'msg', e)})") from None
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
