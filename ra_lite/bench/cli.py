"""`ra-lite bench`: mini-RABench for one or more models, optionally against a reference."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ra_lite.bench.settings import BENCH_DEFAULTS
from ra_lite.cli import (cache_option, check_remote_flags, generation_options, remote_arguments,
                         remote_options)
from ra_lite.defaults import DEFAULT_N_CTX


def run_bench(models: list[str | None], *, reference: str | None = None, data: str = "quick",
              output_dir: str | Path = "bench-results", think_budget: int = 512,
              think_budgets: list[int] | None = None, temperature: float = 0.0, seed: int = 0,
              n_ctx: int = DEFAULT_N_CTX, repetition_guard: bool = True, orders: int = 1,
              speculative: bool = False, use_cache: bool = True, cache_dir=None,
              progress: bool = True, notify=None, parallel: int | str = "auto",
              remote: dict | None = None, top_p: float = 1.0, data_format: str = "auto",
              principle: str | None = None) -> dict:
    """Judge `data` with every model (and the reference), write the report, return it as a dict.

    models: GGUF references; None is the embedded smoke-test model. Judgments are kept in the
    judgment cache (ra_lite.judgment_cache; cache_dir: another directory for it) keyed by the
    model's sha256, the settings and each item's request, so an interrupted run resumes and a
    new quant is measured against a reference without judging the reference again.
    orders: judge every item under K response orders (ra_lite.orders) and report how
    consistent each model's verdicts are, and how much consistency a quant lost.
    think_budgets: also judge at each of these budgets and report accuracy, agreement with the
    reference at the largest one and seconds per judgment for each (the main tables are then
    at the largest budget).
    remote: judge on server(s) instead of the local models (load_remote's keyword arguments,
    "url" first); a local .gguf in `models` then only lends its chat template. Decisions are
    compared with a local reference, and on the choice-point route (llama-server, vLLM) the
    reference is replayed on the server for the KL divergence.
    """
    from ra_lite.bench.report import build_report, model_section, sweep_row, write_outputs
    from ra_lite.bench.run import agreement, evaluate_model, evaluate_remote, load_bench_items
    from ra_lite.bench.settings import BenchSettings
    from ra_lite.judgment_cache import JudgmentCache
    from ra_lite.options import JudgeOptions

    notify = notify or (lambda message: print(f"ra-lite: {message}", file=sys.stderr))
    budgets = sorted(set(think_budgets)) if think_budgets else [think_budget]
    # Bad values fail here, before any model loads.
    settings = BenchSettings(JudgeOptions(think_budget=budgets[-1], temperature=temperature,
                                          top_p=top_p, seed=seed,
                                          repetition_guard=repetition_guard, orders=orders,
                                          speculative=speculative), n_ctx=n_ctx)
    cache = None
    if use_cache:
        cache = JudgmentCache(Path(cache_dir) / "judgments.sqlite3" if cache_dir else None,
                              notify=notify)
    try:
        loaded = load_bench_items(data, notify, data_format, principle)
        items = loaded.items
        official = _official_scorer(loaded.standard)
        bar = _progress_bar if progress else None

        template = next((m for m in models if m and str(m).endswith(".gguf")), None)

        def evaluate(model, budget, **kw):
            if model is REMOTE:
                return evaluate_remote(remote, items, settings.with_budget(budget),
                                       template=template, notify=notify, progress=bar,
                                       parallel=parallel, reference=kw.get("reference"))
            return evaluate_model(model, items, settings.with_budget(budget), cache,
                                  notify=notify, progress=bar, parallel=parallel, **kw)

        if remote:
            models = [REMOTE]

        sweep: list[dict] = []
        sections = []
        ref = evaluate(reference, budgets[-1], is_reference=True) if reference else None
        if ref is not None:
            # The reference is replayed through itself too: KLD compares replay with replay.
            sections.append(official(ref, model_section(ref, items, "reference",
                                                        agreement(ref, ref, items), ref)))
        for model in models:
            result = evaluate(model, budgets[-1], reference=ref)
            if ref is not None and result.sha256 == ref.sha256:
                continue            # the reference itself, already reported
            sections.append(official(result, model_section(
                result, items, "model", agreement(result, ref, items) if ref else None, ref)))
        if len(budgets) > 1:
            for model in ([reference] if reference else []) + list(models):
                for budget in budgets:
                    result = evaluate(model, budget)
                    sweep.append(sweep_row(result, items, budget, ref, agreement))
        report = build_report(sections, items, loaded.source, loaded.problems, settings, sweep,
                              loaded.standard)
    finally:
        if cache is not None:
            cache.close()
    written = write_outputs(report, Path(output_dir))
    notify("wrote " + ", ".join(str(p) for p in written))
    if not any(p.name == "plot.png" for p in written):
        notify("no plot.png: install matplotlib (pip install 'ra-lite[plot]') for the picture")
    return report


REMOTE = object()         # stands in run_bench's model list for the remote server(s)


def _official_scorer(standard):
    """section -> section with the standard benchmark's own metric ("official"), for a
    standard file; unchanged for mini-RABench data."""
    def add(results, section: dict) -> dict:
        if standard is not None:
            from ra_lite.bench.standard.scoring import judgment_scores, official_score

            section["official"] = official_score(
                standard, lambda item: judgment_scores(results.judgment(item.id)))
        return section
    return add


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
              help="quick | full | FILE.jsonl | Hub dataset id (owner/name[:file.jsonl]) | a "
                   "RewardBench / RewardBench 2 / RM-Bench file (.json, .jsonl, .parquet).")
@click.option("--format", "data_format", default="auto", show_default=True,
              type=click.Choice(["auto", "mini-rabench", "rewardbench", "rewardbench2",
                                 "rm-bench"]),
              help="The --data file's format (auto: from its fields).")
@click.option("--principle", default=None,
              help="For RewardBench / RM-Bench files (their rows carry no principle): judge "
                   "under this one instead of the benchmark's default.")
@click.option("--output-dir", "-o", default="bench-results", show_default=True,
              type=click.Path(file_okay=False))
@generation_options(no_think=False, **BENCH_DEFAULTS)
@click.option("--think-budgets", default=None, metavar="B1,B2,...",
              help="Also judge at each of these budgets (e.g. 0,256,1024): accuracy, agreement "
                   "with the reference at the largest and seconds per judgment for each.")
@click.option("--n-ctx", type=int, default=DEFAULT_N_CTX, show_default=True)
@cache_option(default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--parallel", default="auto", show_default=True,
              help="Judgments decoded at once per model: auto, 1, or N (results are cached "
                   "the same way).")
@remote_options
def bench_command(models, reference, data, data_format, principle, output_dir, think_budget,
                  temperature, top_p, seed, repetition_guard, orders, speculative, think_budgets,
                  n_ctx, use_cache, progress, parallel, **remote_settings):
    """Run mini-RABench and report accuracy (and, with --reference, what each quant lost)."""
    from ra_lite.bench.report import markdown
    from ra_lite.errors import RaLiteError

    budgets = None
    if think_budgets:
        try:
            budgets = [int(b) for b in think_budgets.split(",") if b.strip()]
        except ValueError:
            raise RaLiteError(f"--think-budgets {think_budgets!r} is not a list of numbers",
                              "write e.g. --think-budgets 0,256,1024") from None
    check_remote_flags(remote_settings)
    remote = None
    if remote_settings["remote"]:
        remote = remote_arguments(remote_settings)
    report = run_bench(list(models) or [None], reference=reference, data=data,
                       output_dir=output_dir, think_budget=think_budget, think_budgets=budgets,
                       temperature=temperature, top_p=top_p, seed=seed, n_ctx=n_ctx,
                       repetition_guard=repetition_guard, orders=orders,
                       speculative=speculative, use_cache=use_cache, progress=progress,
                       parallel=parallel, remote=remote, data_format=data_format,
                       principle=principle)
    click.echo(markdown(report))
