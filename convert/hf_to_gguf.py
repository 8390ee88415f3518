"""Convert a HF Qwen3 / Qwen2 / Llama checkpoint (safetensors) to GGUF, streaming, without torch.

    from ra_lite.convert.hf_to_gguf import convert
    result = convert("path/or/org/repo", "out.gguf", outtype="f16")

Memory: GGUF needs every tensor's name, shape and type in the header before any data, but all of
that follows from config.json and the safetensors headers. So we write the header from the plan,
then stream each tensor through in row chunks (16 MB of source data by default): peak memory is one
chunk plus its encoding, whatever the model size.

No reranker/classifier heuristics: a *ForCausalLM checkpoint becomes a causal LM GGUF, always. (Upstream
switches Qwen3 into reranker mode when the README looks like one; ra-lite reads the LM head's logits
itself, so that would be wrong for RewardAnything.)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gguf
import numpy as np

from ra_lite import atomic_files as atomic
from ra_lite.convert import manifest as manifest_mod
from ra_lite.convert.architectures import SUPPORTED, HParams, TensorPlan, match_checkpoint, plan_tensors, read_hparams
from ra_lite.convert.safetensors_reader import SafetensorsCheckpoint
from ra_lite.convert.source import SourceInfo, resolve_source
from ra_lite.convert.tensor_types import (OUTTYPES, check_outtype, copies_raw_bytes, encode_rows, tensor_nbytes,
                                          tensor_type)
from ra_lite.convert.tokenizer import VocabInfo, read_vocab
from ra_lite.errors import RaLiteError

# 16 MB of source per chunk: big enough that per-chunk overhead is noise, small enough that the
# decoded f32 copy and its encoding stay around 100 MB.
DEFAULT_CHUNK_BYTES = 16 << 20


@dataclass
class ConversionResult:
    output: Path
    outtype: str
    architecture: str
    gguf_architecture: str
    n_tensors: int
    n_parameters: int
    source_bytes: int
    output_bytes: int
    seconds: float
    sha256: str | None
    source: SourceInfo
    hparams: HParams
    tokenizer_pre: str
    chat_template_source: str | None
    skipped_tensors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    manifest: Path | None = None

    @property
    def throughput_mb_s(self) -> float:
        return self.source_bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(output=str(self.output), manifest=str(self.manifest) if self.manifest else None,
                 source=self.source.to_dict(), hparams=self.hparams.to_dict(), throughput_mb_s=self.throughput_mb_s)
        return d


def _load_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise RaLiteError(f"no config.json in {directory}", "pass the directory of a HF transformers checkpoint")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RaLiteError(f"{path} is not valid JSON ({err})", "re-download config.json") from err
    if not isinstance(config, dict):
        raise RaLiteError(f"{path} is not a JSON object", "re-download config.json")
    return config


def _add_metadata(writer: gguf.GGUFWriter, hp: HParams, vocab: VocabInfo, outtype: str, source: SourceInfo,
                  name: str) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    if source.repo_id:
        writer.add_source_repo_url(f"https://huggingface.co/{source.repo_id}")
        writer.add_string("general.source.repo_id", source.repo_id)
        if source.revision:
            writer.add_source_url(f"https://huggingface.co/{source.repo_id}/tree/{source.revision}")
    if source.revision:
        writer.add_string("general.source.revision", source.revision)
    writer.add_string("general.converter", manifest_mod.converter_version())
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(OUTTYPES[outtype][0])

    writer.add_vocab_size(hp.vocab_size)
    writer.add_context_length(hp.context_length)
    writer.add_embedding_length(hp.hidden_size)
    writer.add_block_count(hp.n_layers)
    writer.add_feed_forward_length(hp.intermediate_size)
    writer.add_head_count(hp.n_heads)
    writer.add_head_count_kv(hp.n_kv_heads)
    # Qwen3-8B: head_dim 128 = 4096 / 32, but Qwen3-0.6B has 128 with hidden 1024 / 16 heads; always write it.
    writer.add_key_length(hp.head_dim)
    writer.add_value_length(hp.head_dim)
    writer.add_rope_dimension_count(hp.head_dim)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_layer_norm_rms_eps(hp.rms_norm_eps)
    if hp.rope_scaling:
        kind = hp.rope_scaling.get("rope_type", hp.rope_scaling.get("type"))
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN if kind == "yarn" else gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(hp.rope_scaling["factor"]))
        if "original_max_position_embeddings" in hp.rope_scaling:
            writer.add_rope_scaling_orig_ctx_len(int(hp.rope_scaling["original_max_position_embeddings"]))
    vocab.write_to(writer)


def _write_array(fout, array: np.ndarray) -> None:
    """The one place tensor bytes hit the file (tests replace it to simulate a full disk)."""
    fout.write(np.ascontiguousarray(array).data)


def _stream_tensors(writer: gguf.GGUFWriter, ckpt: SafetensorsCheckpoint, plans: list[TensorPlan],
                    types: list[gguf.GGMLQuantizationType], chunk_bytes: int, progress: bool) -> None:
    from tqdm import tqdm

    fout = writer.fout[0]
    writer.write_padding(fout, fout.tell())  # data section starts aligned, as write_ti_data_to_file assumed
    total = sum(ckpt.tensors[p.hf_name].nbytes for p in plans)
    with tqdm(total=total, unit="B", unit_scale=True, desc="convert", file=sys.stderr, disable=not progress) as bar:
        for plan, qtype in zip(plans, types):
            entry = ckpt.tensors[plan.hf_name]
            raw = copies_raw_bytes(entry.dtype, qtype)
            written = 0
            for _, rows in ckpt.iter_row_chunks(plan.hf_name, chunk_bytes, plan.row_block, raw=raw):
                if plan.row_permutation is not None:
                    n_heads = rows.shape[0] // plan.row_block
                    idx = (np.arange(n_heads)[:, None] * plan.row_block + plan.row_permutation[None, :]).reshape(-1)
                    rows = rows[idx]
                encoded = rows if raw else encode_rows(rows, qtype, plan.gguf_name)
                _write_array(fout, encoded)
                written += encoded.nbytes
                bar.update(rows.shape[0] * (entry.nbytes // entry.n_rows))
            expected = tensor_nbytes(plan.shape, qtype)
            assert written == expected, f"{plan.gguf_name}: wrote {written} bytes, header promised {expected}"
            writer.write_padding(fout, written)
    fout.flush()


def convert(src: str | Path, output: str | Path, outtype: str = "f16", *, revision: str | None = None,
            source_repo: str | None = None, source_revision: str | None = None, name: str | None = None,
            pre_tokenizer: str | None = None, force: bool = False, manifest: bool = True,
            manifest_path: str | Path | None = None, progress: bool = True,
            chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ConversionResult:
    """Convert `src` (local dir, Hub repo id or registry name) to a GGUF file at `output`.

    revision: Hub revision to download. source_repo/source_revision: provenance to record when `src`
    is a plain local directory. pre_tokenizer: override the detected llama.cpp pre-tokenizer name.
    manifest: record the file in manifest_path (default: manifest.json next to the output).
    """
    outtype = check_outtype(outtype)
    output = Path(output).expanduser()
    atomic.check_destination(output, force)  # before any download or read
    source = resolve_source(src, revision, source_repo, source_revision)
    config = _load_config(source.directory)
    hp = read_hparams(config)
    plans = plan_tensors(hp)
    ckpt = SafetensorsCheckpoint(source.directory)
    skipped = match_checkpoint(plans, {n: e.shape for n, e in ckpt.tensors.items()}, hp)
    vocab = read_vocab(source.directory, config, hp.vocab_size, pre_tokenizer)

    types = [tensor_type(outtype, p.shape) for p in plans]
    gguf_arch = gguf.MODEL_ARCH_NAMES[SUPPORTED[hp.architecture].gguf_arch]
    writer = gguf.GGUFWriter(path=None, arch=gguf_arch)
    model_name = name or (source.repo_id.split("/")[-1] if source.repo_id else source.directory.name)
    _add_metadata(writer, hp, vocab, outtype, source, model_name)
    for plan, qtype in zip(plans, types):
        # The dtype argument is unused when raw_dtype is given; the shape is in elements (numpy order).
        writer.add_tensor_info(plan.gguf_name, plan.shape, np.dtype(np.float32), tensor_nbytes(plan.shape, qtype),
                               raw_dtype=qtype)

    data_bytes = sum(tensor_nbytes(p.shape, t) for p, t in zip(plans, types))
    free = shutil.disk_usage(output.parent).free
    if free < data_bytes:
        raise RaLiteError(f"{output.parent} has {free / 1e9:.1f} GB free, the output needs about "
                          f"{data_bytes / 1e9:.1f} GB", "free some disk space or write the output somewhere else")

    started = time.perf_counter()
    with atomic.atomic_destination(output, force) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            _stream_tensors(writer, ckpt, plans, types, chunk_bytes, progress)
        finally:
            writer.close()
    seconds = time.perf_counter() - started

    result = ConversionResult(
        output=output, outtype=outtype, architecture=hp.architecture, gguf_architecture=gguf_arch,
        n_tensors=len(plans), n_parameters=sum(int(np.prod(p.shape)) for p in plans),
        source_bytes=sum(ckpt.tensors[p.hf_name].nbytes for p in plans), output_bytes=output.stat().st_size,
        seconds=seconds, sha256=None, source=source, hparams=hp, tokenizer_pre=vocab.pre,
        chat_template_source=vocab.chat_template_source, skipped_tensors=skipped, warnings=vocab.warnings)
    if manifest:
        result.manifest = Path(manifest_path) if manifest_path else manifest_mod.default_manifest_path(output)
        result.sha256 = manifest_mod.sha256_file(output, progress)
        manifest_mod.record(result.manifest, manifest_mod.ManifestEntry(
            file=manifest_mod.file_name_for(result.manifest, output), quant_type=outtype.upper(),
            size_bytes=result.output_bytes, sha256=result.sha256, source_repo=source.repo_id,
            source_revision=source.revision, converter_version=manifest_mod.converter_version(),
            produced_by="convert"))
    return result
