"""mini-RABench reports: results.json (machine-readable), report.md and plot.png."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from ra_lite.atomic_files import replace_into, write_atomic
from ra_lite.bench import metrics
from ra_lite.bench.settings import BenchSettings
from ra_lite.bench.dataset import BenchItem
from ra_lite.bench.run import (Agreement, ModelResults, item_results, mean_seconds,
                               mean_think_tokens, order_consistency)


def model_section(model: ModelResults, items: list[BenchItem], role: str,
                  agreement: Agreement | None, reference: ModelResults | None = None) -> dict:
    results = item_results(model, items)
    summary = metrics.aggregate(results, by=("category", "domain", "tags"))
    predictions = []
    for item in items:
        record = model.records[item.id]
        judgment = record["judgment"]
        predictions.append({
            "id": item.id,
            "scores": judgment["scores"] if judgment else None,
            "best-to-worst": judgment["ranking"] if judgment else None,
            "valid": judgment is not None,
            "error": record.get("error"),
            "think_tokens": judgment["tokens"]["think"] if judgment else None,
            "think_truncated": judgment["think_truncated"] if judgment else None,
            "think_end": judgment.get("think_end") if judgment else None,
        })
    section = {
        "label": model.label, "role": role, "path": model.path, "sha256": model.sha256,
        "quant": model.quant, "size_bytes": model.size_bytes,
        "embedded_smoke_test_model": model.embedded,
        "aggregates": summary.overall.to_dict(),
        "think_ends": think_end_counts(predictions),
        "by_category": {k: v.to_dict() for k, v in sorted(summary.groups["category"].items())},
        "by_domain": {k: v.to_dict() for k, v in sorted(summary.groups["domain"].items())},
        "by_tag": {k: v.to_dict() for k, v in sorted(summary.groups["tags"].items())},
        "predictions": predictions,
    }
    if agreement is not None:
        section["agreement_with_reference"] = agreement.to_dict()
    consistency = order_consistency(model, items)
    if consistency is not None:
        official = metrics.aggregate(item_results(model, items, official_order=True))
        consistency["official_order_aggregates"] = official.overall.to_dict()
        ref = order_consistency(reference, items) if reference is not None else None
        if ref is not None and ref["pairwise_agreement"] is not None:
            # What the quant lost: the reference's consistency minus this model's.
            consistency["pairwise_agreement_lost"] = \
                ref["pairwise_agreement"] - consistency["pairwise_agreement"]
            consistency["top1_agreement_lost"] = \
                ref["top1_agreement"] - consistency["top1_agreement"]
        section["order_consistency"] = consistency
    section["mean_seconds_per_judgment"] = mean_seconds(model, items)
    section["mean_think_tokens"] = mean_think_tokens(model, items)
    return section


def sweep_row(model: ModelResults, items: list[BenchItem], think_budget: int,
              versus: ModelResults | None, agreement) -> dict:
    """One (model, think budget) row of the budget sweep: accuracy, time, and agreement with
    the reference at the sweep's largest budget (what a shorter budget costs)."""
    summary = metrics.aggregate(item_results(model, items))
    return {"label": model.label, "sha256": model.sha256, "think_budget": think_budget,
            "aggregates": summary.overall.to_dict(),
            "mean_seconds_per_judgment": mean_seconds(model, items),
            "mean_think_tokens": mean_think_tokens(model, items),
            "agreement_with_reference_at_max_budget":
                agreement(model, versus, items).pairwise_agreement if versus else None}


def think_end_counts(predictions: list[dict]) -> dict[str, int]:
    """How many judgments' reasoning ended each way (model, budget, repetition, ...)."""
    counts: dict[str, int] = {}
    for prediction in predictions:
        if prediction["valid"]:
            end = prediction.get("think_end") or "unknown"
            counts[end] = counts.get(end, 0) + 1
    return dict(sorted(counts.items()))


def build_report(sections: list[dict], items: list[BenchItem], data_source: str,
                 problems: list, settings: BenchSettings, sweep: list[dict] | None = None,
                 standard=None) -> dict:
    import llama_cpp

    from ra_lite import __version__

    return {
        "ra_lite": __version__,
        "llama_cpp_python": llama_cpp.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {"source": data_source, "n_items": len(items),
                 "skipped_lines": [{"line": p.line, "message": p.message} for p in problems],
                 **({"format": standard.benchmark, "principle": standard.principle,
                     "principle_is_default": standard.principle_is_default}
                    if standard is not None else {"format": "mini-rabench"})},
        "settings": settings.to_dict(),
        "models": sections,
        **({"budget_sweep": sweep} if sweep else {}),
    }


def _title(data: dict) -> str:
    return {"rewardbench": "RewardBench", "rewardbench2": "RewardBench 2",
            "rm-bench": "RM-Bench"}.get(data.get("format"), "mini-RABench")


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _f(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# {_title(report['data'])}: {report['data']['source']} ({report['data']['n_items']} items)",
        "",
        f"ra-lite {report['ra_lite']}, llama-cpp-python {report['llama_cpp_python']}, "
        f"{report['created']}. Think budget {s['think_budget']}, temperature {s['temperature']}, "
        f"seed {s['seed']}, repetition guard {'on' if s.get('repetition_guard', True) else 'off'}.",
        "",
        "| model | role | quant | size MiB | valid % | pairwise acc % | Kendall τ-b | NDCG | top-1 % "
        "| exact % | agree w/ ref % | τ vs ref | score MAE | same scores+rank % | mean KLD | same top score % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        a, g = m["aggregates"], m.get("agreement_with_reference") or {}
        lines.append(
            f"| {m['label']} | {m['role']} | {m['quant']} | {m['size_bytes'] / 2**20:.0f} | "
            f"{_pct(a['valid_rate'])} | {_pct(a['pairwise_accuracy'])} | {_f(a['kendall_tau'])} | "
            f"{_f(a['ndcg'])} | {_pct(a['top1_accuracy'])} | {_pct(a['exact_ranking'])} | "
            f"{_pct(g.get('pairwise_agreement'))} | {_f(g.get('kendall_tau'))} | "
            f"{_f(g.get('score_mae'))} | {_pct(g.get('exact_match_rate'))} | "
            f"{_f(g.get('mean_kld'), 5)} | {_pct(g.get('same_top_score_rate'))} |")
    lines += ["", "How the reasoning ended (judgments):", ""]
    for m in report["models"]:
        ends = m.get("think_ends") or {}
        lines.append(f"- {m['label']}: " +
                     (", ".join(f"{why} {n}" for why, n in ends.items()) or "–"))
    categories = sorted({c for m in report["models"] for c in m["by_category"]})
    lines += ["", "Pairwise accuracy (%) by principle category:", "",
              "| model | " + " | ".join(categories) + " |",
              "|---|" + "---|" * len(categories)]
    for m in report["models"]:
        row = [_pct(m["by_category"].get(c, {}).get("pairwise_accuracy")) for c in categories]
        lines.append(f"| {m['label']} | " + " | ".join(row) + " |")
    tags = sorted({t for m in report["models"] for t in m.get("by_tag", {})})
    if tags:
        # The slices: "checkable" is the machine-checkable one (ground truth derived from rules).
        lines += ["", "Pairwise accuracy / top-1 (%) by slice (the checkable slice's ground truth "
                      "is derived from rules, bench/checks.py):", "",
                  "| model | " + " | ".join(tags) + " |", "|---|" + "---|" * len(tags)]
        for m in report["models"]:
            cells = [f"{_pct(m['by_tag'].get(t, {}).get('pairwise_accuracy'))} / "
                     f"{_pct(m['by_tag'].get(t, {}).get('top1_accuracy'))}" for t in tags]
            lines.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    with_ref = [m for m in report["models"] if m.get("agreement_with_reference")]
    if with_ref:
        lines += ["", "Mean KL divergence (reference ‖ model) at score positions, by category:", "",
                  "| model | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
        for m in with_ref:
            by = m["agreement_with_reference"]["by_category"]
            lines.append(f"| {m['label']} | " +
                         " | ".join(_f(by.get(c, {}).get("mean_kld"), 5) for c in categories) + " |")
    ordered = [m for m in report["models"] if m.get("order_consistency")]
    if ordered:
        lines += ["", f"Order consistency ({s.get('orders', 1)} response orders per item; "
                      "accuracy from the aggregated verdict vs the official order alone):", "",
                  "| model | pairs ordered alike % | same winner % | items whose winner changed % "
                  "| mean score spread | pairwise acc % (aggregated) | pairwise acc % (official "
                  "order) | pair consistency lost vs ref (points) |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in ordered:
            c = m["order_consistency"]
            lost = c.get("pairwise_agreement_lost")
            lines.append(
                f"| {m['label']} | {_pct(c['pairwise_agreement'])} | {_pct(c['top1_agreement'])} "
                f"| {_pct(c['items_with_a_changed_winner'])} | {_f(c['mean_score_spread'], 2)} | "
                f"{_pct(m['aggregates']['pairwise_accuracy'])} | "
                f"{_pct(c['official_order_aggregates']['pairwise_accuracy'])} | "
                f"{'–' if lost is None else f'{100 * lost:+.1f}'} |")
    if report.get("budget_sweep"):
        lines += ["", "Think budget sweep (agreement: with the reference at the largest budget):",
                  "", "| model | think budget | valid % | pairwise acc % | agree w/ ref % | "
                      "mean think tokens | s / judgment |", "|---|---|---|---|---|---|---|"]
        for row in report["budget_sweep"]:
            a = row["aggregates"]
            lines.append(f"| {row['label']} | {row['think_budget']} | {_pct(a['valid_rate'])} | "
                         f"{_pct(a['pairwise_accuracy'])} | "
                         f"{_pct(row['agreement_with_reference_at_max_budget'])} | "
                         f"{_f(row['mean_think_tokens'], 0)} | "
                         f"{_f(row['mean_seconds_per_judgment'], 2)} |")
    if any(m.get("official") for m in report["models"]):
        lines += _official_lines(report)
    if any(m["embedded_smoke_test_model"] for m in report["models"]):
        lines += ["", "Note: the embedded SmolLM2-135M model is a smoke-test model, not a judge; "
                      "its accuracy says nothing about RewardAnything."]
    return "\n".join(lines) + "\n"


def _official_lines(report: dict) -> list[str]:
    """The standard benchmark's own metric per model, overall and per section/subset/domain."""
    data = report["data"]
    first = next(m["official"] for m in report["models"] if m.get("official"))
    lines = ["", f"{first['headline']}, as the benchmark's own code scores it "
                 "(ra_lite/bench/standard/scoring.py; integer-score ties broken by expected "
                 "scores; ra-lite's metrics above treat every chosen response as above every "
                 "rejected one):", "",
             f"Principle{' (the default for this benchmark)' if data.get('principle_is_default') else ''}: "
             f"{data.get('principle', '')}", ""]
    groups = [("sections", None), ("subsets", "accuracy"), ("domains", "average"),
              ("levels", None)]
    for key, metric in groups:
        names = sorted({n for m in report["models"] for n in (m.get("official") or {})
                        .get("groups", {}).get(key, {})})
        if not names:
            continue
        lines += ["", f"| model | {first['benchmark']} | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for m in report["models"]:
            o = m.get("official")
            if not o:
                continue
            cells = []
            for n in names:
                value = o["groups"][key].get(n)
                if isinstance(value, dict):
                    value = value.get(metric) if metric in value else value.get("score")
                cells.append(_pct(value))
            lines.append(f"| {m['label']} | {_pct(o['value'])} | " + " | ".join(cells) + " |")
    unjudged = [f"{m['label']} {m['official']['unjudged']}" for m in report["models"]
                if m.get("official") and m["official"]["unjudged"]]
    if unjudged:
        lines += ["", "Rows not judged (counted wrong): " + ", ".join(unjudged)]
    lines += ["", "RewardAnything-8B's own figures on this benchmark are not shown: the paper's "
                  "tables could not be read from this machine (arXiv 2506.03637)."]
    return lines


def plot(report: dict, path: Path) -> bool:
    """Accuracy and KLD per model and category. False (and no file) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import numpy as np

    models = report["models"]
    categories = sorted({c for m in models for c in m["by_category"]})
    has_ref = any(m.get("agreement_with_reference") for m in models)
    sweep = report.get("budget_sweep") or []
    panels = 1 + has_ref + bool(sweep)
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), squeeze=False)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(categories) + 1)
    labels = ["overall", *categories]
    for i, m in enumerate(models):
        values = [m["aggregates"]["pairwise_accuracy"]] + \
                 [m["by_category"].get(c, {}).get("pairwise_accuracy") for c in categories]
        axes[0][0].bar(x + i * width, [100 * (v or 0) for v in values], width, label=m["label"])
    axes[0][0].set_title("pairwise accuracy vs ground truth (%)")
    axes[0][0].axhline(50, color="grey", lw=0.8, ls="--")
    if has_ref:
        for i, m in enumerate(models):
            g = m.get("agreement_with_reference")
            if not g:
                continue
            values = [g["mean_kld"]] + [g["by_category"].get(c, {}).get("mean_kld") for c in categories]
            axes[0][1].bar(x + i * width, [v or 0 for v in values], width, label=m["label"])
        axes[0][1].set_title("mean KL(reference ‖ model) at score positions (nats)")
    for ax in axes[0][:1 + has_ref]:
        ax.set_xticks(x + width * (len(models) - 1) / 2, labels, rotation=20)
        ax.legend(fontsize=7)
    if sweep:
        # The budget's trade-off as the quant's: accuracy against seconds per judgment.
        ax = axes[0][-1]
        for label in dict.fromkeys(row["label"] for row in sweep):
            rows = sorted((r for r in sweep if r["label"] == label),
                          key=lambda r: r["think_budget"])
            xs = [r["mean_seconds_per_judgment"] or 0 for r in rows]
            ys = [100 * (r["aggregates"]["pairwise_accuracy"] or 0) for r in rows]
            ax.plot(xs, ys, marker="o", label=label)
            for r, xv, yv in zip(rows, xs, ys):
                ax.annotate(str(r["think_budget"]), (xv, yv), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        ax.set_xlabel("seconds per judgment")
        ax.set_title("pairwise accuracy (%) by think budget")
        ax.legend(fontsize=7)
    fig.suptitle(f"mini-RABench ({report['data']['source']}, {report['data']['n_items']} items)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    replace_into(tmp, path)
    return True


def write_outputs(report: dict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
                       ("report.md", markdown(report))):
        path = directory / name
        write_atomic(path, text.encode("utf-8"))
        written.append(path)
    if plot(report, directory / "plot.png"):
        written.append(directory / "plot.png")
    return written
