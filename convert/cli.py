"""`ra-lite convert`, `ra-lite imatrix` and `ra-lite quantize`: thin click wrappers over the library.

Only click and the stdlib are imported here, so `ra-lite --help` stays fast; numpy, gguf and
llama_cpp load when a command runs. Options mirror the arguments of
ra_lite.convert.hf_to_gguf.convert, ra_lite.convert.imatrix_collect.collect_imatrix and
ra_lite.convert.quantize.quantize.
"""

from __future__ import annotations

import json

import click

OUTTYPE_CHOICES = ["f32", "f16", "bf16", "q8_0"]


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _emit(as_json: bool, payload, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


@click.command("convert")
@click.argument("src")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="GGUF file to write.")
@click.option("--outtype", type=click.Choice(OUTTYPE_CHOICES, case_sensitive=False), default="f16",
              show_default=True, help="Tensor type of the 2-D weights (1-D norms stay f32).")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) when SRC is a repo id.")
@click.option("--source-repo", default=None, help="Provenance to record when SRC is a plain local directory.")
@click.option("--source-revision", default=None, help="Provenance to record when SRC is a plain local directory.")
@click.option("--name", default=None, help="general.name to write (default: the repo or directory name).")
@click.option("--pre-tokenizer", default=None, help="Override the detected llama.cpp pre-tokenizer (qwen2, llama-bpe, gpt-2).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--manifest/--no-manifest", default=True, show_default=True, help="Record the file in a manifest.")
@click.option("--manifest-path", type=click.Path(dir_okay=False), default=None,
              help="Manifest file (default: manifest.json next to OUTPUT).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def convert_command(src, output, outtype, revision, source_repo, source_revision, name, pre_tokenizer, force,
                    manifest, manifest_path, as_json):
    """Convert a HF checkpoint (local directory, Hub repo id or registry name) to GGUF.

    SRC may be e.g. ./RewardAnything-8B-v1, WisdomShell/RewardAnything-8B-v1 or rewardanything-8b.
    """
    from ra_lite.convert.hf_to_gguf import convert

    # A RaLiteError propagates to ra-lite's command group, which prints it as one line (exit 2).
    result = convert(src, output, outtype, revision=revision, source_repo=source_repo,
                     source_revision=source_revision, name=name, pre_tokenizer=pre_tokenizer, force=force,
                     manifest=manifest, manifest_path=manifest_path, progress=True)
    lines = [f"wrote {result.output} ({_size(result.output_bytes)}, {result.gguf_architecture}, {outtype}, "
             f"{result.n_tensors} tensors) in {result.seconds:.1f}s ({result.throughput_mb_s:.0f} MB/s)"]
    lines += [f"warning: {w}" for w in result.warnings]
    if result.manifest:
        lines.append(f"sha256 {result.sha256} recorded in {result.manifest}")
    _emit(as_json, result.to_dict(), lines)


@click.command("quantize")
@click.argument("src", type=click.Path(exists=False, dir_okay=False))
@click.option("--types", default="Q4_K_M", show_default=True,
              help="Comma-separated llama.cpp quant types, e.g. Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K.")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, help="Default: next to SRC.")
@click.option("--force", is_flag=True, help="Overwrite outputs that exist.")
@click.option("--threads", "nthread", type=int, default=None, help="Default: all cores.")
@click.option("--allow-requantize", is_flag=True, help="Accept an already-quantized (q8_0) input.")
@click.option("--manifest/--no-manifest", default=True, show_default=True, help="Record outputs in a manifest.")
@click.option("--manifest-path", type=click.Path(dir_okay=False), default=None,
              help="Manifest file (default: manifest.json in the output directory).")
@click.option("--imatrix", "imatrix", type=click.Path(dir_okay=False), default=None,
              help="Importance matrix of this model (from `ra-lite imatrix`); enables the IQ* types.")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's per-tensor log.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def quantize_command(src, types, out_dir, force, nthread, allow_requantize, manifest, manifest_path, imatrix,
                     verbose, as_json):
    """Quantize an f32/f16/bf16 GGUF with llama.cpp's quantizer (one output file per type).

    With --imatrix, llama.cpp weighs rounding errors by the activation statistics; it helps most
    at 4 bits and below. An imatrix made for another model is refused.
    """
    from ra_lite.convert.quantize import quantize

    results = quantize(src, types, out_dir=out_dir, force=force, nthread=nthread,
                       allow_requantize=allow_requantize, manifest=manifest, manifest_path=manifest_path,
                       progress=True, verbose=verbose, imatrix=imatrix)
    lines = [f"wrote {r.output} ({_size(r.size_bytes)}{', with imatrix' if r.imatrix else ''}) "
             f"in {r.seconds:.1f}s" for r in results]
    if results and results[0].manifest:
        lines.append(f"recorded in {results[0].manifest}")
    _emit(as_json, [r.to_dict() for r in results], lines)


@click.command("imatrix")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Imatrix GGUF to write.")
@click.option("--data", default=None, type=click.Path(dir_okay=False),
              help="Calibration text: a .jsonl of records or a .txt file (default: ra-lite's own set).")
@click.option("--chunks", type=int, default=None, help="Use at most N chunks (default: all).")
@click.option("--chunk-size", type=int, default=512, show_default=True, help="Tokens per chunk.")
@click.option("--threads", "n_threads", type=int, default=None, help="Default: all cores.")
@click.option("--n-gpu-layers", type=int, default=0, show_default=True,
              help="Layers to offload (-1 = all) when this build has CUDA/Metal.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def imatrix_command(model, output, data, chunks, chunk_size, n_threads, n_gpu_layers, force, verbose, as_json):
    """Collect an importance matrix for MODEL (llama.cpp's GGUF imatrix format).

    Runs calibration text through the model and records, for every weight matrix of its blocks,
    the per-column sum of squared activations. Pass the file to `ra-lite quantize --imatrix`
    (or to llama.cpp's llama-quantize --imatrix).
    """
    from pathlib import Path

    from tqdm import tqdm

    from ra_lite import atomic_files as atomic
    from ra_lite.convert.calibration import load_calibration
    from ra_lite.convert.imatrix import write_imatrix
    from ra_lite.convert.imatrix_collect import collect_imatrix
    from ra_lite.pull import resolve_model

    out = Path(output).expanduser()
    atomic.check_destination(out, force)        # fail before minutes of calibration, not after
    calibration = load_calibration(data)
    model_path, _ = resolve_model(model)
    with tqdm(unit="chunk", desc="imatrix", disable=as_json) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)
        result = collect_imatrix(model_path, calibration.texts, chunk_size=chunk_size, max_chunks=chunks,
                                 datasets=[calibration.name], n_threads=n_threads,
                                 n_gpu_layers=n_gpu_layers, progress=progress, verbose=verbose)
    write_imatrix(result.imatrix, out, force=force)
    payload = {"output": str(out), "model": str(model_path), "datasets": [calibration.name],
               "entries": len(result.imatrix.entries), "chunks": result.n_chunks,
               "chunk_size": chunk_size, "tokens": result.n_tokens, "seconds": round(result.seconds, 1)}
    _emit(as_json, payload, [f"wrote {out}: {len(result.imatrix.entries)} weight matrices, {result.n_chunks} "
                             f"chunks x {chunk_size} tokens of {calibration.name} in {result.seconds:.1f}s"])
