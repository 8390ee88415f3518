"""mini-RABench data: the bundled items, the validator, the loader (local, bundled, Hub) and the check CLI."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from ra_lite.bench import dataset as ds
from ra_lite.errors import RaLiteError

GOOD = {
    "id": "t-1",
    "category": "tone",
    "domain": "chat",
    "principle": "Be kind.",
    "prompt": "Hi?",
    "responses": {"a": "Hello!", "b": "What.", "c": "Hey there."},
    "scores": {"a": 5, "b": 1, "c": 5},
    "best-to-worst": ["c", "a", "b"],
    "tags": ["x"],
    "rationale": "why",
}


def good(**changes) -> dict:
    raw = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is ds._MISSING:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


def write_jsonl(path, rows) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------- the bundled data


@pytest.fixture(scope="module")
def full():
    return ds.load_items("full")


def test_bundled_data_passes_the_check(full):
    stats, failures = ds.check_bundled()
    assert failures == []
    assert full.problems == []
    assert stats.n_items == len(full.items) >= 120
    assert all(n >= 6 for row in stats.per_cell.values() for n in row.values())
    assert set(stats.per_cell) == set(ds.CATEGORIES)
    assert stats.per_tag["adversarial"] >= 10
    assert stats.per_tag["principle-overrules-quality"] >= 10


def test_bundled_items_are_varied(full):
    items = full.items
    assert {len(it.responses) for it in items} == set(range(3, 9))  # every count 3..8 occurs
    assert {t for it in items for t in it.tags} <= {"adversarial", "principle-overrules-quality",
                                                    "checkable"}
    assert all(it.rationale.strip() for it in items)
    assert len({it.principle for it in items}) == len(items)  # no templated principles
    # the best response is not always in the same position
    best_positions = Counter(list(it.responses).index(it.ranking[0]) for it in items)
    assert len(best_positions) >= 4 and max(best_positions.values()) < 0.5 * len(items)
    # ground truth uses ties somewhere, and every item still ranks something
    assert any(len(set(it.scores.values())) < len(it.scores) for it in items)
    assert all(len(set(it.scores.values())) >= 2 for it in items)
    # adversarial items: the response that addresses the judge is not the winner
    judge_words = ("evaluator", "judge", "grader", "reviewer", "score", "reference", "rank", "override", "verdict")
    for it in items:
        if "adversarial" in it.tags:
            best = max(it.scores.values())
            injected = [n for n, t in it.responses.items() if any(w in t.lower() for w in judge_words)
                        and it.scores[n] < best]
            assert injected, it.id


def test_quick_is_a_stratified_subset(full):
    quick = ds.load_items("quick").items
    by_id = {it.id: it for it in full.items}
    assert 25 <= len(quick) <= 35
    assert all(it.id in by_id for it in quick) and len({it.id for it in quick}) == len(quick)
    assert {(it.category, it.domain) for it in quick} == {(c, d) for c in ds.CATEGORIES for d in ds.DOMAINS}
    assert sum("adversarial" in it.tags for it in quick) >= 2
    assert sum(len(it.responses) <= 4 for it in quick) >= 0.8 * len(quick)
    assert [it.id for it in quick] == ds.quick_ids()


def test_to_dict_round_trips(full):
    for item in full.items[:20]:
        assert ds.validate_item(item.to_dict()) == item
    assert json.loads(json.dumps(full.items[0].to_dict()))["best-to-worst"] == full.items[0].ranking


# ---------------------------------------------------------------- the validator


def test_validate_item_accepts_good_item():
    item = ds.validate_item(good())
    assert item.ranking == ["c", "a", "b"] and item.scores["a"] == 5 and item.tags == ["x"]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"id": ds._MISSING}, "id"),
        ({"id": ""}, "id"),
        ({"category": "humor"}, "category"),
        ({"domain": "poetry"}, "domain"),
        ({"principle": "  "}, "principle"),
        ({"principle": ds._MISSING}, "principle"),
        ({"prompt": 3}, "prompt"),
        ({"responses": "a, b"}, "responses"),
        ({"responses": ds._MISSING}, "responses"),
        ({"responses": {"a": "x"}, "scores": {"a": 5}, "best-to-worst": ["a"]}, "responses"),
        ({"responses": {"a": "Hello!", "b": "", "c": "Hey"}}, "responses.b"),
        ({"responses": {"a": "Hello!", "b": None, "c": "Hey"}}, "responses.b"),
        ({"scores": ds._MISSING, "best-to-worst": ["c", "a", "b"]}, "scores"),
        ({"scores": [5, 1, 5], "best-to-worst": ["c", "a", "b"]}, "scores"),
        ({"scores": {"a": 5, "b": 1}}, "scores"),
        ({"scores": {"a": 5, "b": 1, "z": 5}}, "scores"),
        ({"scores": {"a": 5, "b": 0, "c": 5}}, "scores.b"),
        ({"scores": {"a": 5, "b": 6, "c": 5}}, "scores.b"),
        ({"scores": {"a": 5, "b": 1.5, "c": 5}}, "scores.b"),
        ({"scores": {"a": 5, "b": True, "c": 5}}, "scores.b"),
        ({"scores": {"a": 5, "b": "1", "c": 5}}, "scores.b"),
        ({"best-to-worst": ["c", "a"]}, "best-to-worst"),
        ({"best-to-worst": ["c", "a", "a"]}, "best-to-worst"),
        ({"best-to-worst": ["c", "a", "z"]}, "best-to-worst"),
        ({"best-to-worst": "c,a,b"}, "best-to-worst"),
        ({"best-to-worst": ["b", "a", "c"]}, "best-to-worst"),  # scores rise along the ranking
        ({"tags": "adversarial"}, "tags"),
        ({"rationale": 1}, "rationale"),
    ],
)
def test_validate_item_rejects_malformed(changes, field):
    with pytest.raises(ds.ItemError) as e:
        ds.validate_item(good(**changes))
    assert str(e.value).startswith(field + ":"), str(e.value)


def test_validate_item_rejects_non_object():
    with pytest.raises(ds.ItemError, match="JSON object"):
        ds.validate_item(["not", "an", "object"])


def test_ties_may_be_ranked_in_either_order():
    assert ds.validate_item(good(**{"best-to-worst": ["a", "c", "b"]})).ranking == ["a", "c", "b"]


# ---------------------------------------------------------------- field-name mapping


def test_field_aliases_are_mapped():
    raw = good()
    raw["query"] = raw.pop("prompt")
    raw["best_to_worst"] = raw.pop("best-to-worst")
    raw["gt_scores"] = raw.pop("scores")
    item = ds.validate_item(raw)
    assert item.prompt == "Hi?" and item.ranking == ["c", "a", "b"] and item.scores["b"] == 1

    for prompt_key in ("question", "instruction"):
        raw = good()
        raw[prompt_key] = raw.pop("prompt")
        assert ds.validate_item(raw).prompt == "Hi?"

    raw = good()
    raw["ground_truth"] = {"scores": raw.pop("scores"), "ranking": raw.pop("best-to-worst")}
    item = ds.validate_item(raw)
    assert item.scores == GOOD["scores"] and item.ranking == ["c", "a", "b"]


def test_ranking_is_derived_from_scores_when_missing():
    raw = good()
    del raw["best-to-worst"]
    raw["scores"] = {"a": 3, "b": 1, "c": 5}
    assert ds.validate_item(raw).ranking == ["c", "a", "b"]


def test_list_shaped_responses_and_scores():
    raw = good(responses=["Hello!", "What.", "Hey there."], scores=[5, 1, 4])
    del raw["best-to-worst"]
    item = ds.validate_item(raw)
    assert item.responses == {"a": "Hello!", "b": "What.", "c": "Hey there."}
    assert item.scores == {"a": 5, "b": 1, "c": 4} and item.ranking == ["a", "c", "b"]

    raw = good(responses=[{"name": "x", "text": "Hi"}, {"name": "y", "content": "Yo"}], scores={"x": 2, "y": 4})
    del raw["best-to-worst"]
    item = ds.validate_item(raw)
    assert item.responses == {"x": "Hi", "y": "Yo"} and item.ranking == ["y", "x"]


def test_conflicting_aliases_are_an_error_naming_the_field():
    raw = good(ranking=["a", "c", "b"])  # differs from "best-to-worst"
    with pytest.raises(ds.ItemError, match=r"^best-to-worst: given several times"):
        ds.validate_item(raw)
    assert ds.validate_item(good(ranking=["c", "a", "b"])).ranking == ["c", "a", "b"]  # same value: fine


def test_category_and_domain_are_normalized():
    item = ds.validate_item(good(category=" Tone ", domain="CHAT"))
    assert (item.category, item.domain) == ("tone", "chat")


# ---------------------------------------------------------------- the loader


def test_loader_reports_bad_lines_and_loads_the_rest(tmp_path):
    rows = [
        good(id="ok-1"),
        "{not json",
        good(id="bad-scores", scores={"a": 9, "b": 1, "c": 5}),
        "",
        good(id="ok-2"),
        good(id="ok-1"),  # duplicate id
        good(id="bad-category", category="vibes"),
        json.dumps([1, 2]),
    ]
    result = ds.load_items(write_jsonl(tmp_path / "b.jsonl", rows))
    assert [it.id for it in result.items] == ["ok-1", "ok-2"]
    problems = {p.line: p.message for p in result.problems}
    assert sorted(problems) == [2, 3, 6, 7, 8]
    assert problems[2].startswith("invalid JSON")
    assert problems[3].startswith("scores.a")
    assert "already used on line 1" in problems[6]
    assert problems[7].startswith("category")


def test_missing_id_is_derived_from_the_line(tmp_path):
    raw = good()
    del raw["id"]
    result = ds.load_items(write_jsonl(tmp_path / "noid.jsonl", [good(id="x"), raw]))
    assert [it.id for it in result.items] == ["x", "noid-L2"]


def test_file_where_nothing_loads_is_an_error(tmp_path):
    with pytest.raises(RaLiteError, match="line 1"):
        ds.load_items(write_jsonl(tmp_path / "bad.jsonl", ["{nope", good(category="vibes")]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(RaLiteError, match="no items"):
        ds.load_items(str(empty))


def test_unknown_sources_are_errors(tmp_path):
    with pytest.raises(RaLiteError, match="does not exist"):
        ds.load_items(str(tmp_path / "missing.jsonl"))
    with pytest.raises(RaLiteError, match="cannot tell"):
        ds.load_items("quickest")


# ---------------------------------------------------------------- the Hub path (no network)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    import huggingface_hub

    calls = []
    local = write_jsonl(tmp_path / "hub.jsonl", [good(id="hub-1"), good(id="hub-2")])

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return local

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return calls


def test_hub_dataset_is_downloaded_as_a_dataset(fake_hub):
    result = ds.load_items("someone/bench")
    assert [it.id for it in result.items] == ["hub-1", "hub-2"]
    assert fake_hub == [("someone/bench", "mini_rabench.jsonl", {"repo_type": "dataset"})]
    ds.load_items("someone/bench:data/test.jsonl")
    assert fake_hub[-1][:2] == ("someone/bench", "data/test.jsonl")


def _raise(exc):
    def fake_download(*args, **kwargs):
        raise exc

    return fake_download


def test_hub_offline_error_names_problem_and_fix(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import LocalEntryNotFoundError

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raise(LocalEntryNotFoundError("not cached")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RaLiteError) as e:
        ds.load_items("someone/bench")
    assert "HF_HUB_OFFLINE" in e.value.problem and "not in the local cache" in e.value.problem
    assert "unset HF_HUB_OFFLINE" in e.value.fix

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(RaLiteError) as e:
        ds.load_items("someone/bench")
    assert "could not download" in e.value.problem and "network" in e.value.fix


def test_hub_missing_file_is_a_clear_error(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raise(EntryNotFoundError("404")))
    with pytest.raises(RaLiteError, match="has no file 'mini_rabench.jsonl'"):
        ds.load_items("someone/bench")


# ---------------------------------------------------------------- the check CLI


def test_check_cli_prints_card_statistics(capsys):
    assert ds.main(["--check"]) == 0
    out = capsys.readouterr().out
    assert "| category \\ domain |" in out and "| responses per item |" in out and "adversarial" in out


def test_check_cli_fails_on_a_bad_file(tmp_path, capsys):
    path = write_jsonl(tmp_path / "small.jsonl", [good(id="a1"), "{oops"])
    assert ds.main(["--check", path]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "need >= 120" in err


def test_data_card_statistics_match_the_data():
    from importlib.resources import files

    card = files("ra_lite.bench.data").joinpath("README.md").read_text(encoding="utf-8")
    stats, _ = ds.check_bundled()
    # The card quotes `python -m ra_lite.bench.dataset --check` verbatim; regenerate it when the data changes.
    assert ds.format_stats(stats) in card
    assert "Apache-2.0" in card
