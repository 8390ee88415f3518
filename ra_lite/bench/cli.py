"""`ra-lite bench`: mini-RABench for one or more models, optionally against a reference."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def run_bench(models: list[str | None], *, reference: str | None = None, data: str = "quick",
              output_dir: str | Path = "bench-results", think_budget: int = 512,
              temperature: float = 0.0, seed: int = 0, n_ctx: int = 8192,
              repetition_guard: bool = True, cache_dir=None, progress: bool = True,
              notify=None, parallel: int | str = "auto") -> dict:
    """Judge `data` with every model (and the reference), write the report, return it as a dict.

    models: GGUF references; None is the embedded smoke-test model. Results are cached per
    (model sha256, settings, item), so an interrupted run resumes and a new quant can be measured
    against a reference without judging the reference again.
    """
    from ra_lite.bench.cache import BenchSettings, ResultCache
    from ra_lite.bench.report import build_report, model_section, write_outputs
    from ra_lite.bench.run import agreement, evaluate_model, load_bench_items
    from ra_lite.model_ref import ra_lite_home

    notify = notify or (lambda message: print(f"ra-lite: {message}", file=sys.stderr))
    settings = BenchSettings(think_budget=think_budget, temperature=temperature, seed=seed,
                             n_ctx=n_ctx, repetition_guard=repetition_guard)
    cache = ResultCache(Path(cache_dir) if cache_dir else ra_lite_home() / "bench-cache")
    loaded = load_bench_items(data, notify)
    items = loaded.items
    bar = _progress_bar if progress else None
    sections = []
    ref = None
    if reference is not None:
        # The reference is replayed through itself too: KLD compares replay with replay.
        ref = evaluate_model(reference, items, settings, cache, is_reference=True, notify=notify,
                             progress=bar, parallel=parallel)
        sections.append(model_section(ref, items, "reference", agreement(ref, ref, items)))
    for model in models:
        result = evaluate_model(model, items, settings, cache, reference=ref, notify=notify,
                                progress=bar, parallel=parallel)
        if ref is not None and result.sha256 == ref.sha256:
            continue            # the reference itself, already reported
        sections.append(model_section(result, items, "model",
                                      agreement(result, ref, items) if ref else None))
    report = build_report(sections, items, loaded.source, loaded.problems, settings)
    written = write_outputs(report, Path(output_dir))
    notify("wrote " + ", ".join(str(p) for p in written))
    if not any(p.name == "plot.png" for p in written):
        notify("no plot.png: install matplotlib (pip install 'ra-lite[plot]') for the picture")
    return report


def _progress_bar(total, label, count_tokens=True):
    """evaluate_model's progress factory: judgments/s and tokens/s (stderr, TTY only)."""
    from ra_lite.progress import ProgressReporter

    return ProgressReporter(total, label=label, unit="item", count_tokens=count_tokens)


@click.command("bench")
@click.option("--model", "-m", "models", multiple=True,
              help="GGUF to evaluate (repeat to compare several). Default: the embedded model.")
@click.option("--reference", "-R", default=None,
              help="Full-precision GGUF to measure each model against (agreement, KL divergence).")
@click.option("--data", default="quick", show_default=True,
              help="quick | full | FILE.jsonl | Hub dataset id (owner/name[:file.jsonl]).")
@click.option("--output-dir", "-o", default="bench-results", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--think-budget", type=int, default=512, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="0 = greedy, so quants differ by their weights, not by sampling.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-ctx", type=int, default=8192, show_default=True)
@click.option("--repetition-guard/--no-repetition-guard", default=True, show_default=True,
              help="Close reasoning that loops (a span repeated back to back) early.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--parallel", default="auto", show_default=True,
              help="Judgments decoded at once per model: auto, 1, or N (results are cached "
                   "the same way).")
def bench_command(models, reference, data, output_dir, think_budget, temperature, seed, n_ctx,
                  repetition_guard, progress, parallel):
    """Run mini-RABench and report accuracy (and, with --reference, what each quant lost)."""
    from ra_lite.bench.report import markdown

    report = run_bench(list(models) or [None], reference=reference, data=data,
                       output_dir=output_dir, think_budget=think_budget,
                       temperature=temperature, seed=seed, n_ctx=n_ctx,
                       repetition_guard=repetition_guard, progress=progress,
                       parallel=parallel)
    click.echo(markdown(report))
