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


# GGUF value types (gguf.GGUFValueType) and the struct format of the fixed-size ones.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_header(path: str | Path) -> tuple[dict, list[tuple[str, int]]]:
    """(scalar metadata, [(tensor name, bytes)]) of a GGUF file, from its header only.

    gguf.GGUFReader builds an object per vocabulary string (seconds for a 150k-token vocab); here
    arrays are skipped, so the offload plan costs milliseconds on top of a load.
    """
    import struct

    import gguf

    def read(fmt):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, f.read(size))[0]

    def string():
        return f.read(read("<Q")).decode("utf-8", "replace")

    def value(kind):
        if kind in _SCALAR:
            return read(_SCALAR[kind])
        if kind == _STRING:
            return string()
        if kind == _ARRAY:
            item, count = read("<I"), read("<Q")
            if item in _SCALAR and count <= 4096:       # small numeric arrays: keep (per layer)
                return [read(_SCALAR[item]) for _ in range(count)]
            if item in _SCALAR:
                f.seek(struct.calcsize(_SCALAR[item]) * count, 1)
            else:
                for _ in range(count):
                    value(item)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")

    with open(path, "rb", buffering=1 << 20) as f:
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        read("<I")
        n_tensors, n_kv = read("<Q"), read("<Q")
        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(read("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = string()
            dims = [read("<Q") for _ in range(read("<I"))]
            kind = gguf.GGMLQuantizationType(read("<I"))
            read("<Q")
            block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
            elements = 1
            for d in dims:
                elements *= d
            tensors.append((name, elements // block * block_bytes))
    return meta, tensors


def _int(meta: dict, key: str):
    value = meta.get(key)
    if isinstance(value, list):       # per-layer arrays (e.g. head_count_kv on some archs)
        return max(value) if value else None
    return int(value) if value is not None else None


def read_footprint(path: str | Path, n_ctx: int) -> ModelFootprint:
    meta, tensors = read_header(path)
    arch = meta.get("general.architecture", "")
    n_layers = _int(meta, f"{arch}.block_count") or 0
    layer_bytes = [0] * n_layers
    output = embedding = 0
    for name, size in tensors:
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
    from ra_lite.devices import probe_gpus

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
    from ra_lite.engine import OffloadDecision

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
