"""Judging many requests at once on one local model (the judge-level side of the scheduler).

`Judge.parallel_runner(slots)` gives a ParallelRunner: it takes JudgeJobs from a JobSource,
prepares each exactly as the sequential path does (`Judge.prepare_request`, the same decoder
rules), runs them in the slots of one multi-sequence llama.cpp context (runtime/scheduler.py) and
reports each result through the job's `done` callback. The server and `judge_each` /
`judge_in_order` (judge_many, batch, bench) are its users.

`--parallel auto` (resolve_parallel) picks, for a local model, 8 slots when layers are offloaded
to a GPU and 4 on a CPU, capped by the KV memory: as many slots as fit the context at the
options' think budget with a short request each. The parallel context is a second KV cache
beside the engine's, so on a CPU auto stays at 1 when that cache would take more than half of
the memory the system has available (a laptop running an 8B quant near its limit). Measured on
the 2-core reference machine (benchmarks/parallel.py, think budget 256, three runs): 4 slots
judged 1.57-2.10x as many judgments/s as 1 on the embedded model and 1.23x on a
Qwen3-0.6B-shaped model, near the bare llama_decode ceiling measured beside them. A
remote backend gets 1 (its server decides); an explicit N >= 2 there means N concurrent
requests to the server.

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
SECOND_KV_MAX_SHARE = 0.5         # of available memory, for auto on a CPU (module docstring)


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


def is_local(judge) -> bool:
    """Whether `judge` decodes on a local llama.cpp engine (anything else, e.g. a remote backend
    or a wrapper without a backend, judges one request per call)."""
    backend = getattr(judge, "backend", None)
    return getattr(backend, "engine", None) is not None and hasattr(backend, "prepare")


class ParallelRunner:
    """Runs JudgeJobs in `slots` sequences of one context (see the module docstring)."""

    def __init__(self, judge, slots: int):
        from ra_lite.runtime.multi_engine import MultiSequenceContext
        from ra_lite.runtime.scheduler import MAX_SLOTS, SlotScheduler

        if not is_local(judge):
            raise RaLiteError("parallel decoding needs a local GGUF model",
                              "remote backends judge concurrently on their server (--workers)")
        if not isinstance(slots, int) or not 2 <= slots <= MAX_SLOTS:
            raise RaLiteError(f"a parallel runner needs 2 to {MAX_SLOTS} slots, not {slots!r}",
                              "use judge_request for one at a time, or 2 or more slots")
        self.judge = judge
        self.slots = slots
        self.prefix = shared_prefix_tokens(judge.backend)
        self._context = MultiSequenceContext(judge.backend.engine, slots)
        self._scheduler = SlotScheduler(self._context, slots, self.prefix)

    def run(self, source: JobSource) -> None:
        """Blocks until the source is closed and every slot is idle."""
        for _ in self.rounds(source):
            pass

    def rounds(self, source: JobSource) -> Iterator[None]:
        """Like run, one decode round per iteration (callers flush finished results between)."""
        tasks = _Tasks(self.judge, source)
        while self._scheduler.step(tasks):
            yield

    def abort(self) -> None:
        """Cancel every running judgment (done(None, JudgmentCancelled()) for each)."""
        self._scheduler.abort()

    @property
    def decode_calls(self) -> int:
        return self._scheduler.rounds

    def close(self) -> None:
        self._context.close()

    def __enter__(self) -> "ParallelRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Tasks:
    """JudgeJobs in, scheduler tasks out (prepared by the judge, results mapped back)."""

    def __init__(self, judge, source: JobSource):
        self.judge = judge
        self.source = source

    def take(self, block: bool):
        from ra_lite.runtime.scheduler import SequenceTask

        while True:
            job = self.source.take(block)
            if job is None:
                return None
            if job.cancelled():
                from ra_lite.runtime.decode import JudgmentCancelled

                job.done(None, JudgmentCancelled())
                continue
            try:
                prepared, to_judgment = self.judge.prepare_request(job.request, job.options)
            except Exception as error:   # noqa: BLE001 - e.g. does not fit: this job only
                job.done(None, error)
                continue
            return SequenceTask(prepared.prompt_tokens, prepared.sampling, prepared.steps,
                                prepared.kv_tokens, _finisher(job, to_judgment), job.cancelled)


def _finisher(job: JudgeJob, to_judgment):
    def finish(result, error):
        if error is None:
            try:
                judgment = to_judgment(result)
            except Exception as e:   # noqa: BLE001
                job.done(None, e)
                return
            job.done(judgment, None)
        else:
            job.done(None, error)
    return finish


# --- the shared prefix ----------------------------------------------------------------------------
def shared_prefix_tokens(backend) -> list[int]:
    """The tokens every judgment's prompt starts with (chat header + system prompt).

    Uses the backend's own answer when it has one; otherwise the common token prefix of two
    prompts that differ in everything the user supplies. The scheduler shares only as much of it
    as each prompt actually starts with, so a short answer costs speed, never correctness.
    """
    own = getattr(backend, "shared_prefix_tokens", None)
    if callable(own):
        return list(own())
    from ra_lite.prompt import build_chat_prompt
    from ra_lite.runtime.scheduler import common_prefix_length

    prompts = []
    for principle, prompt, responses in (("a", "b", {"x": "c", "y": "d"}),
                                         ("Q! 9", "7 ?", {"x": "z z", "y": "w"})):
        chat = build_chat_prompt(principle, prompt, responses)
        rendered = backend.render(chat, True)
        prompts.append(backend.engine.prompt_tokens(rendered,
                                                    [m["content"] for m in chat.messages]))
    return prompts[0][:common_prefix_length(*prompts)]


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
    from ra_lite.runtime.scheduler import MAX_SLOTS, common_prefix_length

    prefix = shared_prefix_tokens(judge.backend)
    minimal = JudgeRequest.create("x", "x", {"a": "x", "b": "x"})
    prepared, _ = judge.prepare_request(minimal, options)
    prepared.steps.close()
    per_slot = prepared.kv_tokens - common_prefix_length(prepared.prompt_tokens, prefix)
    n_ctx = judge.backend.engine.n_ctx
    most = min(MAX_SLOTS, max(0, (n_ctx - len(prefix)) // max(per_slot, 1)))
    return SlotLimit(most, per_slot, len(prefix), n_ctx)


def hardware_slots(engine, available=None) -> int:
    """Slots worth running on this engine's hardware, before the KV-cell cap.

    available: bytes of free memory (default: the system's MemAvailable; None = unknown)."""
    if getattr(getattr(engine, "offload", None), "n_gpu_layers", 0):
        return HARDWARE_SLOTS_GPU
    if available is None:
        from ra_lite.runtime.devices import available_memory_bytes

        available = available_memory_bytes()
    if available is not None and second_kv_bytes(engine) > SECOND_KV_MAX_SHARE * available:
        return 1
    return HARDWARE_SLOTS_CPU


def second_kv_bytes(engine) -> int:
    """The parallel context's own KV cache (f16, the engine's n_ctx), from the GGUF header."""
    from ra_lite.runtime.offload import read_footprint

    path = getattr(getattr(engine, "info", None), "path", None)
    if path is None:
        return 0
    footprint = read_footprint(path, engine.n_ctx)
    return footprint.kv_bytes_per_layer * footprint.n_layers


def resolve_parallel(judge, parallel, options=None) -> int:
    """`auto`, None or a positive int (or its text) -> the slot count; 1 = the sequential path.

    Bad values raise RaLiteError naming the limit."""
    options = options or judge.options
    if parallel is None or (isinstance(parallel, str) and parallel.strip().lower() == "auto"):
        if not is_local(judge):
            return 1
        hardware = hardware_slots(judge.backend.engine)
        if hardware <= 1:
            return 1
        return max(1, min(hardware, slot_limit(judge, options).most))
    try:
        slots = int(parallel)
        if isinstance(parallel, float) and slots != parallel:
            raise ValueError
    except (TypeError, ValueError):
        raise RaLiteError(f"--parallel {parallel!r} is not a number of slots",
                          "use auto, 1 (one judgment at a time) or a whole number >= 2") from None
    if slots < 1:
        raise RaLiteError(f"--parallel {slots} is below 1",
                          "use auto, 1 (one judgment at a time) or a whole number >= 2")
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
    order). Errors are yielded, not raised, so one bad request never stops the others."""
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
    complete = False
    try:
        for _ in runner.rounds(source):
            while finished:
                yield finished.popleft()
        while finished:
            yield finished.popleft()
        complete = True
    finally:
        if not complete:
            runner.abort()
        runner.close()


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
