"""`ra-lite convert` and `ra-lite quantize`: thin click wrappers over the library functions.

Only click and the stdlib are imported here, so `ra-lite --help` stays fast; numpy, gguf and
llama_cpp load when a command runs. Options mirror the arguments of
ra_lite.convert.hf_to_gguf.convert and ra_lite.convert.quantize.quantize.
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
@click.option("--verbose", is_flag=True, help="Show llama.cpp's per-tensor log.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def quantize_command(src, types, out_dir, force, nthread, allow_requantize, manifest, manifest_path, verbose,
                     as_json):
    """Quantize an f32/f16/bf16 GGUF with llama.cpp's quantizer (one output file per type).

    No importance matrix is used (see `ra_lite.convert.quantize` for why).
    """
    from ra_lite.convert.quantize import quantize

    results = quantize(src, types, out_dir=out_dir, force=force, nthread=nthread,
                       allow_requantize=allow_requantize, manifest=manifest, manifest_path=manifest_path,
                       progress=True, verbose=verbose)
    lines = [f"wrote {r.output} ({_size(r.size_bytes)}) in {r.seconds:.1f}s" for r in results]
    if results and results[0].manifest:
        lines.append(f"recorded in {results[0].manifest}")
    _emit(as_json, [r.to_dict() for r in results], lines)
