"""Judging many requests at once on one local model (the judge-level side of the scheduler).

`Judge.parallel_runner(slots)` gives a ParallelRunner: it takes JudgeJobs from a JobSource,
prepares each exactly as a single judgment is prepared (`Judge.prepare_request`: the same
decoder rules, one sequence per response order), runs them in up to `slots` sequences of the
engine's one context (runtime/scheduler.py) and reports each result through the job's `done`
callback. The server and `judge_each` / `judge_in_order` (judge_many, batch, bench) are its users.

`--parallel auto` (resolve_parallel) picks, for a local model, 8 slots when layers are offloaded
to a GPU and 4 on a CPU, capped by the KV memory: as many slots as fit the context at the
options' think budget with a short request each. The slots share the engine's one KV cache (no
second cache: a judgment's cells are all it adds). Measured on the 2-core reference machine
(benchmarks/parallel.py, think budget 256, three runs): 4 slots judged 1.57-2.10x as many
judgments/s as 1 on the embedded model and 1.23x on a Qwen3-0.6B-shaped model, near the bare
llama_decode ceiling measured beside them. A remote backend gets its servers' slots (llama-
server's /props, summed over a pool; 1 when unknown); an explicit N >= 2 there means N
concurrent requests.

This module imports nothing from ra_lite.judge (judge.py imports it), only the runtime.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest

HARDWARE_SLOTS_GPU = 8
HARDWARE_SLOTS_CPU = 4


def _never() -> bool:
    return False


@dataclass
class JudgeJob:
    """One judgment for a ParallelRunner. done(judgment, error) is called exactly once, from
    the runner's thread; cancelled() is polled between decode steps."""

    request: JudgeRequest
    options: "JudgeOptions | None"                                  # noqa: F821 (ra_lite.judge)
    done: Callable[["Judgment | None", "BaseException | None"], None]  # noqa: F821
    cancelled: Callable[[], bool] = _never


class JobSource(Protocol):
    """take(block=False): the next job, or None when none is waiting right now.
    take(block=True) (asked only when every slot is idle): wait for a job; None = closed, the
    runner then returns."""

    def take(self, block: bool) -> JudgeJob | None: ...


def is_local_backend(backend) -> bool:
    """Whether a backend decodes on a local llama.cpp engine (the scheduler drives it)."""
    return getattr(backend, "engine", None) is not None and hasattr(backend, "prepare") \
        and hasattr(backend, "run")


def is_local(judge) -> bool:
    """Whether `judge` decodes on a local llama.cpp engine (anything else, e.g. a remote backend
    or a wrapper without a backend, judges one request per call)."""
    return is_local_backend(getattr(judge, "backend", None))


class ParallelRunner:
    """Runs JudgeJobs in up to `slots` sequences of the engine's context (module docstring)."""

    def __init__(self, judge, slots: int):
        from ra_lite.runtime.scheduler import MAX_SLOTS

        if not is_local(judge):
            raise RaLiteError("parallel decoding needs a local GGUF model",
                              "remote backends judge concurrently on their server (--workers)")
        if not isinstance(slots, int) or not 2 <= slots <= MAX_SLOTS:
            raise RaLiteError(f"a parallel runner needs 2 to {MAX_SLOTS} slots, not {slots!r}",
                              "use judge_request for one at a time, or 2 or more slots")
        self.judge = judge
        self.slots = slots
        self.engine = judge.backend.engine
        judge.backend.shared_prefix_tokens()
        self.engine.scheduler(slots)      # room for `slots` sequences now, not at the first job

    def run(self, source: JobSource) -> None:
        """Blocks until the source is closed and every slot is idle."""
        for _ in self.rounds(source):
            pass

    def rounds(self, source: JobSource) -> Iterator[None]:
        """Like run, one decode round per iteration (callers flush finished results between;
        close the iterator when stopping early)."""
        yield from self.engine.rounds(_Tasks(self.judge, source), self.slots)

    def abort(self, error: BaseException | None = None) -> None:
        """End every running judgment: done(None, error) for each (default JudgmentCancelled,
        for a consumer that stopped; the runner's own failure passes itself)."""
        self.engine.abort(error)

    def close(self) -> None:
        """Nothing to free: the slots are the engine's (kept for its next judgments)."""

    def __enter__(self) -> "ParallelRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Tasks:
    """JudgeJobs in, scheduler tasks out: each job prepared by the judge as one task per
    response order, whose results are gathered and mapped back to one Judgment."""

    def __init__(self, judge, source: JobSource):
        self.judge = judge
        self.source = source
        self._parts: collections.deque = collections.deque()

    def take(self, block: bool):
        from ra_lite.runtime.decode import JudgmentCancelled

        while True:
            if self._parts:
                return self._parts.popleft()
            job = self.source.take(block)
            if job is None:
                return None
            if job.cancelled():
                job.done(None, JudgmentCancelled())
                continue
            try:
                prepared = self.judge.prepare_request(job.request, job.options)
            except Exception as error:   # noqa: BLE001 - e.g. does not fit: this job only
                job.done(None, error)
                continue
            self._parts.extend(_Gather(job, prepared).tasks())


class _Gather:
    """One job's per-order results; the job is done when all are. The first failure stops the
    job's other orders and is what the job reports."""

    def __init__(self, job: JudgeJob, prepared):
        self.job, self.prepared = job, prepared
        self.results: list = [None] * len(prepared.parts)
        self.left = len(prepared.parts)
        self.error: BaseException | None = None

    def cancelled(self) -> bool:
        return self.error is not None or self.job.cancelled()

    def tasks(self) -> list:
        return [part.task(self._finisher(i), self.cancelled)
                for i, part in enumerate(self.prepared.parts)]

    def _finisher(self, index: int):
        def finish(result, error):
            if error is not None and self.error is None:
                self.error = error
            self.results[index] = result
            self.left -= 1
            if self.left:
                return
            if self.error is not None:
                self.job.done(None, self.error)
                return
            try:
                judgment = self.prepared.finish(self.results)
            except Exception as e:   # noqa: BLE001
                self.job.done(None, e)
                return
            self.job.done(judgment, None)
        return finish


# --- how many slots ------------------------------------------------------------------------------
@dataclass
class SlotLimit:
    """How many slots fit the KV cache: each needs at least `per_slot` cells (think budget +
    answer + a minimal request) next to the `prefix` shared cells of an `n_ctx` context."""

    most: int
    per_slot: int
    prefix: int
    n_ctx: int


def slot_limit(judge, options) -> SlotLimit:
    from dataclasses import replace

    from ra_lite.runtime.decode import common_prefix_length
    from ra_lite.runtime.scheduler import MAX_SLOTS

    prefix = judge.backend.shared_prefix_tokens()
    minimal = JudgeRequest.create("x", "x", {"a": "x", "b": "x"})
    prepared = judge.prepare_request(minimal, replace(options, orders=1))
    prepared.close()
    part = prepared.parts[0]
    per_slot = part.kv_tokens - common_prefix_length(part.prompt_tokens, prefix)
    n_ctx = judge.backend.engine.n_ctx
    most = min(MAX_SLOTS, max(0, (n_ctx - len(prefix)) // max(per_slot, 1)))
    return SlotLimit(most, per_slot, len(prefix), n_ctx)


def remote_slots(judge) -> int:
    """auto for a remote backend: the judgments its server(s) run at once (llama-server's slots,
    summed over a pool), else 1."""
    slots = getattr(getattr(judge, "backend", None), "slots", None)
    try:
        value = slots() if callable(slots) else None
    except Exception:   # noqa: BLE001 - a probe that fails only means "unknown"
        value = None
    return value if isinstance(value, int) and value > 0 else 1


def hardware_slots(engine) -> int:
    """Slots worth running on this engine's hardware, before the KV-cell cap."""
    if getattr(getattr(engine, "offload", None), "n_gpu_layers", 0):
        return HARDWARE_SLOTS_GPU
    return HARDWARE_SLOTS_CPU


def parse_parallel(parallel) -> int | str:
    """`auto` / None -> "auto"; a positive whole number (or its text) -> it. Checks only the
    value (commands call it before loading a model); resolve_parallel checks it fits."""
    if parallel is None or (isinstance(parallel, str) and parallel.strip().lower() == "auto"):
        return "auto"
    try:
        slots = int(parallel)
        if isinstance(parallel, float) and slots != parallel:
            raise ValueError
    except (TypeError, ValueError):
        raise RaLiteError(f"--parallel {parallel!r} is not a number of slots",
                          "use auto, 1 (one judgment at a time) or a whole number >= 2") from None
    if slots < 1:
        raise RaLiteError(f"--parallel {slots} is below 1: at least 1 slot is needed",
                          "use auto, 1 (one judgment at a time) or a whole number >= 2")
    return slots


def resolve_parallel(judge, parallel, options=None) -> int:
    """`auto`, None or a positive int (or its text) -> the slot count; 1 = the sequential path.

    Bad values raise RaLiteError naming the limit."""
    options = options or judge.options
    slots = parse_parallel(parallel)
    if slots == "auto":
        if not is_local(judge):
            return remote_slots(judge)
        hardware = hardware_slots(judge.backend.engine)
        return max(1, min(hardware, slot_limit(judge, options).most))
    if slots == 1 or not is_local(judge):
        return slots
    from ra_lite.runtime.scheduler import MAX_SLOTS

    if slots > MAX_SLOTS:
        raise RaLiteError(f"--parallel {slots} is more than llama.cpp's {MAX_SLOTS} sequences",
                          f"use --parallel {MAX_SLOTS} or less")
    limit = slot_limit(judge, options)
    if slots > limit.most:
        raise RaLiteError(
            f"--parallel {slots} needs at least {slots} x {limit.per_slot} KV cells (think "
            f"budget {options.think_budget} + answer + request) next to the {limit.prefix}-token "
            f"shared prefix, but the context holds {limit.n_ctx}: at most {limit.most} slots fit",
            f"use --parallel {max(limit.most, 1)} or less, raise --n-ctx, or lower --think-budget")
    return slots


# --- many requests ---------------------------------------------------------------------------------
@dataclass
class Finished:
    """One request's outcome: its position in the input, and a judgment or the error."""

    index: int
    judgment: "Judgment | None"           # noqa: F821
    error: BaseException | None


def judge_each(judge, requests: Iterable[JudgeRequest | dict], options=None,
               parallel: int = 2) -> Iterator[Finished]:
    """Judge every request, `parallel` at a time; yield each outcome as it finishes (completion
    order). A RaLiteError (this request's own problem, e.g. it does not fit) is yielded, so one
    bad request never stops the others; anything else (a bug) is raised, on every path."""
    if parallel <= 1:
        for index, request in enumerate(requests):
            try:
                yield Finished(index, judge.judge_request(_as_request(request), options), None)
            except RaLiteError as error:
                yield Finished(index, None, error)
        return
    if not is_local(judge):
        yield from _threaded(judge, requests, options, parallel)
        return
    finished: collections.deque[Finished] = collections.deque()
    source = _IteratorSource(requests, options, finished)
    runner = ParallelRunner(judge, parallel)
    rounds = runner.rounds(source)
    complete = False
    try:
        for _ in rounds:
            while finished:
                yield _raised_unless_own(finished.popleft())
        while finished:
            yield _raised_unless_own(finished.popleft())
        complete = True
    finally:
        if not complete:
            runner.abort()
        rounds.close()


def _raised_unless_own(outcome: Finished) -> Finished:
    if outcome.error is not None and not isinstance(outcome.error, RaLiteError):
        raise outcome.error
    return outcome


def judge_in_order(judge, requests: Iterable[JudgeRequest | dict], options=None,
                   parallel: int = 2) -> Iterator:
    """Judgments in request order, each yielded as soon as it and all before it are done; the
    first failed request raises its error (as the sequential judge_many does)."""
    ready: dict[int, Finished] = {}
    next_index = 0
    for outcome in judge_each(judge, requests, options, parallel):
        ready[outcome.index] = outcome
        while next_index in ready:
            done = ready.pop(next_index)
            next_index += 1
            if done.error is not None:
                raise done.error
            yield done.judgment


class _IteratorSource:
    def __init__(self, requests, options, finished: collections.deque):
        self._requests = enumerate(requests)
        self._options = options
        self._finished = finished

    def take(self, block: bool) -> JudgeJob | None:
        while True:
            item = next(self._requests, None)
            if item is None:
                return None
            index, request = item
            try:
                request = _as_request(request)
            except RaLiteError as error:
                self._finished.append(Finished(index, None, error))
                continue
            return JudgeJob(request, self._options, self._recorder(index))

    def _recorder(self, index: int):
        def done(judgment, error):
            self._finished.append(Finished(index, judgment, error))
        return done


def _as_request(request) -> JudgeRequest:
    return JudgeRequest.from_dict(request) if isinstance(request, dict) else request


def _threaded(judge, requests, options, workers: int) -> Iterator[Finished]:
    """A remote backend: `workers` concurrent requests to its server, as serve --workers does."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    def one(index, request):
        try:
            return Finished(index, judge.judge_request(_as_request(request), options), None)
        except RaLiteError as error:
            return Finished(index, None, error)

    items = enumerate(requests)
    with ThreadPoolExecutor(workers) as pool:
        running = set()
        for index, request in items:
            running.add(pool.submit(one, index, request))
            if len(running) >= workers:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in running:
            yield future.result()
