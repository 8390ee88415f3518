"""The judge queue: the one place where a JudgeRequest becomes a Judgment.

Every caller submits here: `Judge.judge` / `judge_request` (one ticket), `judge_many`,
`ra-lite batch`, `bench` and `ra_lite.rewards` (`JudgeQueue.each`), and `ra-lite serve`
(`JudgeQueue.serve`, fed by the server's job queue in ra_lite.serve.jobs). A request travels

    Ticket  ->  judgment cache (a hit answers at once)  ->  order plan (K response orders)
            ->  local: one scheduler task per order, run in up to `slots` sequences of the
                engine's one context (runtime/scheduler.py)
                call backend: `slots` threads, each running one ticket's orders in turn
            ->  Gather (the orders' results, in order)  ->  OrderPlan.to_judgment
            ->  judgment cache (stored)  ->  ticket.done(judgment, error)

One slot is a valid count: a single judgment is this queue with one slot. Cancellation is per
ticket (`cancelled` is polled between decode steps on a local model, before each call on a
remote one), and so is streaming (`on_reasoning`, told the official order's reasoning).

This module sits below the Judge facade (judge.py) and above the backends (backend.py): it
imports neither judge.py nor anything that imports it.
"""

from __future__ import annotations

import collections
import inspect
import queue as thread_queue
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Protocol

from ra_lite.backend import LocalBackend, RequestBackend, forcing_for, plan_orders
from ra_lite.errors import RaLiteError
from ra_lite.judgment import Judgment
from ra_lite.options import JudgeOptions
from ra_lite.request import JudgeRequest
from ra_lite.runtime.decode import JudgmentCancelled


def _never() -> bool:
    return False


@dataclass(eq=False)
class Ticket:
    """One request to judge. done(judgment, error) is called exactly once, from the thread
    that drives the queue; cancelled() is polled between decode steps (then done(None,
    JudgmentCancelled())). forcing_from: replay that judgment's official-order output."""

    request: JudgeRequest
    options: JudgeOptions | None
    done: Callable[[Judgment | None, BaseException | None], None]
    cancelled: Callable[[], bool] = _never
    on_reasoning: Callable | None = None
    forcing_from: Judgment | None = None


class TicketSource(Protocol):
    """take(block=False): the next ticket, or None when none is waiting now. take(block=True)
    (asked when the queue has nothing running): wait for one; None means the source is closed.
    Call backends take from several threads at once."""

    def take(self, block: bool) -> Ticket | None: ...


@dataclass
class Finished:
    """One request's outcome: its position in the input, and a judgment or the error."""

    index: int
    judgment: Judgment | None
    error: BaseException | None


class Gather:
    """`count` parts of one piece of work that finish in any order (a request's response
    orders; a server job's requests): complete(results, error) once all have, results in part
    order. The first error is what completes it, and `failed` tells the other parts to stop."""

    def __init__(self, count: int, complete: Callable[[list | None, BaseException | None], None]):
        self.results: list = [None] * count
        self.left = count
        self.error: BaseException | None = None
        self.complete = complete
        self._lock = threading.Lock()        # parts of a server job finish on several threads
        if count == 0:
            complete([], None)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def finisher(self, index: int) -> Callable[[object, BaseException | None], None]:
        def finish(result, error):
            with self._lock:
                if error is not None and self.error is None:
                    self.error = error
                self.results[index] = result
                self.left -= 1
                if self.left:
                    return
            if self.error is not None:
                self.complete(None, self.error)
            else:
                self.complete(self.results, None)
        return finish


class Owner(Protocol):
    """What the queue needs of the judge it serves (a ra_lite.judge.Judge, or a client of a
    ra-lite server in ra_lite.rewards)."""

    backend: object
    options: JudgeOptions | None
    model_name: str

    def say_once(self, key: str, message: str) -> None: ...


class JudgeQueue:
    """Judges tickets on one judge's backend with `slots` judgments at once (module doc).

    cache: a ra_lite.judgment_cache.ModelCache for the judge's model (looked up before a
    request is planned, stored after it is judged), or None.
    """

    def __init__(self, owner: Owner | Callable[[], Owner], parallel: int | str = 1, cache=None,
                 options: JudgeOptions | None = None):
        """owner: the judge, or a function that loads it, called only when a request is not
        answered by the cache (a fully cached batch never loads its model). parallel: the slot
        count, or auto (ra_lite.slots.resolve_slots, at `options`' think budget)."""
        self.parallel = parallel
        self.cache = cache
        self._options = options
        self._load = owner if callable(owner) and not hasattr(owner, "backend") else None
        self._aborted: BaseException | None = None
        if self._load is None:
            self._attach(owner)

    def _attach(self, owner: Owner) -> None:
        from ra_lite.slots import resolve_slots

        self.owner = owner
        self.backend = owner.backend
        self.local = isinstance(self.backend, LocalBackend)
        # (The options only size a local model's slots; a server client has none.)
        slots = resolve_slots(self.backend, self.parallel, self._options or owner.options)
        self.slots = slots
        if self.local:
            self.backend.shared_prefix_tokens()
            self.backend.engine.scheduler(slots)   # room for `slots` sequences now

    def _loaded(self) -> None:
        if self._load is not None:
            load, self._load = self._load, None
            self._attach(load())

    # --- entry points -------------------------------------------------------------------------
    def judge(self, request: JudgeRequest, options: JudgeOptions | None = None, *,
              on_reasoning=None, cancelled=None, forcing_from: Judgment | None = None
              ) -> Judgment:
        """One request, judged now in the calling thread; its error raised."""
        outcome: list = []
        ticket = Ticket(request, options or self.owner.options,
                        lambda judgment, error: outcome.append((judgment, error)),
                        cancelled or _never, on_reasoning, forcing_from)
        intake = _Intake(self, _Tickets([ticket]))
        if self._model_needed(intake):
            for _ in self._drive(intake):
                pass
        judgment, error = outcome[0]
        if error is not None:
            raise error
        return judgment

    def each(self, requests: Iterable[JudgeRequest | dict], options: JudgeOptions | None = None
             ) -> Iterator[Finished]:
        """Judge every request, yielding each outcome as it finishes (completion order; input
        order with one slot). A RaLiteError (the request's own problem, e.g. it does not fit) is
        yielded, so one bad request never stops the others; anything else (a bug) is raised.
        Stopping early (closing the iterator) cancels what is still running."""
        finished: collections.deque[Finished] = collections.deque()
        options = options or self._options or (self.owner.options if self._load is None else None)
        intake = _Intake(self, _RequestTickets(requests, options, finished))
        needed = self._model_needed(intake)
        while finished:
            yield _raised_unless_own(finished.popleft())
        if not needed:
            return
        rounds = self._drive(intake)
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
                self.abort()
            rounds.close()

    def in_order(self, requests: Iterable[JudgeRequest | dict],
                 options: JudgeOptions | None = None) -> Iterator[Judgment]:
        """Judgments in request order, each yielded as soon as it and all before it are done;
        the first failed request raises its error."""
        ready: dict[int, Finished] = {}
        next_index = 0
        for outcome in self.each(requests, options):
            ready[outcome.index] = outcome
            while next_index in ready:
                done = ready.pop(next_index)
                next_index += 1
                if done.error is not None:
                    raise done.error
                yield done.judgment

    def serve(self, source: TicketSource) -> None:
        """Judge the source's tickets until it is closed and nothing is running (the server's
        job queue, ra_lite.serve.jobs)."""
        for _ in self.rounds(source):
            pass

    def rounds(self, source: TicketSource) -> Iterator[None]:
        """serve(), one step per iteration: a decode round (local) or a finished ticket (call
        backends). Close it when stopping early."""
        self._loaded()
        yield from self._drive(_Intake(self, source))

    def abort(self, error: BaseException | None = None) -> None:
        """End every running judgment: done(None, error) for each (default JudgmentCancelled,
        for a consumer that stopped; a failure of the queue itself passes itself)."""
        self._aborted = error or JudgmentCancelled()
        if self._load is None and self.local:
            self.backend.engine.abort(error)

    # --- driving ------------------------------------------------------------------------------
    def _model_needed(self, intake: "_Intake") -> bool:
        """Let the cache answer the intake's first tickets without the model; when one is left
        to judge, load the model (if not loaded) and keep that ticket first: True."""
        first = intake.take(block=False)
        if first is None:
            return False
        intake.push_back(first)
        self._loaded()
        return True

    def _drive(self, intake: "_Intake") -> Iterator[None]:
        """Run the intake's tickets; yields after every decode round (local) or finished
        ticket (call backends), so callers can hand out results in between."""
        self._aborted = None
        if self.local:
            yield from self.backend.engine.rounds(_LocalTasks(self, intake), self.slots)
        elif self.slots == 1:
            while (ticket := intake.take(block=True)) is not None:
                self._call(ticket)
                yield
        else:
            yield from self._threads(intake)

    def _threads(self, intake: "_Intake") -> Iterator[None]:
        """`slots` threads taking tickets and calling the backend; a yield per finished one."""
        ticks: thread_queue.Queue = thread_queue.Queue()

        def work():
            try:
                while self._aborted is None and (ticket := intake.take(block=True)) is not None:
                    self._call(ticket)
                    ticks.put(True)
            finally:
                ticks.put(False)

        threads = [threading.Thread(target=work, name=f"ra-lite-judge-{i}", daemon=True)
                   for i in range(self.slots)]
        for thread in threads:
            thread.start()
        running = len(threads)
        while running:
            if not ticks.get():
                running -= 1
            yield

    def _call(self, ticket: Ticket) -> None:
        """One ticket on a call backend: its orders one after another, then done()."""
        try:
            if isinstance(self.backend, RequestBackend):
                judgment = self.backend.judge_request(ticket.request, ticket.options)
            else:
                plan, forcing = self._plan(ticket)
                results = []
                for i, chat in enumerate(plan.chats):
                    if ticket.cancelled():
                        raise JudgmentCancelled()
                    extra = {}
                    # Passed only when given, so a backend written before they existed works.
                    if ticket.on_reasoning is not None and i == 0:
                        extra["on_reasoning"] = ticket.on_reasoning
                    if ticket.cancelled is not _never and _accepts(self.backend.generate,
                                                                   "cancelled"):
                        extra["cancelled"] = ticket.cancelled
                    results.append(self.backend.generate(chat, ticket.options, forcing, **extra))
                judgment = plan.to_judgment(results)
        except BaseException as error:   # delivered to the ticket; the queue goes on
            ticket.done(None, error)
            return
        ticket.done(judgment, None)

    def _plan(self, ticket: Ticket):
        """The ticket's order plan and, for a replay, the forcing of its official order."""
        plan = plan_orders(ticket.request, ticket.options, self.owner.model_name,
                           self.owner.say_once)
        forcing = forcing_for(ticket.forcing_from, plan.chats[0]) \
            if ticket.forcing_from is not None else None
        return plan, forcing


class _Intake:
    """The source's tickets, minus those already cancelled and those the judgment cache
    answers; the rest come out with a done() that stores their judgment in the cache.
    Thread-safe: call backends take from several threads."""

    def __init__(self, queue: JudgeQueue, source: TicketSource):
        self.queue, self.source = queue, source
        self._lock = threading.Lock()
        self._back: Ticket | None = None

    def push_back(self, ticket: Ticket) -> None:
        """Hand `ticket` (taken, looked up) out again first."""
        self._back = ticket

    def take(self, block: bool) -> Ticket | None:
        if self._back is not None:
            ticket, self._back = self._back, None
            return ticket
        while True:
            with self._lock:
                if self.queue._aborted is not None:
                    return None
                ticket = self.source.take(block)
            if ticket is None:
                return None
            if ticket.cancelled():
                ticket.done(None, JudgmentCancelled())
                continue
            cache = self.queue.cache
            if cache is None or ticket.forcing_from is not None:
                return ticket
            hit = cache.lookup(ticket.request, ticket.options)
            if hit is not None:
                ticket.done(hit, None)
                continue
            return replace(ticket, done=_storing(cache, ticket))


def _storing(cache, ticket: Ticket):
    def done(judgment, error):
        if error is None:
            cache.store(ticket.request, ticket.options, judgment)
        ticket.done(judgment, error)
    return done


class _LocalTasks:
    """Tickets in, scheduler tasks out: each ticket planned and prepared by the local backend
    as one task per response order, gathered back into one Judgment."""

    def __init__(self, queue: JudgeQueue, intake: _Intake):
        self.queue, self.intake = queue, intake
        self._parts: collections.deque = collections.deque()

    def take(self, block: bool):
        while True:
            if self._parts:
                return self._parts.popleft()
            ticket = self.intake.take(block)
            if ticket is None:
                return None
            try:
                plan, forcing = self.queue._plan(ticket)
                parts = [self.queue.backend.prepare(chat, ticket.options, forcing,
                                                    ticket.on_reasoning if i == 0 else None)
                         for i, chat in enumerate(plan.chats)]
            except Exception as error:   # noqa: BLE001 - e.g. does not fit: this ticket only
                ticket.done(None, error)
                continue
            gather = Gather(len(parts), _judgment_of(plan, ticket))

            def cancelled(gather=gather, ticket=ticket):
                return gather.failed or ticket.cancelled()

            self._parts.extend(part.task(gather.finisher(i), cancelled)
                               for i, part in enumerate(parts))


def _judgment_of(plan, ticket: Ticket):
    """Gather's completion for a ticket's orders: their results as one Judgment."""
    def complete(results, error):
        if error is not None:
            ticket.done(None, error)
            return
        try:
            judgment = plan.to_judgment(results)
        except Exception as e:   # noqa: BLE001 - this ticket's failure only
            ticket.done(None, e)
            return
        ticket.done(judgment, None)
    return complete


class _Tickets:
    """A fixed list of tickets (closed once all are taken)."""

    def __init__(self, tickets: list[Ticket]):
        self.tickets = collections.deque(tickets)

    def take(self, block: bool) -> Ticket | None:
        return self.tickets.popleft() if self.tickets else None


class _RequestTickets:
    """Requests (or their dicts) as tickets whose outcomes land in `finished`; a request dict
    that does not parse is finished with its error without being judged."""

    def __init__(self, requests, options, finished: collections.deque):
        self._requests = enumerate(requests)
        self._options = options
        self._finished = finished

    def take(self, block: bool) -> Ticket | None:
        while True:
            item = next(self._requests, None)
            if item is None:
                return None
            index, request = item
            try:
                request = as_request(request)
            except RaLiteError as error:
                self._finished.append(Finished(index, None, error))
                continue
            return Ticket(request, self._options, self._recorder(index))

    def _recorder(self, index: int):
        def done(judgment, error):
            self._finished.append(Finished(index, judgment, error))
        return done


def as_request(request) -> JudgeRequest:
    return JudgeRequest.from_dict(request) if isinstance(request, dict) else request


def _raised_unless_own(outcome: Finished) -> Finished:
    if outcome.error is not None and not isinstance(outcome.error, RaLiteError):
        raise outcome.error
    return outcome


def _accepts(function, name: str) -> bool:
    """Whether `function` takes keyword `name` (backends written before it existed do not)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in parameters)
