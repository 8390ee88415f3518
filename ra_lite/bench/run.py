"""Run mini-RABench: judge every item with each model, score against ground truth, and measure
each model against a reference model.

Against the reference, decisions (scores, rankings) are compared directly, and the damage that
has not yet flipped a decision is measured as a KL divergence at the score positions. For that the
reference's own output is teacher-forced through both models (`Judge.replay`) and their
distributions over "1".."5" are compared position by position. Both sides are replays, so they are
computed the same way (llama.cpp's numerics depend on batching) and a model against itself gives 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ra_lite.bench.settings import BenchSettings
from ra_lite.bench.dataset import BenchItem, LoadResult, load_items
from ra_lite.bench import metrics
from ra_lite.errors import RaLiteError
from ra_lite.judgment import Judgment
from ra_lite.request import JudgeRequest


@dataclass
class ModelResults:
    """One model's judgments of every item (as cached records) and what they score."""

    label: str
    path: str
    sha256: str
    quant: str
    size_bytes: int
    embedded: bool
    records: dict[str, dict]                      # item id -> cache record
    replays: dict[str, dict] = field(default_factory=dict)  # item id -> replay of the reference

    def judgment(self, item_id: str) -> Judgment | None:
        record = self.records[item_id]["judgment"]
        return Judgment.from_record(record) if record else None


@dataclass
class Agreement:
    """A model against the reference model (decisions and distributions)."""

    pairwise_agreement: float
    kendall_tau: float
    score_mae: float
    exact_match_rate: float
    mean_kld: float                 # KL(reference || model) at score positions, nats
    same_top_score_rate: float      # both give the same most likely score
    n_items: int
    n_score_positions: int
    by_category: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: _num(v) for k, v in self.__dict__.items() if k != "by_category"}
        out["by_category"] = self.by_category
        return out


def _num(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def evaluate_model(model: str | None, items: list[BenchItem], settings: BenchSettings,
                   cache, *, reference: ModelResults | None = None,
                   is_reference: bool = False, notify: Callable[[str], None] = print,
                   progress: Callable | None = None, parallel: int | str = "auto"
                   ) -> ModelResults:
    """Judge (or read from the cache) every item; with `reference`, also replay its outputs.

    cache: a ra_lite.judgment_cache.JudgmentCache, or None (judge everything, keep nothing).
    parallel: judgments decoded at once (see Judge.judge_many); replays stay sequential.
    is_reference: replay this model's own outputs through itself (the other side of the KLD),
    in the same model load. The model is loaded only if something is not cached.
    """
    from ra_lite.file_hash import remembered_sha256
    from ra_lite.judgment_cache import ModelCache
    from ra_lite.pull import resolve_model
    from ra_lite.runtime.gguf_info import read_gguf_info

    path, embedded = resolve_model(model)
    info = read_gguf_info(path)
    info.require_causal_lm()
    sha = remembered_sha256(path)
    store = ModelCache(cache, sha) if cache is not None else None
    results = ModelResults(label=path.name, path=str(path), sha256=sha, quant=info.quant,
                           size_bytes=info.size_bytes, embedded=embedded, records={})
    judge = None

    def loaded():
        nonlocal judge
        if judge is None:
            from ra_lite.judge import load

            judge = load(path, n_ctx=settings.n_ctx, notify=notify)
        return judge

    options = settings.options
    reporter = progress(len(items), f"judging with {path.name}") if progress else None
    try:
        # An error (e.g. an item too long for the context) is recorded as invalid; it depends
        # on the context size, so it is not cached (the judge queue stores judgments only).
        for item, judgment, error in _judged(loaded, items, options, parallel, store):
            results.records[item.id] = _record(item.id, judgment, error)
            if reporter is not None:
                reporter.update(judgment)
    finally:             # an interrupted run still closes its progress bar
        if reporter is not None:
            reporter.close()
    if is_reference:
        reference = results
    if reference is not None:
        _replay_reference(results, reference, items, settings, store, loaded, progress)
    if judge is not None:
        judge.close()
    return results


def evaluate_remote(remote: dict, items: list[BenchItem], settings: BenchSettings, *,
                    template=None, notify: Callable[[str], None] = print,
                    progress: Callable | None = None, parallel: int | str = "auto",
                    reference: ModelResults | None = None) -> ModelResults:
    """Judge every item on the server(s) of `remote` (load_remote's keyword arguments, "url"
    first). A server's model file cannot be identified, so nothing is cached. On the choice-point
    route the reference's outputs are replayed on the server for the KL divergence, as for a
    local model; the grammar route reads no probabilities, so it gets none (decisions are still
    compared)."""
    import hashlib

    from ra_lite.remote import load_remote

    remote = dict(remote)
    url = remote.pop("url")
    judge = load_remote(url, options=settings.options, template=template, notify=notify,
                        **remote)
    identity = hashlib.sha256(f"{url}|{remote.get('kind')}|{remote.get('model')}".encode())
    results = ModelResults(label=judge.model_name, path=str(url),
                           sha256="remote-" + identity.hexdigest()[:48], quant="remote",
                           size_bytes=0, embedded=False, records={})
    reporter = progress(len(items), f"judging on {judge.model_name}") if progress else None
    try:
        try:
            for item, judgment, error in _judged(judge, items, settings.options, parallel):
                results.records[item.id] = _record(item.id, judgment, error)
                if reporter is not None:
                    reporter.update(judgment)
        finally:
            if reporter is not None:
                reporter.close()
        if reference is not None and getattr(judge.backend, "route", "choices") == "choices":
            _replay_reference(results, reference, items, settings, None, lambda: judge, progress)
    finally:
        judge.close()
    return results


def item_request(item: BenchItem) -> JudgeRequest:
    return JudgeRequest.create(item.principle, item.prompt, item.responses)


def _record(item_id: str, judgment: Judgment | None, error=None) -> dict:
    return {"id": item_id, "judgment": judgment.to_record() if judgment is not None else None,
            "error": error.one_line() if error is not None else None}


def _judged(judge, items: list[BenchItem], options, parallel, cache=None):
    """(item, judgment, RaLiteError) per item, as each finishes; judge: a Judge, or a function
    that loads it (called only if the judgment cache does not answer every item)."""
    from ra_lite.judge_queue import JudgeQueue

    queue = JudgeQueue(judge, parallel, cache, options)
    for outcome in queue.each([item_request(i) for i in items], options):
        yield items[outcome.index], outcome.judgment, outcome.error


def _replay_reference(results: ModelResults, reference: ModelResults, items: list[BenchItem],
                      settings: BenchSettings, store, loaded, progress) -> None:
    """Teacher-force the reference's official-order output through this model (cached as a
    replay of that reference's output)."""
    options = settings.options
    todo = []
    for item in items:
        if reference.judgment(item.id) is None:
            continue
        cached = store.lookup_replay(item_request(item), options, reference.sha256) \
            if store is not None else None
        if cached is None:
            todo.append(item)
        else:
            results.replays[item.id] = cached
    reporter = progress(len(todo), f"replaying reference through {results.label}",
                        count_tokens=False) if progress and todo else None
    for item in todo:
        replayed = loaded().replay(item_request(item), reference.judgment(item.id), options)
        record = {"id": item.id, "score_probabilities": replayed.score_probabilities or {}}
        if store is not None:
            store.store_replay(item_request(item), options, reference.sha256, record)
        results.replays[item.id] = record
        if reporter is not None:
            reporter.update()
    if reporter is not None:
        reporter.close()


def item_results(model: ModelResults, items: list[BenchItem], official_order: bool = False
                 ) -> list[metrics.ItemResult]:
    """Each item's metrics against the ground truth: of the (aggregated) verdict, or with
    official_order, of the verdict under the official order alone (order 1 of a multi-order
    judgment: what --orders 1 would have answered, the same request and seed)."""
    out = []
    for item in items:
        judgment = model.judgment(item.id)
        if official_order and judgment is not None and judgment.orders:
            judgment = judgment.orders[0]
        scored = metrics.score_item(item.scores, judgment.scores if judgment else None,
                                    judgment.ranking if judgment else None)
        out.append(metrics.ItemResult(item.id, item.category, item.domain, scored,
                                      tuple(item.tags)))
    return out


def agreement(model: ModelResults, reference: ModelResults, items: list[BenchItem]) -> Agreement:
    per_item: list[tuple[str, dict]] = []
    for item in items:
        ref, pred = reference.judgment(item.id), model.judgment(item.id)
        if ref is None or pred is None:
            continue
        row = {
            "agree": metrics.pairwise_agreement(ref.scores, ref.ranking, pred.scores, pred.ranking),
            "tau": metrics.kendall_tau(ref.ranking, pred.ranking) if len(ref.ranking) > 1 else math.nan,
            "mae": metrics.score_mae(ref.scores, pred.scores),
            "exact": float(metrics.exact_match({"scores": ref.scores, "best-to-worst": ref.ranking},
                                               {"scores": pred.scores, "best-to-worst": pred.ranking})),
            "kld": [], "same_top": [],
        }
        p_all = reference.replays.get(item.id, {}).get("score_probabilities", {})
        q_all = model.replays.get(item.id, {}).get("score_probabilities", {})
        for name, p in p_all.items():
            q = q_all.get(name)
            if q:
                row["kld"].append(metrics.kl_divergence(p, q))
                row["same_top"].append(float(max(range(5), key=p.__getitem__) ==
                                             max(range(5), key=q.__getitem__)))
        per_item.append((item.category, row))

    def summarize(rows: list[dict]) -> dict:
        pairs = sum(r["agree"].total for r in rows)
        klds = [k for r in rows for k in r["kld"]]
        tops = [t for r in rows for t in r["same_top"]]
        return {
            "pairwise_agreement": sum(r["agree"].correct for r in rows) / pairs if pairs else math.nan,
            "kendall_tau": _mean([r["tau"] for r in rows]),
            "score_mae": _mean([r["mae"] for r in rows]),
            "exact_match_rate": _mean([r["exact"] for r in rows]),
            "mean_kld": _mean(klds), "same_top_score_rate": _mean(tops),
            "n_items": len(rows), "n_score_positions": len(klds),
        }

    overall = summarize([row for _, row in per_item])
    by_category = {}
    for category in sorted({c for c, _ in per_item}):
        by_category[category] = {k: _num(v) for k, v in
                                 summarize([r for c, r in per_item if c == category]).items()}
    return Agreement(**overall, by_category=by_category)


BENCH_FORMATS = ("auto", "mini-rabench", "rewardbench", "rewardbench2", "rm-bench")


def load_bench_items(data: str, notify: Callable[[str], None], data_format: str = "auto",
                     principle: str | None = None) -> LoadResult:
    """mini-RABench items, or a standard benchmark file's rows as items (detected by their
    fields, or named by data_format; principle: theirs, else the benchmark's default)."""
    from pathlib import Path

    from ra_lite.bench.standard.formats import load_standard

    if data_format not in BENCH_FORMATS:
        raise RaLiteError(f"unknown data format {data_format!r}",
                          f"use one of {', '.join(BENCH_FORMATS)}")
    path = Path(data).expanduser()
    standard = None
    if data_format != "mini-rabench" and path.is_file():
        standard = load_standard(path, None if data_format == "auto" else data_format,
                                 principle)
    elif data_format not in ("auto", "mini-rabench"):
        raise RaLiteError(f"--format {data_format} needs a local file, got {data!r}",
                          "download the benchmark's rows (JSON, JSONL or Parquet) and pass the "
                          "file")
    if standard is not None:
        if standard.principle_is_default:
            notify(f"{standard.benchmark}: judging under its default principle (pass "
                   "--principle to use another): " + standard.principle)
        return LoadResult(standard.source, standard.bench_items(), [], standard)
    if principle:
        raise RaLiteError("--principle applies to standard benchmark files (RewardBench, "
                          "RM-Bench), whose rows carry none; mini-RABench items have their own",
                          "drop --principle, or pass a RewardBench/RM-Bench file")
    loaded = load_items(data)
    for problem in loaded.problems:
        notify(f"skipping line {problem.line} of {data}: {problem.message}")
    if not loaded.items:
        raise RaLiteError(f"no usable items in {data}", "fix the lines reported above")
    return loaded


def order_consistency(model: ModelResults, items: list[BenchItem]) -> dict | None:
    """Mean order consistency over the items judged under several orders (None if none were)."""
    rows = [j.consistency for j in (model.judgment(i.id) for i in items)
            if j is not None and j.consistency is not None]
    if not rows:
        return None
    return {
        "n_items": len(rows), "orders": rows[0].n_orders,
        "pairwise_agreement": _mean([r.pairwise_agreement for r in rows
                                     if r.pairwise_agreement is not None]),
        "top1_agreement": _mean([r.top1_agreement for r in rows]),
        "mean_score_spread": _mean([sum(r.score_spread.values()) / len(r.score_spread)
                                    for r in rows]),
        "items_with_a_changed_winner": sum(r.top1_agreement < 1 for r in rows) / len(rows),
    }


def mean_seconds(model: ModelResults, items: list[BenchItem]) -> float:
    """Mean wall time of one judgment (all its orders), as measured when it was judged."""
    return _mean([j.timings.total_s for j in (model.judgment(i.id) for i in items) if j])


def mean_think_tokens(model: ModelResults, items: list[BenchItem]) -> float:
    """Mean reasoning tokens per verdict (per order, for multi-order judgments)."""
    values = []
    for judgment in (model.judgment(i.id) for i in items):
        if judgment is not None:
            values.append(judgment.tokens.think / max(len(judgment.orders or [judgment]), 1))
    return _mean(values)
