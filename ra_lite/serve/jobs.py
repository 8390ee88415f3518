"""The server's jobs: an HTTP request's judge requests, queued in front of the judge queue.

A job is one HTTP request (a batch is one job). `JobQueue` bounds how many wait (a full queue
answers 503 at once), feeds their requests to one JudgeQueue (ra_lite.judge_queue) as tickets
whose results a Gather collects in request order, and implements the operations a server needs:
- cancellation: a client that left cancels its job; a queued job is dropped unrun, a running one
  stops between two decode steps (its slot goes to the next request);
- drain: close() refuses new jobs while the queued ones still run; expire() at the drain
  deadline answers every queued job 503 and stops every running one; abandon() answers 503 to
  what is still running after the stop grace;
- recovery: a failure of the queue itself (a bug, llama.cpp) answers the jobs it held and the
  queue starts again clean.
One thread drives the judge queue; on a call backend (--remote) the queue runs `slots`
concurrent calls itself.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from ra_lite.judge_queue import Gather, JudgeQueue, Ticket
from ra_lite.request import JudgeRequest
from ra_lite.runtime.decode import JudgmentCancelled

SHUTTING_DOWN = "the server is shutting down; retry elsewhere"


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def shutdown_error(what: str) -> HttpError:
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
        self.resolve(None, shutdown_error("the judgment was stopped at the drain deadline")
                     if self.reason == "shutdown" else JudgmentCancelled())


class JobQueue:
    """Jobs waiting and running, in front of `judge_queue` (module doc). Also the judge
    queue's TicketSource: each request of a job becomes a ticket."""

    def __init__(self, judge_queue: JudgeQueue, capacity: int):
        self.judge_queue = judge_queue
        self.capacity = capacity
        self.closed = False           # no new jobs (draining)
        self.expired = False          # the drain deadline passed: hand out nothing more
        self.completed = 0
        self.cancelled = 0            # jobs dropped or stopped because their client left
        self.refused_at_deadline = 0  # jobs answered 503 (or stopped) at the drain deadline
        self._jobs: deque[Job] = deque()
        self._running: set[Job] = set()
        self._tickets: deque[Ticket] = deque()   # tickets of a taken job, not yet handed out
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drive, name="ra-lite-queue", daemon=True)

    def start(self) -> None:
        self._thread.start()

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
                raise shutdown_error("not accepting new requests")
            if len(self._jobs) >= self.capacity:
                raise HttpError(503, f"the queue is full ({self.capacity} jobs waiting); "
                                     "retry shortly", {"Retry-After": "1"})
            self._jobs.append(job)
            self._cond.notify_all()
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
            if job.resolve(None, shutdown_error("still queued at the drain deadline")):
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

    def join(self, timeout: float | None) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _count(self, name: str) -> None:
        with self._cond:
            setattr(self, name, getattr(self, name) + 1)

    # --- the judge queue's TicketSource ---------------------------------------------------------
    def take(self, block: bool) -> Ticket | None:
        while True:
            with self._cond:
                while self._tickets:
                    ticket = self._tickets.popleft()
                    if not (ticket.cancelled() or self.expired):
                        return ticket
                    ticket.done(None, JudgmentCancelled())
            job = self._next_job(block)
            if job is None:
                return None
            gather = Gather(len(job.requests), self._finisher(job))

            def cancelled(job=job, gather=gather) -> bool:
                return job.cancelled() or gather.failed

            with self._cond:
                self._tickets.extend(Ticket(request, self.judge_queue.owner.options,
                                            gather.finisher(i), cancelled)
                                     for i, request in enumerate(job.requests))

    def _next_job(self, block: bool) -> Job | None:
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

    def _finisher(self, job: Job):
        def complete(results, error):
            # Judged in full before its cancellation took effect: answered all the same.
            self._finish(job, results, error)
        return complete

    def _finish(self, job: Job, results: list | None, error: BaseException | None) -> None:
        """Resolve a job that ran, and count it."""
        with self._cond:
            if job not in self._running:
                return                        # already answered (the queue failed)
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

    def _drive(self) -> None:
        while True:
            try:
                self.judge_queue.serve(self)
                return
            except Exception as error:   # a bug or a llama.cpp failure: answer, go on
                self._recover(error)

    def _recover(self, error: Exception) -> None:
        """The judge queue failed: end its slots, answer every job it held with the error (500),
        and let the next run start clean."""
        try:
            self.judge_queue.abort(error)
        except Exception:   # noqa: BLE001 - the jobs are answered below either way
            pass
        with self._cond:
            self._tickets.clear()
            running = list(self._running)
        for job in running:
            self._finish(job, None, error)
