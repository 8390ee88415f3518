"""Continuous batching: many judgments' step generators driven in shared llama_decode calls.

Every judgment is a step generator (decode.py). One judgment on one sequence evaluates one
token per reasoning step, which on memory-bound hardware leaves most of each weight read unused.
The scheduler gives each judgment a *slot* (a sequence id of a multi-sequence context) and, every
round, puts what all active slots need into one batch: a reasoning slot its sampled token, an
answer slot its forced span, a newly admitted slot a chunk of its prompt. After the one decode it
answers each slot whose feed is complete (sample with the slot's own sampler chain, or read its
logits) and moves its generator on. A slot whose feed did not fit this batch keeps the rest for
the next round and gets no answer yet.

The shared chat header + system prompt lives once in a prefix sequence and is copied into each
slot on admission (metadata only with a unified KV cache), so it is evaluated once per context.
A new prompt that shares more than that with a running judgment (the same principle, as in most
batches) or with a finished one whose cells are still kept takes the longer run of evaluated
cells from that slot instead, the way the sequential engine reuses the previous judgment's KV.
A finished judgment's cells stay in its idle slot (retained) until its index is reused, the cells
are needed for an admission, or the source closes; they count against the KV budget meanwhile.

KV memory: all slots share the context's cells. A judgment is admitted only when its worst case
(prompt not covered by the prefix + think budget + longest answer) fits next to the worst cases
already admitted, so no judgment can run out of cells midway. One that could never fit gets a
RaLiteError; the others are untouched. Errors and cancellations end one slot only.

This module is pure scheduling (no llama_cpp): the engine is a protocol, implemented on llama.cpp
by multi_engine.py and by a scripted fake in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Protocol

import numpy as np

from ra_lite.errors import RaLiteError
from ra_lite.runtime.decode import (DecodeResult, JudgmentCancelled, ReadLogits, Sample,
                                    SamplingSettings, Start)

# llama.cpp's LLAMA_MAX_SEQ is 256 sequence ids; one of them holds the shared prefix.
MAX_SLOTS = 255
DECODE_OK, DECODE_NO_KV_SLOT = 0, 1


@dataclass
class BatchEntry:
    """One slot's tokens in a batch: positions pos, pos+1, ...; output: logits at the last."""

    slot: int
    tokens: list[int]
    pos: int
    output: bool


class MultiSequenceEngine(Protocol):
    """A context that holds a prefix sequence and `slots` judgment sequences (0..slots-1)."""

    n_ctx: int        # KV cells shared by every sequence
    n_batch: int      # most tokens one decode call takes

    def load_prefix(self, tokens: list[int]) -> None: ...          # evaluate into the prefix seq
    def attach_prefix(self, slot: int, n_tokens: int) -> None: ...  # share its first n tokens
    def copy_tokens(self, source: int, slot: int, n_tokens: int) -> None: ...  # share source's
    def set_sampling(self, slot: int, settings: SamplingSettings) -> None: ...
    def decode(self, entries: list[BatchEntry]) -> int: ...         # llama_decode's status
    def sample(self, slot: int, batch_index: int) -> int: ...
    def logits(self, batch_index: int, token_ids: list[int]) -> np.ndarray: ...
    def release(self, slot: int, from_pos: int = 0) -> None: ...    # drop its KV from from_pos


def _never() -> bool:
    return False


@dataclass
class SequenceTask:
    """One judgment as the scheduler sees it.

    kv_tokens: the most tokens the judgment can occupy (prompt + think budget + answer);
    finish(result, error) is called exactly once, with a DecodeResult or the exception.
    """

    prompt_tokens: list[int]
    sampling: SamplingSettings
    steps: Generator
    kv_tokens: int
    finish: Callable[[DecodeResult | None, BaseException | None], None]
    cancelled: Callable[[], bool] = _never


class TaskSource(Protocol):
    """take(block=False): a task, or None when none is waiting now. take(block=True) (only asked
    when every slot is idle): waits for a task; None means the source is closed."""

    def take(self, block: bool) -> SequenceTask | None: ...


@dataclass
class _Slot:
    index: int
    task: SequenceTask
    reserved: int                  # KV cells held for this judgment's worst case
    pos: int = 0                   # next position in the slot's sequence
    evaluated: list[int] = field(default_factory=list)  # the tokens at positions 0..pos-1
    pending: list[int] = field(default_factory=list)   # tokens to evaluate before `want`
    want: Sample | ReadLogits | None = None
    last_token: int | None = None  # the last evaluated token (to re-read its logits)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class SlotScheduler:
    """Runs judgments from a TaskSource in `slots` sequences of one engine (see module doc)."""

    def __init__(self, engine: MultiSequenceEngine, slots: int, shared_prefix: list[int]):
        if not 1 <= slots <= MAX_SLOTS:
            raise RaLiteError(f"{slots} parallel sequences requested",
                              f"use between 1 and {MAX_SLOTS}")
        self.engine = engine
        self.slots = slots
        self.prefix = list(shared_prefix)
        self._prefix_loaded = False
        self._free = list(range(slots - 1, -1, -1))     # pop() gives the lowest index first
        self._active: dict[int, _Slot] = {}
        # Idle slots that still hold a finished judgment's cells: index -> its evaluated tokens
        # (insertion order = age, oldest first, for freeing room).
        self._retained: dict[int, list[int]] = {}
        self._waiting: SequenceTask | None = None
        self._closed = False
        self.rounds = 0                                  # decode calls made (for tests, stats)
        self.peak_active = 0                             # most judgments running at once

    @property
    def capacity(self) -> int:
        """KV cells the judgments' own tokens may use: the context minus the shared prefix."""
        return self.engine.n_ctx - len(self.prefix)

    @property
    def reserved(self) -> int:
        """Cells held beyond the shared prefix: running worst cases plus retained cells."""
        return sum(s.reserved for s in self._active.values()) + \
            sum(self._private_cells(tokens) for tokens in self._retained.values())

    def _private_cells(self, tokens: list[int]) -> int:
        return len(tokens) - min(common_prefix_length(tokens, self.prefix), len(tokens))

    @property
    def active(self) -> int:
        return len(self._active)

    # --- the loop -----------------------------------------------------------------------------
    def run(self, source: TaskSource) -> None:
        """Until the source is closed and every slot is idle."""
        while self.step(source):
            pass

    def step(self, source: TaskSource) -> bool:
        """Admit what fits, then one decode round. False once the source is closed and idle."""
        if not self._prefix_loaded:
            if self.prefix:
                self.engine.load_prefix(self.prefix)
            self._prefix_loaded = True
        self._closed = False
        self._admit(source)
        self._drop_cancelled()
        if not self._active:
            if self._closed:
                self.drop_retained()
            return not self._closed
        self._decode_round()
        return True

    def abort(self, error: BaseException | None = None) -> None:
        """End every running and waiting judgment (a consumer that stopped early)."""
        error = error or JudgmentCancelled()
        for slot in list(self._active.values()):
            slot.task.steps.close()
            self._end(slot, None, error)
        if self._waiting is not None:
            task, self._waiting = self._waiting, None
            task.steps.close()
            task.finish(None, error)

    # --- admission ----------------------------------------------------------------------------
    def _admit(self, source: TaskSource) -> None:
        while self._free:
            if self._waiting is None:
                block = not self._active
                task = source.take(block)
                if task is None:
                    self._closed = block
                    return
                self._waiting = task
            task = self._waiting
            if task.cancelled():
                self._waiting = None
                task.steps.close()
                task.finish(None, JudgmentCancelled())
                continue
            reuse = min(common_prefix_length(task.prompt_tokens, self.prefix),
                        max(len(task.prompt_tokens) - 1, 0))
            need = task.kv_tokens - reuse
            if need > self.capacity:
                self._waiting = None
                task.steps.close()
                task.finish(None, RaLiteError(
                    f"the request needs {need} KV cells next to the {len(self.prefix)}-token "
                    f"shared prefix, but the context holds {self.engine.n_ctx}",
                    "raise --n-ctx, lower --think-budget, or shorten the responses"))
                continue
            while self.reserved + need > self.capacity and self._retained:
                self._release_retained(next(iter(self._retained)))   # the oldest first
            if self.reserved + need > self.capacity:
                return          # waits until running judgments free their cells
            self._waiting = None
            self._start(task, need)

    def drop_retained(self) -> None:
        """Release every finished judgment's kept cells."""
        for index in list(self._retained):
            self._release_retained(index)

    def _release_retained(self, index: int) -> None:
        del self._retained[index]
        self.engine.release(index)

    def _pick_index(self, prompt: list[int]) -> int:
        """A free slot index: the retained one sharing most of `prompt` (its cells are then
        trimmed in place), else one holding nothing, else the oldest retained one."""
        best, best_shared = None, 0
        for index, tokens in self._retained.items():
            shared = common_prefix_length(prompt, tokens)
            if shared > best_shared:
                best, best_shared = index, shared
        if best is None or best_shared <= common_prefix_length(prompt, self.prefix):
            empty = [i for i in self._free if i not in self._retained]
            best = empty[-1] if empty else next(iter(self._retained))
        self._free.remove(best)
        return best

    def _start(self, task: SequenceTask, reserved: int) -> None:
        slot = _Slot(self._pick_index(task.prompt_tokens), task, reserved)
        self._active[slot.index] = slot
        self.peak_active = max(self.peak_active, len(self._active))
        try:
            self.engine.set_sampling(slot.index, task.sampling)
        except Exception as error:   # noqa: BLE001 - reported to this judgment only
            task.steps.close()
            self._end(slot, None, error)
            return
        self._advance(slot, None)

    def _drop_cancelled(self) -> None:
        for slot in list(self._active.values()):
            if slot.task.cancelled():
                slot.task.steps.close()
                self._end(slot, None, JudgmentCancelled())

    # --- one decode round ---------------------------------------------------------------------
    def _decode_round(self) -> None:
        limit = self.engine.n_batch
        while True:
            plan = self._plan(limit)
            entries = [BatchEntry(slot.index, slot.pending[:take], slot.pos,
                                  take == len(slot.pending)) for slot, take in plan]
            status = self.engine.decode(entries)
            self.rounds += 1
            if status == DECODE_OK:
                break
            if status == DECODE_NO_KV_SLOT and limit > 1:
                limit //= 2          # nothing was evaluated: retry with a smaller batch
                continue
            problem = ("the KV cache has no free cell" if status == DECODE_NO_KV_SLOT
                       else f"llama_decode failed (status {status})")
            for slot, _ in plan:
                slot.task.steps.close()
                self._end(slot, None, RaLiteError(
                    problem, "lower --parallel or raise --n-ctx; run with --verbose for "
                             "llama.cpp's log"))
            return
        index = 0
        for (slot, take), entry in zip(plan, entries):
            index += take
            slot.evaluated.extend(entry.tokens)
            slot.pending = slot.pending[take:]
            slot.pos += take
            slot.last_token = entry.tokens[-1]
            if entry.output:
                self._answer(slot, index - 1)

    def _plan(self, limit: int) -> list[tuple[_Slot, int]]:
        """Share `limit` tokens among the slots: short feeds (reasoning tokens, answer spans)
        go in whole; long ones (prompts) split what is left and continue next round."""
        ready = sorted((s for s in self._active.values() if s.pending),
                       key=lambda s: len(s.pending))
        plan, room = [], limit
        for i, slot in enumerate(ready):
            share = max(1, room // (len(ready) - i))
            take = min(len(slot.pending), share, room)
            if take <= 0:
                break
            plan.append((slot, take))
            room -= take
        return plan

    def _answer(self, slot: _Slot, batch_index: int) -> None:
        want, slot.want = slot.want, None
        try:
            if isinstance(want, Sample):
                answer = self.engine.sample(slot.index, batch_index)
            else:
                answer = self.engine.logits(batch_index, want.token_ids)
        except Exception as error:   # noqa: BLE001
            slot.task.steps.close()
            self._end(slot, None, error)
            return
        self._advance(slot, answer)

    def _advance(self, slot: _Slot, answer) -> None:
        """Send the answer; queue what the generator's next step needs evaluated."""
        while True:
            try:
                step = slot.task.steps.send(answer)
            except StopIteration as done:
                self._end(slot, done.value, None)
                return
            except Exception as error:   # noqa: BLE001 - this judgment's own failure
                self._end(slot, None, error)
                return
            if isinstance(step, Start):
                answer = self._begin(slot, step.tokens)
                continue
            slot.pending.extend(step.feed)
            slot.want = step
            if not slot.pending and slot.last_token is not None:
                # Nothing new to evaluate, but this slot's last logits are gone (other slots
                # decoded since): evaluate its last token again.
                slot.pos -= 1
                del slot.evaluated[slot.pos:]
                self.engine.release(slot.index, slot.pos)
                slot.pending = [slot.last_token]
            if not slot.pending:
                slot.task.steps.close()
                self._end(slot, None, RaLiteError("a judgment step had nothing to evaluate",
                                                  "report this as a bug"))
            elif slot.pos + len(slot.pending) > self.engine.n_ctx:
                slot.task.steps.close()
                self._end(slot, None, RaLiteError(
                    f"the judgment outgrew the context ({self.engine.n_ctx} tokens)",
                    "raise --n-ctx or lower --think-budget"))
            return

    def _begin(self, slot: _Slot, prompt: list[int]) -> int:
        """Share the longest evaluated start of `prompt`: from the prefix sequence, or from a
        running slot that got further (cells are shared, not copied). KV budgeting does not count
        on the second kind (the source may end first), so reservations stay worst-case."""
        most = max(len(prompt) - 1, 0)      # one token must be evaluated, to have logits
        own = self._retained.pop(slot.index, None)
        reuse = min(common_prefix_length(prompt, self.prefix), most)
        source = None                       # a slot index, or slot.index for its own cells
        candidates = [(other.index, other.evaluated) for other in self._active.values()
                      if other is not slot] + list(self._retained.items())
        if own is not None:
            candidates.append((slot.index, own))
        for index, tokens in candidates:
            shared = min(common_prefix_length(prompt, tokens), most)
            if shared > reuse:
                reuse, source = shared, index
        if own is not None and source != slot.index:
            self.engine.release(slot.index)
        if source == slot.index:
            self.engine.release(slot.index, reuse)          # keep the shared start in place
        elif source is not None:
            self.engine.copy_tokens(source, slot.index, reuse)
        elif reuse:
            self.engine.attach_prefix(slot.index, reuse)
        slot.pos = reuse
        slot.evaluated = list(prompt[:reuse])
        slot.pending = list(prompt[reuse:])
        return reuse

    def _end(self, slot: _Slot, result: DecodeResult | None, error: BaseException | None) -> None:
        del self._active[slot.index]
        if error is None and slot.evaluated and not slot.pending:
            self._retained[slot.index] = slot.evaluated     # for the next prompt to share
        else:
            self.engine.release(slot.index)
        self._free.append(slot.index)
        self._free.sort(reverse=True)
        slot.task.finish(result, error)
