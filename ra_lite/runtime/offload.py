"""How many layers fit in free GPU memory, and what to do when a load still runs out of it.

A model on a GPU needs, per offloaded layer, the layer's weights plus its share of the KV cache
(llama.cpp keeps a layer's K and V on the device that runs it). When every layer is offloaded the
output matrix moves too (llama.cpp offloads it only when n_gpu_layers exceeds the layer count; the
token embedding lookup always stays on the CPU). On top come the CUDA/Metal context and compute
buffers, which we do not model exactly: a headroom of HEADROOM_FRACTION of free memory plus
HEADROOM_BYTES is kept free. If the estimate is still wrong, `load_with_fallback` halves the
layer count after each failed load, and finally loads on the CPU, saying so each time.

Everything here but `plan_offload` is pure, so the decision logic is tested with faked devices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ra_lite.errors import RaLiteError
from ra_lite.runtime.gguf_info import read_header

HEADROOM_FRACTION = 0.10
HEADROOM_BYTES = 512 << 20
KV_BYTES_PER_VALUE = 2        # f16 K and V cache, llama.cpp's default type


@dataclass(frozen=True)
class ModelFootprint:
    """Bytes a model needs on the GPU, from its GGUF header (no weights are read)."""

    n_layers: int
    layer_bytes: tuple[int, ...]      # weights of blk.N.* for each layer N
    output_bytes: int                 # output.weight (or the tied token embedding)
    kv_bytes_per_layer: int           # for the n_ctx below
    n_ctx: int

    def layers_bytes(self, k: int) -> int:
        """The last k layers (llama.cpp offloads from the top of the stack)."""
        chosen = self.layer_bytes[self.n_layers - k:] if k else ()
        return sum(chosen) + k * self.kv_bytes_per_layer

    @property
    def all_bytes(self) -> int:
        return self.layers_bytes(self.n_layers) + self.output_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layer_bytes"] = list(self.layer_bytes)
        d["all_bytes"] = self.all_bytes
        return d


def kv_bytes_per_layer(n_ctx: int, n_head_kv: int, head_dim_k: int, head_dim_v: int | None = None
                       ) -> int:
    """K and V for one layer: n_ctx × n_head_kv × head_dim values each, f16."""
    head_dim_v = head_dim_k if head_dim_v is None else head_dim_v
    return n_ctx * n_head_kv * (head_dim_k + head_dim_v) * KV_BYTES_PER_VALUE


def _int(meta: dict, key: str):
    value = meta.get(key)
    if isinstance(value, list):       # per-layer arrays (e.g. head_count_kv on some archs)
        return max(value) if value else None
    return int(value) if value is not None else None


def read_footprint(path: str | Path, n_ctx: int) -> ModelFootprint:
    header = read_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture", "")
    n_layers = _int(meta, f"{arch}.block_count") or 0
    layer_bytes = [0] * n_layers
    output = embedding = 0
    for tensor in header.tensors:
        name, size = tensor.name, tensor.n_bytes
        if name.startswith("blk."):
            index = int(name.split(".")[1])
            if index < n_layers:
                layer_bytes[index] += size
        elif name == "output.weight":
            output = size
        elif name == "token_embd.weight":
            embedding = size
    n_embd = _int(meta, f"{arch}.embedding_length") or 0
    n_head = _int(meta, f"{arch}.attention.head_count") or 1
    n_head_kv = _int(meta, f"{arch}.attention.head_count_kv") or n_head
    key_len = _int(meta, f"{arch}.attention.key_length") or n_embd // n_head
    value_len = _int(meta, f"{arch}.attention.value_length") or key_len
    return ModelFootprint(n_layers=n_layers, layer_bytes=tuple(layer_bytes),
                          output_bytes=output or embedding,
                          kv_bytes_per_layer=kv_bytes_per_layer(n_ctx, n_head_kv, key_len, value_len),
                          n_ctx=n_ctx)


@dataclass(frozen=True)
class VramFit:
    """How much of a model fits a GPU budget. layers == n_layers with all_fit: offload everything."""

    layers: int
    all_fit: bool
    device: str
    free_bytes: int
    budget_bytes: int
    needed_all_bytes: int
    per_layer_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_budget(free_bytes: int) -> int:
    return max(0, int(free_bytes * (1 - HEADROOM_FRACTION)) - HEADROOM_BYTES)


def fit_layers(footprint: ModelFootprint, free_bytes: int, device: str = "GPU",
               budget: int | None = None) -> VramFit:
    """The most top-of-stack layers whose weights and KV cache fit in free memory minus headroom
    (budget: override the usable bytes, e.g. summed over several GPUs)."""
    budget = gpu_budget(free_bytes) if budget is None else budget
    n = footprint.n_layers
    per_layer = footprint.layers_bytes(n) // n if n else 0
    common = dict(device=device, free_bytes=free_bytes, budget_bytes=budget,
                  needed_all_bytes=footprint.all_bytes, per_layer_bytes=per_layer)
    if footprint.all_bytes <= budget:
        return VramFit(layers=n, all_fit=True, **common)
    k = 0
    while k < n and footprint.layers_bytes(k + 1) <= budget:
        k += 1
    return VramFit(layers=k, all_fit=False, **common)


def plan_offload(path: str | Path, n_ctx: int, gpus=None) -> VramFit | None:
    """Probe the GPUs and fit the model; None when no device memory can be read (then `auto`
    offloads everything and relies on load_with_fallback)."""
    from ra_lite.runtime.devices import probe_gpus

    gpus = probe_gpus() if gpus is None else gpus
    if not gpus:
        return None
    footprint = read_footprint(path, n_ctx)
    # llama.cpp splits layers across several CUDA devices; each keeps its own headroom.
    return fit_layers(footprint, sum(g.free_bytes for g in gpus), " + ".join(g.name for g in gpus),
                      budget=sum(gpu_budget(g.free_bytes) for g in gpus))


def next_attempt(layers: int, n_layers: int) -> int:
    """Layers to try after a failed load with `layers` (-1 = all): half as many, then 0 (CPU)."""
    current = n_layers if layers < 0 or layers > n_layers else layers
    return current // 2


def load_with_fallback(load, decision, n_layers: int, notify):
    """Call load(n_gpu_layers) with the decision's count; on failure, halve and retry, then CPU.

    Returns (what load returned, the OffloadDecision actually used). The last failure (on the
    CPU, or a CPU-only decision) propagates unchanged.
    """
    layers, failures = decision.n_gpu_layers, []
    while True:
        try:
            result = load(layers)
        except (ValueError, RuntimeError, MemoryError) as e:
            if layers == 0:
                raise
            shown = "all" if layers < 0 else str(layers)
            following = next_attempt(layers, n_layers)
            failures.append(shown)
            where = f"{following} GPU layers" if following else "the CPU only"
            notify(f"loading with {shown} GPU layers failed ({_first_line(e)}), probably out of "
                   f"GPU memory; retrying with {where}")
            layers = following
            continue
        if not failures:
            return result, decision
        tried = ", ".join(failures)
        if layers == 0:
            return result, OffloadDecision(0, f"CPU: the GPU loads failed ({tried} layers)")
        return result, OffloadDecision(layers, f"GPU: {layers} of {n_layers} layers offloaded "
                                               f"(after failed loads with {tried} layers)")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class OffloadDecision:
    """How many layers go to the GPU, and why (shown to the user)."""

    n_gpu_layers: int
    reason: str


def decide_offload(n_gpu_layers: int | str, gpu_build: bool, n_layers: int,
                   fit=None) -> OffloadDecision:
    """'auto' offloads what fits in free GPU memory on a build that can offload, else nothing.

    fit: a ra_lite.runtime.offload.VramFit (how many layers fit the probed devices); None when device
    memory is unknown, and then 'auto' offloads every layer (a failed load retries with fewer).
    """
    if n_gpu_layers == "auto":
        if not gpu_build:
            return OffloadDecision(0, "CPU: this llama-cpp-python build has no GPU support "
                                      "(see README: CUDA/Metal builds)")
        if fit is None:
            return OffloadDecision(-1, f"GPU: all {n_layers} layers offloaded (auto)")
        need, free = _gib(fit.needed_all_bytes), _gib(fit.free_bytes)
        if fit.all_fit:
            return OffloadDecision(-1, f"GPU: all {n_layers} layers offloaded (auto: needs {need} "
                                       f"of {free} free on {fit.device})")
        if fit.layers <= 0:
            return OffloadDecision(0, f"CPU: auto found {free} free on {fit.device}, not enough "
                                      f"for one layer ({_gib(fit.per_layer_bytes)}) plus headroom")
        return OffloadDecision(fit.layers, f"GPU: {fit.layers} of {n_layers} layers offloaded "
                                           f"(auto: {free} free on {fit.device}, all would need "
                                           f"{need})")
    try:
        layers = int(n_gpu_layers)
    except (TypeError, ValueError):
        raise RaLiteError(f"n_gpu_layers must be 'auto' or an integer, not {n_gpu_layers!r}",
                          "pass --n-gpu-layers auto, 0 (CPU) or a layer count (-1 = all)") from None
    if layers != 0 and not gpu_build:
        return OffloadDecision(0, f"CPU: {layers} GPU layers asked for, but this llama-cpp-python "
                                  "build has no GPU support (see README: CUDA/Metal builds)")
    if layers == 0:
        return OffloadDecision(0, "CPU: GPU offload switched off (n_gpu_layers=0)")
    shown = n_layers if layers < 0 or layers > n_layers else layers
    return OffloadDecision(layers, f"GPU: {shown} of {n_layers} layers offloaded")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
