"""The KV state of the shared prompt prefix, persisted so that a fresh process skips its prefill.

Every judgment on a model starts with the same tokens: the chat header, the official system
prompt and the user header (LocalBackend.shared_prefix_tokens). CI jobs and scripts start a new
process per run, and on a CPU that prefix is seconds of prefill each time. After it is evaluated
once, its KV cells are saved under ra-lite's cache directory; a later process restores them.

API (works on a raw llama.cpp context pointer and a sequence id, so the parallel engine can
restore the prefix into sequence 0 of its own multi-sequence context):

    cache = PrefixStateCache(model_path, KVLayout.of(ctx, context_params))
    if not cache.restore(ctx, prefix_tokens, seq_id):   # True: seq_id holds the prefix's KV
        ...evaluate prefix_tokens into seq_id...         # positions 0..len-1, nothing else
        cache.store(ctx, prefix_tokens, seq_id)
    cache.last_event                                     # "hit", "miss", "stored", "rejected: why"

The state holds KV cells, not logits: evaluate at least one more token before sampling.
restore() first empties `seq_id`; on any failure it leaves `seq_id` empty and returns False.

Why a file is trusted, and when not: it is keyed by (a) the model's identity, the sha256 of the
whole GGUF (computed once per file and cached with its size, mtime and a hash of its first and
last MiB, so no load hashes gigabytes), because llama.cpp itself only checks the architecture
name and would load another model's state silently; (b) the exact prefix tokens; (c) the context
settings that change the KV layout (n_ctx, flash attention, K/V types, KV streams, full SWA);
(d) the llama.cpp build. The file repeats the key and the tokens and carries the sha256 of its
payload: a corrupt, truncated or mismatched file is deleted and reported as a miss, never loaded.
Writes go to a temporary file renamed into place; the directory is capped in size, least
recently used files evicted first.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from ra_lite.atomic_files import write_atomic
from ra_lite.file_hash import remembered_sha256

FILE_MAGIC = b"RALITE-KV1\n"
SUFFIX = ".kvstate"
DEFAULT_MAX_BYTES = 2 << 30     # ~14 prefixes of RewardAnything-8B (≈85 MB each at f16)


def default_cache_dir() -> Path:
    """<XDG_CACHE_HOME or ~/.cache>/ra-lite/prompt-cache (RA_LITE_HOME overrides ra-lite's)."""
    from ra_lite.model_ref import ra_lite_home

    return ra_lite_home() / "prompt-cache"


@dataclass(frozen=True)
class KVLayout:
    """The context settings a saved sequence state must match to be loadable and correct."""

    n_ctx: int
    flash_attn: int       # llama_flash_attn_type as requested: -1 auto, 0 off, 1 on
    type_k: int           # ggml_type of the K and V caches
    type_v: int
    n_streams: int        # KV streams: 1 when unified or when the context holds one sequence
    swa_full: bool

    @classmethod
    def of(cls, ctx, params) -> "KVLayout":
        """From a llama_context pointer and the llama_context_params it was created with."""
        import llama_cpp

        unified = bool(params.kv_unified) or params.n_seq_max <= 1
        return cls(n_ctx=int(llama_cpp.llama_n_ctx(ctx)), flash_attn=int(params.flash_attn_type),
                   type_k=int(params.type_k), type_v=int(params.type_v),
                   n_streams=1 if unified else int(params.n_seq_max),
                   swa_full=bool(params.swa_full))


@dataclass(frozen=True)
class PrefixKey:
    """Everything a saved prefix state depends on; the file name is a hash of it."""

    model_sha256: str
    prefix_sha256: str
    n_prefix_tokens: int
    layout: KVLayout
    llama_cpp: str

    def to_dict(self) -> dict:
        return asdict(self)

    def file_name(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:40] + SUFFIX


def tokens_sha256(tokens: list[int]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).hexdigest()


def llama_cpp_build() -> str:
    """The llama.cpp build: the binding's version and the shared library's size and mtime (a
    rebuilt library may lay out state differently even under the same version)."""
    import llama_cpp

    library = getattr(llama_cpp.llama_cpp._lib, "_name", "") or ""
    try:
        st = os.stat(library)
        stamp = f"{st.st_size}-{st.st_mtime_ns}"
    except OSError:
        stamp = "?"
    return f"llama-cpp-python {llama_cpp.__version__}; libllama {stamp}"


class PrefixStateCache:
    """Saved prefix states for one model file and one KV layout (see the module docstring)."""

    def __init__(self, model_path: str | Path, layout: KVLayout, directory: Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.model_path = Path(model_path)
        self.layout = layout
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.max_bytes = max_bytes
        self.last_event = ""
        self._model_sha256: str | None = None
        self._build: str | None = None

    def key(self, prefix_tokens: list[int]) -> PrefixKey:
        if self._model_sha256 is None:
            self._model_sha256 = remembered_sha256(self.model_path)
            self._build = llama_cpp_build()
        return PrefixKey(self._model_sha256, tokens_sha256(prefix_tokens), len(prefix_tokens),
                         self.layout, self._build)

    def path_for(self, prefix_tokens: list[int]) -> Path:
        return self.directory / self.key(prefix_tokens).file_name()

    # --- restore ------------------------------------------------------------------------------
    def restore(self, ctx, prefix_tokens: list[int], seq_id: int = 0) -> bool:
        """Load the saved KV of `prefix_tokens` into `seq_id` (emptied first). False: no usable
        file (the sequence is then empty; a damaged file has been deleted)."""
        import llama_cpp

        prefix_tokens = list(prefix_tokens)
        key = self.key(prefix_tokens)
        path = self.directory / key.file_name()
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            self.last_event = "miss"
            return False
        except OSError as e:
            self.last_event = f"rejected: unreadable ({e})"
            return False
        try:
            payload = _check(blob, key, prefix_tokens)
        except ValueError as e:
            return self._reject(path, str(e))
        buffer = (ctypes.c_uint8 * len(payload)).from_buffer_copy(payload)
        read = llama_cpp.llama_state_seq_set_data(ctx, buffer, len(payload), seq_id)
        if read != len(payload) or \
                llama_cpp.llama_memory_seq_pos_max(memory, seq_id) != len(prefix_tokens) - 1:
            llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
            return self._reject(path, f"llama.cpp did not accept the state (read {read} of "
                                      f"{len(payload)} bytes)")
        os.utime(path)      # recently used: evicted last
        self.last_event = "hit"
        return True

    def _reject(self, path: Path, why: str) -> bool:
        path.unlink(missing_ok=True)     # never trusted again; the next store rebuilds it
        self.last_event = f"rejected: {why}"
        return False

    # --- store --------------------------------------------------------------------------------
    def store(self, ctx, prefix_tokens: list[int], seq_id: int = 0) -> bool:
        """Save `seq_id`'s KV, which must hold exactly `prefix_tokens` (positions 0..n-1)."""
        import llama_cpp

        prefix_tokens = list(prefix_tokens)
        memory = llama_cpp.llama_get_memory(ctx)
        if llama_cpp.llama_memory_seq_pos_max(memory, seq_id) != len(prefix_tokens) - 1:
            self.last_event = "not stored: the sequence does not hold exactly the prefix"
            return False
        size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id)
        if written == 0:
            self.last_event = "not stored: llama.cpp returned no state"
            return False
        payload = bytes(buffer)[:written]
        key = self.key(prefix_tokens)
        header = json.dumps({"key": key.to_dict(), "tokens": prefix_tokens,
                             "payload_bytes": len(payload),
                             "payload_sha256": hashlib.sha256(payload).hexdigest()}).encode()
        path = self.directory / key.file_name()
        try:
            write_atomic(path, FILE_MAGIC + struct.pack("<Q", len(header)) + header + payload)
        except OSError as e:           # a full or read-only cache never fails a judgment
            self.last_event = f"not stored: {e}"
            return False
        self.evict(keep=path)
        self.last_event = "stored"
        return True

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete least recently used states until the directory is within max_bytes."""
        files = []
        for path in self.directory.glob("*" + SUFFIX):
            try:
                st = path.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, st.st_size, path))
        total = sum(size for _, size, _ in files)
        removed = []
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed.append(path)
        return removed


def _check(blob: bytes, key: PrefixKey, prefix_tokens: list[int]) -> bytes:
    """The payload of a saved state, if the file is whole and is exactly this key's."""
    start = len(FILE_MAGIC) + 8
    if len(blob) < start or not blob.startswith(FILE_MAGIC):
        raise ValueError("not a ra-lite prefix state (truncated or foreign)")
    (header_len,) = struct.unpack_from("<Q", blob, len(FILE_MAGIC))
    try:
        header = json.loads(blob[start:start + header_len])
    except (ValueError, UnicodeDecodeError):
        raise ValueError("damaged header") from None
    if not isinstance(header, dict) or header.get("key") != json.loads(json.dumps(key.to_dict())):
        raise ValueError("saved for another model, prefix, context layout or llama.cpp build")
    if header.get("tokens") != prefix_tokens:
        raise ValueError("saved for other prefix tokens")
    payload = blob[start + header_len:]
    if len(payload) != header.get("payload_bytes"):
        raise ValueError(f"truncated ({len(payload)} of {header.get('payload_bytes')} bytes)")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise ValueError("the KV data is corrupt (checksum mismatch)")
    return payload
