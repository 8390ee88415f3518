"""What a GGUF file is, read from its header without loading the weights.

Used to refuse bad files with a clear message before llama.cpp sees them (llama.cpp's own
failure is a bare "Failed to load model"), and by `ra-lite info`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    return value


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
        reader = gguf.GGUFReader(path)
    except Exception as e:  # the reader raises assorted errors on damaged files
        raise RaLiteError(f"{path} is a damaged GGUF file ({type(e).__name__}: {e})",
                          "download or convert it again") from None
    arch = _field(reader, "general.architecture") or ""
    file_type = _field(reader, "general.file_type")
    try:
        ftype_name = gguf.LlamaFileType(file_type).name if file_type is not None else "UNKNOWN"
    except ValueError:
        ftype_name = f"TYPE_{file_type}"
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=path,
        size_bytes=path.stat().st_size,
        architecture=arch,
        name=_field(reader, "general.name") or path.stem,
        file_type=ftype_name,
        quant=ftype_name.removeprefix("MOSTLY_").replace("ALL_", ""),
        n_params=n_params,
        block_count=_field(reader, f"{arch}.block_count"),
        context_length=_field(reader, f"{arch}.context_length"),
        vocab_size=len(tokens.data) if tokens is not None else None,
        gguf_type=_field(reader, "general.type") or "model",
        chat_template=_field(reader, "tokenizer.chat_template"),
        pooling=_field(reader, f"{arch}.pooling_type") is not None,
    )
