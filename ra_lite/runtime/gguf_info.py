"""What a GGUF file is, read from its header without loading the weights.

Used to refuse bad files with a clear message before llama.cpp sees them (llama.cpp's own
failure is a bare "Failed to load model"), and by `ra-lite info`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ra_lite.errors import RaLiteError

GGUF_MAGIC = b"GGUF"

# Architectures llama.cpp runs as encoders or embedders only: they cannot generate a judgment.
NOT_CAUSAL_LM = {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3",
                 "modern-bert", "neo-bert", "t5encoder", "clip", "wavtokenizer-dec"}


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    size_bytes: int
    architecture: str
    name: str
    file_type: str            # general.file_type as llama.cpp names it (e.g. MOSTLY_Q4_K_M)
    quant: str                # short form, e.g. Q4_K_M
    n_params: int
    block_count: int | None
    context_length: int | None
    vocab_size: int | None
    gguf_type: str            # general.type: model, adapter, mmproj…
    chat_template: str | None
    pooling: bool

    @property
    def supports_thinking_switch(self) -> bool:
        """The template understands enable_thinking (Qwen3 and its fine-tunes)."""
        return bool(self.chat_template and "enable_thinking" in self.chat_template)

    def require_causal_lm(self) -> None:
        if self.gguf_type not in ("model", ""):
            raise RaLiteError(f"{self.path} is a GGUF {self.gguf_type}, not a model",
                              "pass the base model's GGUF file")
        if self.architecture in NOT_CAUSAL_LM or self.pooling:
            raise RaLiteError(f"{self.path} is a {self.architecture} embedding/encoder model, "
                              "not a causal language model", "pass a chat model's GGUF (e.g. "
                              "RewardAnything-8B)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path)
        d["chat_template"] = bool(self.chat_template)
        d["supports_thinking_switch"] = self.supports_thinking_switch
        return d


@dataclass(frozen=True)
class TensorEntry:
    name: str
    n_elements: int
    n_bytes: int


@dataclass
class GGUFHeader:
    """A GGUF header as read by read_header: scalars and strings kept, arrays only counted
    (small numeric arrays, such as per-layer head counts, are kept too)."""

    metadata: dict
    array_lengths: dict[str, int]
    tensors: list[TensorEntry]
    picked: dict[str, dict[int, str]] = field(default_factory=dict)   # see read_header


# GGUF value types (gguf.GGUFValueType) and the struct format of the fixed-size ones.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAY_UP_TO = 4096


def read_header(path: str | Path, pick: dict[str, set[int]] | None = None) -> GGUFHeader:
    """Read a GGUF header without materializing its vocabulary.

    pick: string-array items to keep anyway, e.g. {"tokenizer.ggml.tokens": {bos, eos}}; they
    come back in header.picked[key][index].

    gguf.GGUFReader builds Python objects for every token and merge string (9–15 s for Qwen's
    151,936-token vocabulary, longer than llama.cpp takes to load the whole model). Here string
    arrays are skipped by their lengths over an mmap, which takes tens of milliseconds.
    Raises ValueError on anything malformed (the callers turn it into a RaLiteError).
    """
    import struct

    try:
        return _read_header(path, pick)
    except (struct.error, IndexError, OverflowError, MemoryError) as e:   # a damaged file
        raise ValueError(f"{type(e).__name__}: {e}") from None


def _read_header(path: str | Path, pick: dict[str, set[int]] | None) -> GGUFHeader:
    import mmap
    import struct

    import gguf

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        pos = 0

        def read(fmt):
            nonlocal pos
            value = struct.unpack_from(fmt, m, pos)[0]
            pos += struct.calcsize(fmt)
            return value

        def string():
            nonlocal pos
            n = read("<Q")
            if pos + n > len(m):
                raise ValueError("a string runs past the end of the file")
            text = m[pos:pos + n].decode("utf-8", "replace")
            pos += n
            return text

        def skip_strings(count, key):
            nonlocal pos
            wanted = (pick or {}).get(key)
            unpack = struct.unpack_from
            for i in range(count):
                n = unpack("<Q", m, pos)[0]
                if wanted and i in wanted:
                    picked.setdefault(key, {})[i] = \
                        m[pos + 8:pos + 8 + n].decode("utf-8", "replace")
                pos += 8 + n
            if pos > len(m):
                raise ValueError("a string array runs past the end of the file")

        def value(kind, key):
            nonlocal pos
            if kind in _SCALAR:
                return read(_SCALAR[kind])
            if kind == _STRING:
                return string()
            if kind != _ARRAY:
                raise ValueError(f"unknown GGUF value type {kind} for {key}")
            item, count = read("<I"), read("<Q")
            lengths[key] = count
            if item in _SCALAR:
                if count <= _KEEP_ARRAY_UP_TO:
                    return [read(_SCALAR[item]) for _ in range(count)]
                pos += struct.calcsize(_SCALAR[item]) * count
            elif item == _STRING:
                skip_strings(count, key)
            else:
                for _ in range(count):
                    value(item, key)
            return None

        if m[:4] != GGUF_MAGIC:
            raise ValueError("not a GGUF file")
        pos = 4
        read("<I")   # version
        n_tensors, n_kv = read("<Q"), read("<Q")
        metadata, lengths, picked = {}, {}, {}
        for _ in range(n_kv):
            key = string()
            metadata[key] = value(read("<I"), key)
        tensors, data_end = [], 0
        for _ in range(n_tensors):
            name = string()
            dims = [read("<Q") for _ in range(read("<I"))]
            kind = gguf.GGMLQuantizationType(read("<I"))
            offset = read("<Q")
            block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
            elements = 1
            for d in dims:
                elements *= d
            tensors.append(TensorEntry(name, elements, elements // block * block_bytes))
            data_end = max(data_end, offset + tensors[-1].n_bytes)
        # The weights follow the header, aligned; a file cut short (an interrupted download)
        # still has a whole header, so check that the last tensor ends inside the file.
        alignment = metadata.get("general.alignment") or 32
        data_start = -(-pos // alignment) * alignment
        if data_start + data_end > len(m):
            raise ValueError(f"the tensor data needs {data_start + data_end} bytes but the file "
                             f"has {len(m)} (truncated)")
    return GGUFHeader(metadata, lengths, tensors, picked)


def read_gguf_info(path: str | Path) -> GGUFInfo:
    path = Path(path)
    if not path.exists():
        raise RaLiteError(f"model file {path} does not exist",
                          "check the path, or omit --model to use the embedded default model")
    if path.is_dir():
        raise RaLiteError(f"{path} is a directory, not a GGUF file",
                          "pass the .gguf file itself (convert a Hugging Face folder with "
                          "`ra-lite convert`)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise RaLiteError(f"{path} is not a GGUF file (it starts with {magic!r})",
                          "pass a .gguf model; convert Hugging Face checkpoints with "
                          "`ra-lite convert`")
    import gguf

    try:
        header = read_header(path)
    except Exception as e:  # struct/value/mmap errors on damaged or truncated files
        raise RaLiteError(f"{path} is a damaged GGUF file ({type(e).__name__}: {e})",
                          "download or convert it again") from None
    meta = header.metadata
    arch = meta.get("general.architecture") or ""
    file_type = meta.get("general.file_type")
    try:
        ftype_name = gguf.LlamaFileType(file_type).name if file_type is not None else "UNKNOWN"
    except ValueError:
        ftype_name = f"TYPE_{file_type}"
    return GGUFInfo(
        path=path,
        size_bytes=path.stat().st_size,
        architecture=arch,
        name=meta.get("general.name") or path.stem,
        file_type=ftype_name,
        quant=ftype_name.removeprefix("MOSTLY_").replace("ALL_", ""),
        n_params=sum(t.n_elements for t in header.tensors),
        block_count=meta.get(f"{arch}.block_count"),
        context_length=meta.get(f"{arch}.context_length"),
        vocab_size=header.array_lengths.get("tokenizer.ggml.tokens"),
        gguf_type=meta.get("general.type") or "model",
        chat_template=meta.get("tokenizer.chat_template"),
        pooling=meta.get(f"{arch}.pooling_type") is not None,
    )
