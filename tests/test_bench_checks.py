"""The machine-checkable slice of mini-RABench: every ground truth re-derived from its stored rule,
the rules themselves, and the loader refusing scores that contradict an item's rule."""

import json

import pytest

from ra_lite.bench import checks
from ra_lite.bench.dataset import load_items, parse_jsonl


def checkable_items():
    return [i for i in load_items("full").items if i.check is not None]


def test_every_checkable_items_ground_truth_is_its_rules():
    items = checkable_items()
    assert len(items) >= 24
    assert {i.domain for i in items} == {"chat", "code", "safety", "math"}
    assert len({i.category for i in items}) == 5
    for item in items:
        assert "checkable" in item.tags
        scores = {name: checks.score(item.check, text) for name, text in item.responses.items()}
        assert scores == item.scores, item.id
        ranking = sorted(item.responses, key=lambda n: -scores[n])
        assert ranking == item.ranking, item.id
        assert len(set(scores.values())) >= 2, f"{item.id} ranks nothing"
    # Only the slice carries rules, and every item tagged checkable has one.
    assert all(("checkable" in i.tags) == (i.check is not None) for i in load_items("full").items)


@pytest.mark.parametrize("rule, text, expected", [
    ({"max_words": 3}, "one two three", True), ({"max_words": 3}, "one two three four", False),
    ({"min_words": 2}, "one", False), ({"max_chars": 5}, "12345", True),
    ({"contains": "Paris"}, "I love paris.", True), ({"not_contains": "!"}, "Hi!", False),
    ({"regex": "Answer: \\d+\\s*\\Z"}, "work\nAnswer: 150", True),
    ({"regex": "Answer: \\d+\\s*\\Z"}, "Answer: 150\nmore", False),
    ({"not_regex": "[A-Z]"}, "all lower", True),
    ({"number": 408}, "17 × 24 = 408.", True), ({"number": 408}, "400 + 18 = 418", False),
    ({"number": 1000.5}, "It is 1,000.5", True), ({"number": 8.0, "tolerance": 0.05}, "8.045", True),
    ({"number": 12}, "no digits", False),
    ({"json_keys": ["a", "b"]}, '{"b": 1, "a": 2}', True),
    ({"json_keys": ["a", "b"]}, '{"a": 1}', False), ({"json_keys": ["a"]}, "[1]", False),
    ({"bullets": 2}, "- x\n* y\nz", True), ({"lines": 2}, "a\n\nb", True),
])
def test_each_rule(rule, text, expected):
    assert checks.satisfied(checks.validate(rule), text) is expected


def test_all_is_graded_by_the_share_of_rules_met():
    rule = {"all": [{"contains": "a"}, {"contains": "b"}, {"contains": "c"}]}
    assert [checks.score(rule, t) for t in ("abc", "ab", "a", "x")] == [5, 4, 2, 1]
    assert checks.derive(rule, {"p": "x", "q": "ab", "r": "abc", "s": "ba"}) == \
        ({"p": 1, "q": 4, "r": 5, "s": 4}, ["r", "q", "s", "p"])


@pytest.mark.parametrize("rule, message", [
    ({}, "a rule is an object"), ({"max_words": 3, "min_words": 1}, "exactly one of"),
    ({"max_words": -1}, "non-negative integer"), ({"regex": "("}, "regex:"),
    ({"number": "12"}, "number: needs a number"), ({"all": [{"max_words": 3}]}, "at least two"),
    ({"max_words": 3, "tolerance": 1}, "unexpected field"),
    ({"all": [{"max_words": 3}, {"all": [{"lines": 1}, {"lines": 2}]}]}, "cannot be 'all'"),
])
def test_malformed_rules_are_named(rule, message):
    with pytest.raises(checks.CheckError, match=message):
        checks.validate(rule)


def test_the_loader_refuses_scores_that_contradict_the_rule():
    item = checkable_items()[0].to_dict()
    good = json.dumps(item)
    wrong = dict(item, scores={**item["scores"]})
    first = next(iter(wrong["scores"]))
    wrong["scores"][first] = 2 if wrong["scores"][first] != 2 else 3
    wrong.pop("best-to-worst")
    loaded = parse_jsonl(good + "\n" + json.dumps({**wrong, "id": "x"}) + "\n", "t.jsonl")
    assert [i.id for i in loaded.items] == [item["id"]]
    (problem,) = loaded.problems
    assert problem.line == 2 and "do not follow the item's check rule" in problem.message
    bad_rule = json.dumps({**item, "id": "y", "check": {"max_words": "ten"}})
    (problem,) = parse_jsonl(good + "\n" + bad_rule, "t.jsonl").problems
    assert problem.message.startswith("check: max_words: must be a non-negative integer")
