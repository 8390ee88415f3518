"""Machine-checkable ground truth: rules a program applies to a response, stored beside an item.

The checkable slice of mini-RABench (items tagged "checkable") states a rule in its principle —
a length limit, a required element or format, a checkable answer — and stores the same rule as
data in the item's "check" field, so its ground truth is derived, not judged by its author:

    {"max_words": 30}                 at most 30 words (whitespace-separated)
    {"min_words": 10}
    {"max_chars": 200}
    {"contains": "text"}              case-insensitive substring
    {"not_contains": "text"}
    {"regex": "pattern"}              Python re.search, MULTILINE
    {"not_regex": "pattern"}
    {"number": 42, "tolerance": 0}    the response's last number equals 42 (within tolerance)
    {"json_keys": ["a", "b"]}         the whole response is a JSON object with exactly these keys
    {"bullets": 3}                    exactly 3 lines starting with "- " or "* "
    {"lines": 2}                      exactly 2 non-empty lines
    {"all": [rule, ...]}              several rules

A single rule gives 5 when the response satisfies it and 1 when not; "all" gives
1 + round(4 * met / total), so meeting more of the constraints is graded. The ranking is the
scores in descending order, ties in response order. `derive` recomputes both, and the test suite
re-derives every checkable item's ground truth from its rule (tests/test_bench_checks.py).
"""

from __future__ import annotations

import json
import re

RULES = ("max_words", "min_words", "max_chars", "contains", "not_contains", "regex", "not_regex",
         "number", "json_keys", "bullets", "lines", "all")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?")


class CheckError(ValueError):
    """A malformed rule; the message names what is wrong."""


def validate(rule) -> dict:
    """The rule, checked for shape (CheckError otherwise)."""
    if not isinstance(rule, dict) or not rule:
        raise CheckError(f"a rule is an object like {{\"max_words\": 30}}, got {rule!r:.60}")
    known = [k for k in rule if k in RULES]
    if len(known) != 1:
        raise CheckError(f"a rule names exactly one of {', '.join(RULES)}, got {sorted(rule)}")
    (kind,) = known
    extra = set(rule) - {kind} - ({"tolerance"} if kind == "number" else set())
    if extra:
        raise CheckError(f"{kind}: unexpected field(s) {sorted(extra)}")
    value = rule[kind]
    if kind in ("max_words", "min_words", "max_chars", "bullets", "lines"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckError(f"{kind}: must be a non-negative integer, got {value!r}")
    elif kind in ("contains", "not_contains", "regex", "not_regex"):
        if not isinstance(value, str) or not value:
            raise CheckError(f"{kind}: must be a non-empty string")
        if "regex" in kind:
            try:
                re.compile(value)
            except re.error as e:
                raise CheckError(f"{kind}: {e}") from None
    elif kind == "number":
        tolerance = rule.get("tolerance", 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
                tolerance < 0:
            raise CheckError("number: needs a number and a non-negative tolerance")
    elif kind == "json_keys":
        if not isinstance(value, list) or not value or not all(isinstance(k, str) for k in value):
            raise CheckError("json_keys: must be a non-empty list of key names")
    elif kind == "all":
        if not isinstance(value, list) or len(value) < 2:
            raise CheckError("all: must list at least two rules")
        for part in value:
            validate(part)
            if "all" in part:
                raise CheckError("all: rules inside 'all' cannot be 'all' themselves")
    return rule


def satisfied(rule: dict, text: str) -> bool:
    """Whether `text` satisfies one (non-"all") rule."""
    (kind,) = [k for k in rule if k in RULES]
    value = rule[kind]
    words = text.split()
    if kind == "max_words":
        return len(words) <= value
    if kind == "min_words":
        return len(words) >= value
    if kind == "max_chars":
        return len(text) <= value
    if kind == "contains":
        return value.lower() in text.lower()
    if kind == "not_contains":
        return value.lower() not in text.lower()
    if kind == "regex":
        return re.search(value, text, re.MULTILINE) is not None
    if kind == "not_regex":
        return re.search(value, text, re.MULTILINE) is None
    if kind == "number":
        found = _NUMBER.findall(text)
        if not found:
            return False
        last = float(found[-1].replace(",", ""))
        return abs(last - value) <= rule.get("tolerance", 0)
    if kind == "json_keys":
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        return isinstance(parsed, dict) and sorted(parsed) == sorted(value)
    if kind == "bullets":
        return sum(1 for line in text.splitlines() if re.match(r"\s*[-*] ", line)) == value
    if kind == "lines":
        return sum(1 for line in text.splitlines() if line.strip()) == value
    raise CheckError(f"{kind} is not a single rule")


def score(rule: dict, text: str) -> int:
    """The response's ground-truth score under the rule (module docstring)."""
    if "all" in rule:
        met = sum(satisfied(part, text) for part in rule["all"])
        return 1 + round(4 * met / len(rule["all"]))
    return 5 if satisfied(rule, text) else 1


def derive(rule: dict, responses: dict[str, str]) -> tuple[dict[str, int], list[str]]:
    """(scores, best-to-worst) of the responses under the rule; ties keep response order."""
    scores = {name: score(rule, text) for name, text in responses.items()}
    return scores, sorted(responses, key=lambda n: -scores[n])
