"""Continuous batching: judgments' step generators driven in shared llama_decode calls.

Every local judgment runs here, through the one multi-sequence context of its engine
(multi_sequence_context.py): a plain judgment in one slot, a judgment under K response orders in K, a
batch in P. Every judgment is a step generator (decode.py). One judgment on one sequence
evaluates one token per reasoning step, which on memory-bound hardware leaves most of each weight
read unused. The scheduler gives each judgment a *slot* (a sequence id) and, every round, puts
what all active slots need into one batch: a reasoning slot its sampled token (and its draft, see
below), an answer slot its forced span, a newly admitted slot a chunk of its prompt. After the one
decode it answers each slot whose feed is complete (sample with the slot's own sampler chain, or
read its logits) and moves its generator on. A slot whose feed did not fit this batch keeps the
rest for the next round and gets no answer yet.

Sharing evaluated cells. The shared chat header + system prompt lives once in a prefix sequence
and is attached to each slot on admission (metadata only with a unified KV cache), so it is
evaluated once per context. A new prompt that shares more than that with a running judgment (the
same principle, as in most batches; the same request under another response order) or with a
finished one whose cells are still kept takes the longer run of evaluated cells from that slot,
the way one sequence reuses the previous judgment's KV. If a running slot has not evaluated the
shared part *yet* (both were admitted together), the new slot follows it: it waits, without
evaluating anything, until the leader has, then copies those cells (a leader that fails first
leaves its follower to prefill on its own). A finished judgment's cells stay in its idle slot
(retained) until its index is reused or the cells are needed for an admission (and, unless the
scheduler keeps them for the engine's next run, until the source closes); they count against the
KV budget meanwhile.

Speculative reasoning. A Sample step may carry a draft: tokens the judgment expects to come next
(decode.py drafts them by n-gram lookup). The slot's feed and its draft go in the same batch with
logits on the last len(draft) + 1 rows; the scheduler samples those rows in order with the
slot's own sampler chain and stops at the first sample that differs from the draft (all matching:
one bonus sample from the last row). So every emitted token is the model's own sample given its
own previous samples, drawn by the same chain in the same order as without a draft: the output is
distributed exactly as without speculation, at any temperature. Draft cells past the first
rejection are removed before the slot's next evaluation (the next feed keeps whatever cells match
it). `max_drafting_slots` turns drafts off while more slots than that are active: batching then
already uses the spare compute a draft would take (measured in benchmarks/speculative.py).

KV memory: all slots share the context's cells. A judgment is admitted only when its worst case
(prompt not covered by the prefix + think budget + longest answer) fits next to the worst cases
already admitted, so no judgment can run out of cells midway (a draft never reaches past the
think budget). One that could never fit gets a RaLiteError; the others are untouched. Errors and
cancellations end one slot only.

This module is pure scheduling (no llama_cpp): the engine is a protocol, implemented on llama.cpp
by multi_sequence_context.py and by scripted fakes in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Protocol

import numpy as np

from ra_lite.errors import RaLiteError
from ra_lite.runtime.decode import (DecodeResult, JudgmentCancelled, ReadLogits, Sample,
                                    SamplingSettings, Start, common_prefix_length)

# llama.cpp's LLAMA_MAX_SEQ is 256 sequence ids; one of them holds the shared prefix.
MAX_SLOTS = 255
DECODE_OK, DECODE_NO_KV_SLOT = 0, 1


@dataclass
class BatchEntry:
    """One slot's tokens in a batch: positions pos, pos+1, ...; logits for the last n_outputs
    of them (1 to answer a step, 1 + draft length to verify a draft, 0 for a prompt chunk)."""

    slot: int
    tokens: list[int]
    pos: int
    n_outputs: int = 0


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


class ListSource:
    """A fixed list of tasks (closed once they are all taken)."""

    def __init__(self, tasks):
        self.tasks = list(tasks)

    def take(self, block: bool) -> SequenceTask | None:
        return self.tasks.pop(0) if self.tasks else None


# A new prompt follows a running slot only when that saves at least this many tokens of prefill.
FOLLOW_MIN_TOKENS = 16


@dataclass
class _Slot:
    index: int
    task: SequenceTask
    reserved: int                  # KV cells held for this judgment's worst case
    pos: int = 0                   # next position in the slot's sequence
    evaluated: list[int] = field(default_factory=list)  # the tokens at positions 0..pos-1
    pending: list[int] = field(default_factory=list)   # tokens to evaluate before `want`
    want: Sample | ReadLogits | None = None
    draft: list[int] = field(default_factory=list)     # to verify after `pending` (a Sample's)
    draft_cells: int = 0           # trailing evaluated cells holding drafts nobody confirmed yet
    follow: tuple[int, int] | None = None   # (leader slot, tokens): copy its cells once evaluated
    prompt: list[int] = field(default_factory=list)    # the judgment's prompt (for following)


class SlotScheduler:
    """Runs judgments from a TaskSource in up to `slots` sequences of one engine (module doc).

    keep_finished: keep finished judgments' cells when a source closes, for the next run on the
    same engine (the engine's own scheduler does; a throwaway one releases everything)."""

    def __init__(self, engine: MultiSequenceEngine, slots: int, shared_prefix: list[int],
                 keep_finished: bool = False, max_drafting_slots: int | None = None):
        if not 1 <= slots <= MAX_SLOTS:
            raise RaLiteError(f"{slots} parallel sequences requested",
                              f"use between 1 and {MAX_SLOTS}")
        self.engine = engine
        self.slots = slots
        self.prefix = list(shared_prefix)
        self.keep_finished = keep_finished
        self.max_drafting_slots = max_drafting_slots   # None: drafts verified whatever runs
        self._prefix_loaded = False
        self._free = list(range(slots - 1, -1, -1))     # pop() gives the lowest index first
        self._active: dict[int, _Slot] = {}
        # Idle slots that still hold a finished judgment's cells: index -> its evaluated tokens
        # (insertion order = age, oldest first, for freeing room).
        self._retained: dict[int, list[int]] = {}
        self._waiting: SequenceTask | None = None
        self._closed = False
        self.concurrency = slots                         # most judgments running at once now
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
    def run(self, source: TaskSource, concurrency: int | None = None) -> None:
        """Until the source is closed and every slot is idle; at most `concurrency` judgments
        (default: every slot) at once."""
        while self.step(source, concurrency):
            pass

    def step(self, source: TaskSource, concurrency: int | None = None) -> bool:
        """Admit what fits, then one decode round. False once the source is closed and idle."""
        self.concurrency = min(concurrency or self.slots, self.slots)
        if not self._prefix_loaded:
            if self.prefix:
                self.engine.load_prefix(self.prefix)
            self._prefix_loaded = True
        self._closed = False
        self._admit(source)
        self._drop_cancelled()
        if not self._active:
            if self._closed and not self.keep_finished:
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
        while self._free and len(self._active) < self.concurrency:
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
        best, best_shared = _best_source(prompt, self._retained.items(), len(prompt), (None, 0))
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
        self._resolve_followers()
        limit = self.engine.n_batch
        while True:
            plan = self._plan(limit)
            entries = [BatchEntry(slot.index, slot.pending[:take] + draft, slot.pos,
                                  (1 + len(draft)) if take == len(slot.pending) else 0)
                       for slot, take, draft in plan]
            status = self.engine.decode(entries)
            self.rounds += 1
            if status == DECODE_OK:
                break
            if status == DECODE_NO_KV_SLOT and limit > 1:
                limit //= 2          # nothing was evaluated: retry with a smaller batch
                continue
            problem = ("the KV cache has no free cell" if status == DECODE_NO_KV_SLOT
                       else f"llama_decode failed (status {status})")
            for slot, _, _ in plan:
                slot.task.steps.close()
                self._end(slot, None, RaLiteError(
                    problem, "lower --parallel or raise --n-ctx; run with --verbose for "
                             "llama.cpp's log"))
            return
        index = 0
        for (slot, take, draft), entry in zip(plan, entries):
            index += len(entry.tokens)
            slot.evaluated.extend(entry.tokens)
            slot.pending = slot.pending[take:]
            slot.pos += len(entry.tokens)
            if entry.n_outputs:
                slot.draft_cells = len(draft)
                self._answer(slot, index - entry.n_outputs, draft)

    def _plan(self, limit: int) -> list[tuple[_Slot, int, list[int]]]:
        """Share `limit` tokens among the slots: short feeds (reasoning tokens, answer spans)
        go in whole, with their drafts where allowed and room is left; long ones (prompts)
        split what is left and continue next round. Followers wait."""
        ready = sorted((s for s in self._active.values() if s.pending and s.follow is None),
                       key=lambda s: len(s.pending))
        drafting = self.max_drafting_slots is None or len(self._active) <= self.max_drafting_slots
        plan, room = [], limit
        for i, slot in enumerate(ready):
            share = max(1, room // (len(ready) - i))
            take = min(len(slot.pending), share, room)
            if take <= 0:
                break
            draft = []
            if drafting and slot.draft and take == len(slot.pending):
                draft = slot.draft[:max(0, room - take - (len(ready) - i - 1))]
            plan.append((slot, take, draft))
            room -= take + len(draft)
        return plan

    def _answer(self, slot: _Slot, first_row: int, draft: list[int]) -> None:
        want, slot.want = slot.want, None
        try:
            if isinstance(want, Sample):
                # Rows in order, each with the slot's own chain: stop at the first sample that
                # is not the draft's token (the chain has then seen exactly the emitted tokens).
                want.verified = len(draft)
                answer = []
                for row in range(len(draft) + 1):
                    token = self.engine.sample(slot.index, first_row + row)
                    answer.append(token)
                    if row == len(draft) or token != draft[row]:
                        break
            else:
                answer = self.engine.logits(first_row, want.token_ids)
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
            feed = list(step.feed)
            if slot.draft_cells:
                # Draft cells the feed confirms stay (same token, same position); the rest go.
                tail = slot.evaluated[len(slot.evaluated) - slot.draft_cells:]
                keep = common_prefix_length(feed, tail)
                if keep < slot.draft_cells:
                    self._truncate(slot, slot.pos - slot.draft_cells + keep)
                feed = feed[keep:]
                slot.draft_cells = 0
            slot.pending.extend(feed)
            slot.want = step
            slot.draft = list(step.draft) if isinstance(step, Sample) else []
            if not slot.pending and slot.evaluated and slot.follow is None:
                # Nothing new to evaluate, but this slot's last logits are gone (other slots
                # decoded since): evaluate its last token again.
                last = slot.evaluated[-1]
                self._truncate(slot, slot.pos - 1)
                slot.pending = [last]
            if not slot.pending:
                slot.task.steps.close()
                self._end(slot, None, RaLiteError("a judgment step had nothing to evaluate",
                                                  "report this as a bug"))
            elif slot.pos + len(slot.pending) > self.engine.n_ctx:
                slot.task.steps.close()
                self._end(slot, None, RaLiteError(
                    f"the judgment outgrew the context ({self.engine.n_ctx} tokens)",
                    "raise --n-ctx or lower --think-budget"))
            elif slot.pos + len(slot.pending) + len(slot.draft) > self.engine.n_ctx:
                slot.draft = []
            return

    def _truncate(self, slot: _Slot, pos: int) -> None:
        slot.pos = pos
        del slot.evaluated[pos:]
        self.engine.release(slot.index, pos)

    def _begin(self, slot: _Slot, prompt: list[int]) -> int:
        """Share the longest evaluated start of `prompt`: from the prefix sequence, from a
        running slot that got further, or from a finished judgment's kept cells (cells are
        shared, not copied). A running slot that is still evaluating a longer shared start is
        followed instead (see the module docstring). KV budgeting does not count on shared
        cells (their source may end first), so reservations stay worst-case. Returns how many
        prompt tokens the judgment will not evaluate itself."""
        most = max(len(prompt) - 1, 0)      # one token must be evaluated, to have logits
        slot.prompt = list(prompt)
        own = self._retained.pop(slot.index, None)
        reuse = min(common_prefix_length(prompt, self.prefix), most)
        source = None                       # a slot index, or slot.index for its own cells
        candidates = [(other.index, other.evaluated) for other in self._active.values()
                      if other is not slot and other.follow is None] + \
            list(self._retained.items())
        if own is not None:
            candidates.append((slot.index, own))
        source, reuse = _best_source(prompt, candidates, most, (source, reuse))
        evaluating = [(other.index, other.evaluated + other.pending)
                      for other in self._active.values()
                      if other is not slot and other.follow is None and other.pending]
        leader, planned = _best_source(prompt, evaluating, most,
                                       (None, reuse + FOLLOW_MIN_TOKENS - 1))
        if own is not None and source != slot.index:
            self.engine.release(slot.index)
        if leader is not None:
            if source == slot.index:
                self.engine.release(slot.index)
            slot.follow = (leader, planned)
            slot.pos, slot.evaluated, slot.pending = 0, [], list(prompt)
            return planned
        self._share(slot, prompt, reuse, source)
        return reuse

    def _share(self, slot: _Slot, prompt: list[int], reuse: int, source: int | None) -> None:
        """Give `slot` the first `reuse` cells of `prompt`: its own kept ones (source is the
        slot itself), another slot's, or the prefix sequence's (source None)."""
        if source == slot.index:
            self.engine.release(slot.index, reuse)          # keep the shared start in place
        elif source is not None:
            self.engine.copy_tokens(source, slot.index, reuse)
        elif reuse:
            self.engine.attach_prefix(slot.index, reuse)
        slot.pos = reuse
        slot.evaluated = list(prompt[:reuse])
        slot.pending = list(prompt[reuse:])

    def _resolve_followers(self) -> None:
        """Followers whose leader has evaluated the shared start copy it and go on; those whose
        leader left (finished, failed) share what is there now and evaluate the rest."""
        for slot in list(self._active.values()):
            if slot.follow is None:
                continue
            leader_index, n = slot.follow
            leader = self._active.get(leader_index)
            if leader is not None and leader.follow is None and len(leader.evaluated) < n and \
                    common_prefix_length(leader.evaluated + leader.pending, slot.prompt) >= n:
                continue                                    # not there yet: keep waiting
            slot.follow = None
            extra = slot.pending[len(slot.prompt):]         # what later steps queued
            most = max(len(slot.prompt) - 1, 0)
            reuse = min(common_prefix_length(slot.prompt, self.prefix), most)
            source = None
            candidates = [(o.index, o.evaluated) for o in self._active.values()
                          if o is not slot and o.follow is None] + list(self._retained.items())
            for index, tokens in candidates:
                shared = min(common_prefix_length(slot.prompt, tokens), most)
                if shared > reuse:
                    reuse, source = shared, index
            self._share(slot, slot.prompt, reuse, source)
            slot.pending += extra

    def _end(self, slot: _Slot, result: DecodeResult | None, error: BaseException | None) -> None:
        del self._active[slot.index]
        if slot.draft_cells and error is None:
            self._truncate(slot, slot.pos - slot.draft_cells)   # unconfirmed: not reusable
            slot.draft_cells = 0
        if error is None and slot.evaluated and not slot.pending and slot.follow is None:
            self._retained[slot.index] = slot.evaluated     # for the next prompt to share
        else:
            self.engine.release(slot.index)
        self._free.append(slot.index)
        self._free.sort(reverse=True)
        slot.task.finish(result, error)


def _best_source(prompt: list[int], candidates, most: int, floor: tuple) -> tuple:
    """(index, shared) of the candidate (index, tokens) whose tokens share the longest start
    with `prompt` (at most `most`), if longer than floor's; else `floor`."""
    best, best_shared = floor
    for index, tokens in candidates:
        shared = min(common_prefix_length(prompt, tokens), most)
        if shared > best_shared:
            best, best_shared = index, shared
    return best, best_shared
