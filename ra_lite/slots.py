"""How many judgments run at once: the one place a slot count is chosen and checked.

A local model runs up to that many judgments side by side in its one llama.cpp context (the
slot scheduler, ra_lite.runtime.scheduler); a call backend (a remote server or pool) gets that
many concurrent calls. `auto` picks, for a local model, 8 slots when layers are offloaded to a
GPU and 4 on a CPU, capped by the KV memory: as many slots as fit the context at the options'
think budget with a short request each (no second KV cache: a judgment's cells are all it adds).
Measured on the 2-core reference machine (benchmarks/parallel.py, think budget 256, three runs):
4 slots judged 1.57-2.10x as many judgments/s as 1 on the embedded model and 1.23x on a
Qwen3-0.6B-shaped model, near the bare llama_decode ceiling measured beside them. For a remote
backend `auto` is its servers' slots (llama-server's /props, summed over a pool; a ra-lite
server's /health) and UNKNOWN_REMOTE_SLOTS when they do not say.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ra_lite.backend import LocalBackend, plan_orders
from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest
from ra_lite.runtime.decode import common_prefix_length
from ra_lite.runtime.scheduler import MAX_SLOTS

HARDWARE_SLOTS_GPU = 8
HARDWARE_SLOTS_CPU = 4
# A server that does not say how many judgments it runs at once gets one at a time: more would
# only queue on its side (and time out there) if it has one slot.
UNKNOWN_REMOTE_SLOTS = 1
FIX = "use auto, 1 (one judgment at a time) or a whole number >= 2"


@dataclass
class SlotLimit:
    """How many slots fit the KV cache: each needs at least `per_slot` cells (think budget +
    answer + a minimal request) next to the `prefix` shared cells of an `n_ctx` context."""

    most: int
    per_slot: int
    prefix: int
    n_ctx: int


def slot_limit(backend: LocalBackend, options) -> SlotLimit:
    prefix = backend.shared_prefix_tokens()
    minimal = JudgeRequest.create("x", "x", {"a": "x", "b": "x"})
    chat = plan_orders(minimal, replace(options, orders=1), "").chats[0]
    part = backend.prepare(chat, replace(options, orders=1))
    part.steps.close()
    per_slot = part.kv_tokens - common_prefix_length(part.prompt_tokens, prefix)
    n_ctx = backend.engine.n_ctx
    most = min(MAX_SLOTS, max(0, (n_ctx - len(prefix)) // max(per_slot, 1)))
    return SlotLimit(most, per_slot, len(prefix), n_ctx)


def remote_slots(backend) -> int:
    """auto for a call backend: the judgments its server(s) run at once, if they say."""
    slots = getattr(backend, "slots", None)
    try:
        value = slots() if callable(slots) else None
    except Exception:   # noqa: BLE001 - a probe that fails only means "unknown"
        value = None
    return value if isinstance(value, int) and value > 0 else UNKNOWN_REMOTE_SLOTS


def hardware_slots(engine) -> int:
    """Slots worth running on this engine's hardware, before the KV-cell cap."""
    if getattr(getattr(engine, "offload", None), "n_gpu_layers", 0):
        return HARDWARE_SLOTS_GPU
    return HARDWARE_SLOTS_CPU


def parse_slots(parallel, flag: str = "--parallel") -> int | str:
    """`auto` / None -> "auto"; a positive whole number (or its text) -> it. Checks only the
    value (commands call it before loading a model); resolve_slots checks it fits."""
    if parallel is None or (isinstance(parallel, str) and parallel.strip().lower() == "auto"):
        return "auto"
    try:
        slots = int(parallel)
        if isinstance(parallel, float) and slots != parallel:
            raise ValueError
    except (TypeError, ValueError):
        raise RaLiteError(f"{flag} {parallel!r} is not a number of slots", FIX) from None
    if slots < 1:
        raise RaLiteError(f"{flag} {slots} is below 1: at least 1 slot is needed", FIX)
    return slots


def resolve_slots(backend, parallel, options) -> int:
    """`auto`, None or a positive int (or its text) -> the slot count for this backend.
    Bad values raise RaLiteError naming the limit."""
    slots = parse_slots(parallel)
    local = isinstance(backend, LocalBackend)
    if slots == "auto":
        if not local:
            return remote_slots(backend)
        return max(1, min(hardware_slots(backend.engine), slot_limit(backend, options).most))
    if slots == 1 or not local:
        return slots
    if slots > MAX_SLOTS:
        raise RaLiteError(f"--parallel {slots} is more than llama.cpp's {MAX_SLOTS} sequences",
                          f"use --parallel {MAX_SLOTS} or less")
    limit = slot_limit(backend, options)
    if slots > limit.most:
        raise RaLiteError(
            f"--parallel {slots} needs at least {slots} x {limit.per_slot} KV cells (think "
            f"budget {options.think_budget} + answer + request) next to the {limit.prefix}-token "
            f"shared prefix, but the context holds {limit.n_ctx}: at most {limit.most} slots fit",
            f"use --parallel {max(limit.most, 1)} or less, raise --n-ctx, or lower --think-budget")
    return slots
