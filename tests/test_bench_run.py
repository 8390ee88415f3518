"""mini-RABench end to end on real llama.cpp: a quant against its reference, cache, resume."""

import json

import pytest

from ra_lite.bench.cli import run_bench
from ra_lite.bench.dataset import load_items

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Three bundled quick items with 3 responses each (keeps the run to seconds)."""
    items = [i for i in load_items("quick").items if len(i.responses) == 3][:3]
    path = tmp_path_factory.mktemp("data") / "tiny.jsonl"
    path.write_text("".join(json.dumps(i.to_dict()) + "\n" for i in items))
    return path


@pytest.fixture(scope="module")
def requantized(tmp_path_factory, embedded_path):
    """The embedded Q4_1 requantized to Q2_K: a strictly worse copy of the same model."""
    from ra_lite.convert.quantize import quantize

    out = tmp_path_factory.mktemp("q")
    [result] = quantize(embedded_path, ["Q2_K"], out_dir=out, allow_requantize=True,
                        manifest=False, progress=False)
    return result.output


def test_bench_against_a_reference_reports_everything(tmp_path, tiny_data, requantized,
                                                      embedded_path):
    cache = tmp_path / "cache"
    report = run_bench([str(requantized)], reference=str(embedded_path), data=str(tiny_data),
                       output_dir=tmp_path / "out", think_budget=8, cache_dir=cache,
                       progress=False, notify=lambda m: None)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["models"][0]["sha256"] == report["models"][0]["sha256"]
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"results.json", "report.md", "plot.png"}
    ref, quant = report["models"]
    assert ref["role"] == "reference" and quant["role"] == "model"
    for model in (ref, quant):
        assert set(model["aggregates"]) >= {"pairwise_accuracy", "kendall_tau", "ndcg",
                                            "top1_accuracy", "valid_rate"}
        assert model["aggregates"]["valid_rate"] == 1.0
        assert [p["id"] for p in model["predictions"]] == [json.loads(l)["id"] for l in
                                                           tiny_data.read_text().splitlines()]
        assert all(set(p) >= {"id", "scores", "best-to-worst", "valid"} for p in model["predictions"])
    # Replay against replay: the reference against itself is exactly zero.
    assert ref["agreement_with_reference"]["mean_kld"] == 0
    assert ref["agreement_with_reference"]["pairwise_agreement"] == 1
    q = quant["agreement_with_reference"]
    assert q["mean_kld"] > 0 and q["n_score_positions"] == 9
    assert 0 <= q["same_top_score_rate"] <= 1 and q["n_items"] == 3
    assert "mean KLD" in (tmp_path / "out" / "report.md").read_text()


def test_cached_reference_is_not_run_again(tmp_path, tiny_data, requantized, embedded_path,
                                           monkeypatch):
    cache = tmp_path / "cache"
    args = dict(reference=str(embedded_path), data=str(tiny_data), think_budget=8,
                cache_dir=cache, progress=False, notify=lambda m: None)
    first = run_bench([str(requantized)], output_dir=tmp_path / "a", **args)
    import ra_lite.judge

    def no_loading(*a, **k):
        raise AssertionError("a cached model was loaded again")

    monkeypatch.setattr(ra_lite.judge, "load", no_loading)
    second = run_bench([str(requantized)], output_dir=tmp_path / "b", **args)
    assert [m["aggregates"] for m in second["models"]] == [m["aggregates"] for m in first["models"]]


def test_interrupted_run_resumes_from_the_cache(tmp_path, tiny_data, embedded_path, monkeypatch):
    import ra_lite.judge

    cache = tmp_path / "cache"
    real_load, calls = ra_lite.judge.load, {"n": 0}

    class Interrupting:
        """Lets two judgments through, then interrupts like a Ctrl-C (a judge that is its own
        backend, judging whole requests: the judge queue calls it one request at a time)."""
        def __init__(self, judge):
            self.judge = judge
            self.backend, self.options, self.model_name = self, judge.options, judge.model_name
        def say_once(self, key, message):
            pass
        def judge_request(self, *a, **k):
            calls["n"] += 1
            if calls["n"] > 2:
                raise KeyboardInterrupt
            return self.judge.judge_request(*a, **k)
        def close(self):
            self.judge.close()

    monkeypatch.setattr(ra_lite.judge, "load", lambda *a, **k: Interrupting(real_load(*a, **k)))
    with pytest.raises(KeyboardInterrupt):
        run_bench([str(embedded_path)], data=str(tiny_data), output_dir=tmp_path / "o",
                  think_budget=4, cache_dir=cache, progress=False, notify=lambda m: None)
    monkeypatch.setattr(ra_lite.judge, "load", real_load)
    assert cached_judgments(cache) == 2
    report = run_bench([str(embedded_path)], data=str(tiny_data), output_dir=tmp_path / "o",
                       think_budget=4, cache_dir=cache, progress=False, notify=lambda m: None)
    assert len(report["models"][0]["predictions"]) == 3 and cached_judgments(cache) == 3


def cached_judgments(cache_dir) -> int:
    from ra_lite.judgment_cache import JudgmentCache

    store = JudgmentCache(cache_dir / "judgments.sqlite3")
    try:
        return store.stats().by_kind.get("judgment", 0)
    finally:
        store.close()


def test_orders_and_a_budget_sweep_are_reported(tmp_path, tiny_data, requantized, embedded_path):
    report = run_bench([str(requantized)], reference=str(embedded_path), data=str(tiny_data),
                       output_dir=tmp_path / "out", think_budgets=[0, 2], orders=2,
                       cache_dir=tmp_path / "cache", progress=False, notify=lambda m: None)
    assert report["settings"]["think_budget"] == 2 and report["settings"]["orders"] == 2
    for model in report["models"]:
        c = model["order_consistency"]
        assert c["orders"] == 2 and c["n_items"] == 3
        assert 0 <= c["pairwise_agreement"] <= 1 and 0 <= c["top1_agreement"] <= 1
        assert set(c["official_order_aggregates"]) >= {"pairwise_accuracy", "valid_rate"}
        assert "pairwise_agreement_lost" in c
    ref = report["models"][0]
    assert ref["order_consistency"]["pairwise_agreement_lost"] == 0
    rows = {(r["label"], r["think_budget"]): r for r in report["budget_sweep"]}
    assert len(rows) == 4
    assert rows[(ref["label"], 2)]["agreement_with_reference_at_max_budget"] == 1
    assert all(r["mean_seconds_per_judgment"] > 0 for r in rows.values())
    assert rows[(ref["label"], 0)]["mean_think_tokens"] == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Order consistency" in text and "Think budget sweep" in text


def test_bench_cli_reports_bad_data_lines(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ra_lite.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\nnot json\n')
    result = CliRunner().invoke(main, ["bench", "--data", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "error: " in result.output and "Traceback" not in result.output
