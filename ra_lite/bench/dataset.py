"""mini-RABench items: the schema, a validator, and a loader for bundled, local and Hub JSONL.

One item per JSONL line:
    {"id", "category", "domain", "principle", "prompt", "responses": {name: text},
     "scores": {name: 1..5}, "best-to-worst": [names], "tags": [...], "rationale": "..."}

Field names from other sources are mapped onto this schema (`FIELD_ALIASES`, documented in
ra_lite/bench/data/README.md):
    best_to_worst, bestToWorst, ranking, gt_ranking, ground_truth.{best-to-worst,best_to_worst,ranking}
                                                                    -> best-to-worst
    gt_scores, ground_truth.scores                                  -> scores
    query, question, instruction, input                             -> prompt
    uid, item_id                                                    -> id
    responses given as a list of strings -> named "a", "b", ...; as a list of objects ->
        named by their "name"/"id" with text from "text"/"content"/"response"; then scores
        given as a list are matched to responses by position.
    A missing ranking is derived from the scores (stable: ties keep response order); a missing id
    becomes "<file stem>-L<line>"; category and domain are lower-cased.

Run `python -m ra_lite.bench.dataset --check [FILE]` to validate a file (default: the bundled data)
and print the statistics that the data card quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from ra_lite.errors import RaLiteError
from ra_lite.request import loads_request_json

CATEGORIES = ("content", "logic", "style", "tone", "structure")
DOMAINS = ("chat", "code", "safety", "math")
SCORE_RANGE = (1, 5)
# General sources: a ranking needs two responses; RABench itself has ~8-9 per prompt, so allow
# headroom. The bundled data is held to the tighter 3..8 (see `check_bundled`).
MIN_RESPONSES, MAX_RESPONSES = 2, 16
BUNDLED_MIN_RESPONSES, BUNDLED_MAX_RESPONSES = 3, 8
BUNDLED_MIN_ITEMS, BUNDLED_MIN_PER_CELL = 120, 6
QUICK_MIN_ADVERSARIAL = 2

FULL_FILE = "mini_rabench.jsonl"
QUICK_FILE = "quick.json"
DEFAULT_HUB_FILENAME = FULL_FILE

# canonical field -> accepted alternatives, tried in order; dotted names look inside an object.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "best-to-worst": (
        "best_to_worst", "bestToWorst", "ranking", "gt_ranking",
        "ground_truth.best-to-worst", "ground_truth.best_to_worst", "ground_truth.ranking",
    ),
    "scores": ("gt_scores", "ground_truth.scores"),
    "prompt": ("query", "question", "instruction", "input"),
    "id": ("uid", "item_id"),
}


@dataclass(frozen=True)
class BenchItem:
    id: str
    category: str
    domain: str
    principle: str
    prompt: str
    responses: dict[str, str] = field(hash=False)
    scores: dict[str, int] = field(hash=False)
    ranking: list[str] = field(hash=False)  # best to worst, consistent with scores
    tags: list[str] = field(default_factory=list, hash=False)
    rationale: str = ""
    # The machine-checkable slice: the rule the ground truth is derived from (bench/checks.py).
    check: dict | None = field(default=None, hash=False)

    def to_dict(self) -> dict:
        """The item in the bundled JSONL shape (ranking written as "best-to-worst")."""
        out = {
            "id": self.id, "category": self.category, "domain": self.domain,
            "principle": self.principle, "prompt": self.prompt,
            "responses": dict(self.responses), "scores": dict(self.scores),
            "best-to-worst": list(self.ranking), "tags": list(self.tags), "rationale": self.rationale,
        }
        if self.check is not None:
            out["check"] = self.check
        return out


@dataclass(frozen=True)
class LineProblem:
    line: int  # 1-based line number in the source file
    message: str


@dataclass(frozen=True)
class LoadResult:
    source: str
    items: list[BenchItem]
    problems: list[LineProblem]
    # A standard benchmark file (RewardBench, RM-Bench: ra_lite.bench.standard) the items came
    # from, scored its own way besides ra-lite's metrics; None for mini-RABench data.
    standard: object | None = None


class ItemError(ValueError):
    """A malformed item; the message names the field. The loader turns it into a LineProblem."""


# ---------------------------------------------------------------------------- field mapping


_MISSING = object()  # "field absent", distinct from a field whose value is None


def _lookup(raw: dict, dotted: str):
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def normalize_fields(raw: dict) -> dict:
    """Map equivalent field names and shapes from other sources onto the canonical schema."""
    if not isinstance(raw, dict):
        raise ItemError(f"an item must be a JSON object, got {type(raw).__name__}")
    out = {k: v for k, v in raw.items() if k != "ground_truth"}
    for canonical, aliases in FIELD_ALIASES.items():
        found = [(name, v) for name in (canonical, *aliases) if (v := _lookup(raw, name)) is not _MISSING]
        if not found:
            continue
        distinct = {json.dumps(v, sort_keys=True, default=repr) for _, v in found}
        if len(distinct) > 1:
            names = ", ".join(name for name, _ in found)
            raise ItemError(f"{canonical}: given several times with different values ({names})")
        for name, _ in found:
            if "." not in name:
                out.pop(name, None)
        out[canonical] = found[0][1]
    names = None
    if "responses" in out:
        out["responses"], names = _normalize_responses(out["responses"])
    if isinstance(out.get("scores"), list) and names is not None:
        if len(out["scores"]) != len(names):
            raise ItemError(f"scores: a list of {len(out['scores'])} scores for {len(names)} responses")
        out["scores"] = dict(zip(names, out["scores"]))
    if "best-to-worst" not in out and isinstance(out.get("scores"), dict):
        # Stable sort: responses with equal scores keep their original order (they are ties anyway).
        responses = out.get("responses")
        same = isinstance(responses, dict) and set(responses) == set(out["scores"])
        order = list(responses) if same else list(out["scores"])
        try:
            out["best-to-worst"] = sorted(order, key=lambda n: -out["scores"][n])
        except TypeError:
            pass  # non-numeric scores: validate_item reports them
    for key in ("category", "domain"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip().lower()
    return out


def _normalize_responses(responses):
    """Returns (responses as a dict, names in order if they were given as a list else None)."""
    if not isinstance(responses, list):
        return responses, None
    if len(responses) > MAX_RESPONSES:  # also keeps the generated names within a..z
        raise ItemError(f"responses: {len(responses)} given; need {MIN_RESPONSES} to {MAX_RESPONSES}")
    if all(isinstance(r, str) for r in responses):
        names = [chr(ord("a") + i) for i in range(len(responses))]
        return dict(zip(names, responses)), names
    result = {}
    for i, r in enumerate(responses):
        if not isinstance(r, dict):
            raise ItemError(f"responses[{i}]: expected a string or an object, got {type(r).__name__}")
        name = r.get("name", r.get("id", chr(ord("a") + i)))
        text = next((r[k] for k in ("text", "content", "response") if k in r), _MISSING)
        if text is _MISSING:
            raise ItemError(f"responses[{i}]: no text (expected a 'text', 'content' or 'response' field)")
        if str(name) in result:
            raise ItemError(f"responses[{i}]: duplicate response name {name!r}")
        result[str(name)] = text
    return result, list(result)


# ---------------------------------------------------------------------------- validation


def _nonempty_str(raw: dict, key: str) -> str:
    value = raw.get(key, _MISSING)
    if value is _MISSING:
        raise ItemError(f"{key}: missing")
    if not isinstance(value, str) or not value.strip():
        raise ItemError(f"{key}: must be a non-empty string, got {value!r:.60}")
    return value


def validate_item(raw: dict) -> BenchItem:
    """Map field names (`normalize_fields`), check one raw item and build a BenchItem.

    Raises ItemError whose message starts with the offending field, e.g. "scores.b: must be an integer 1..5".
    """
    raw = normalize_fields(raw)
    item_id = _nonempty_str(raw, "id")
    category = _nonempty_str(raw, "category")
    if category not in CATEGORIES:
        raise ItemError(f"category: {category!r} is not one of {', '.join(CATEGORIES)}")
    domain = _nonempty_str(raw, "domain")
    if domain not in DOMAINS:
        raise ItemError(f"domain: {domain!r} is not one of {', '.join(DOMAINS)}")
    principle = _nonempty_str(raw, "principle")
    prompt = _nonempty_str(raw, "prompt")

    responses = raw.get("responses", _MISSING)
    if responses is _MISSING:
        raise ItemError("responses: missing")
    if not isinstance(responses, dict):
        raise ItemError(f"responses: must be an object of name -> text, got {type(responses).__name__}")
    if not MIN_RESPONSES <= len(responses) <= MAX_RESPONSES:
        raise ItemError(f"responses: {len(responses)} given; need {MIN_RESPONSES} to {MAX_RESPONSES}")
    for name, text in responses.items():
        if not isinstance(text, str) or not text.strip():
            raise ItemError(f"responses.{name}: must be a non-empty string")

    scores = raw.get("scores", _MISSING)
    if scores is _MISSING:
        raise ItemError("scores: missing")
    if not isinstance(scores, dict):
        raise ItemError(f"scores: must be an object of name -> 1..5, got {type(scores).__name__}")
    if set(scores) != set(responses):
        raise ItemError(
            f"scores: keys {sorted(scores)} do not match the responses {sorted(responses)}"
        )
    lo, hi = SCORE_RANGE
    for name, s in scores.items():
        if isinstance(s, bool) or not isinstance(s, int) or not lo <= s <= hi:
            raise ItemError(f"scores.{name}: must be an integer {lo}..{hi}, got {s!r}")

    ranking = raw.get("best-to-worst", _MISSING)
    if ranking is _MISSING:
        raise ItemError("best-to-worst: missing")
    if (not isinstance(ranking, list) or not all(isinstance(n, str) for n in ranking)
            or sorted(ranking) != sorted(responses)):
        raise ItemError(f"best-to-worst: {ranking!r} is not a permutation of the responses {sorted(responses)}")
    for upper, lower in zip(ranking, ranking[1:]):
        if scores[upper] < scores[lower]:
            raise ItemError(
                f"best-to-worst: {upper!r} (score {scores[upper]}) is ranked above "
                f"{lower!r} (score {scores[lower]}); scores must not increase along the ranking"
            )

    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ItemError(f"tags: must be a list of strings, got {tags!r}")
    rationale = raw.get("rationale", "")
    if not isinstance(rationale, str):
        raise ItemError(f"rationale: must be a string, got {type(rationale).__name__}")
    check = raw.get("check")
    if check is not None:
        from ra_lite.bench import checks

        try:
            checks.validate(check)
        except checks.CheckError as e:
            raise ItemError(f"check: {e}") from None
        derived, _ = checks.derive(check, responses)
        if derived != scores:
            raise ItemError(f"scores: {scores} do not follow the item's check rule, which gives "
                            f"{derived}")
    return BenchItem(item_id, category, domain, principle, prompt, dict(responses), dict(scores),
                     list(ranking), list(tags), rationale, check)


# ---------------------------------------------------------------------------- loading


def parse_jsonl(text: str | bytes, source: str) -> LoadResult:
    """Validate every line; bad lines become LineProblems and the rest still load. Bytes are
    split first, so a line that is not UTF-8 is that line's problem."""
    stem = Path(source.rsplit(":", 1)[-1]).stem or "item"  # "owner/name:file.jsonl" -> "file"
    items, problems, seen = [], [], {}
    lines = text.split(b"\n") if isinstance(text, bytes) else text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = loads_request_json(line, "the line")
        except RaLiteError as e:
            problems.append(LineProblem(lineno, f"invalid JSON: {e.problem}"))
            continue
        try:
            if isinstance(raw, dict) and not any(k in raw for k in ("id", *FIELD_ALIASES["id"])):
                raw = {**raw, "id": f"{stem}-L{lineno}"}
            item = validate_item(raw)
        except ItemError as e:
            problems.append(LineProblem(lineno, str(e)))
            continue
        if item.id in seen:
            problems.append(LineProblem(lineno, f"id: {item.id!r} already used on line {seen[item.id]}"))
            continue
        seen[item.id] = lineno
        items.append(item)
    if not items:
        detail = "; ".join(f"line {p.line}: {p.message}" for p in problems[:3]) or "the file has no items"
        raise RaLiteError(
            f"no benchmark item in {source} could be loaded ({detail})",
            "give a JSONL file with one mini-RABench item per line (see ra_lite/bench/data/README.md)",
        )
    return LoadResult(source, items, problems)


def _bundled_text(name: str) -> str:
    return files("ra_lite.bench.data").joinpath(name).read_text(encoding="utf-8")


def quick_ids() -> list[str]:
    """The ids of the bundled quick subset, in file order."""
    return list(json.loads(_bundled_text(QUICK_FILE))["ids"])


def _hub_download(repo_id: str, filename: str) -> str:
    from huggingface_hub import hf_hub_download  # optional path: import only when a Hub id is given

    from ra_lite.hub import hub_errors

    # hf_hub_download itself honours HF_HUB_OFFLINE: it then only looks in the local cache.
    with hub_errors(repo_id, file=filename, kind="dataset",
                    retry="or pass a local .jsonl path", offline_alternative="pass a local .jsonl path"):
        return hf_hub_download(repo_id, filename, repo_type="dataset")


def load_items(source: str) -> LoadResult:
    """Load items from "quick", "full", a local .jsonl path, or a Hub dataset id.

    A Hub source is "owner/name" (file `mini_rabench.jsonl`) or "owner/name:path/in/repo.jsonl".
    Raises RaLiteError for a source that cannot be read or a file in which no item loads.
    """
    if source in ("quick", "full"):
        result = parse_jsonl(_bundled_text(FULL_FILE), f"bundled:{FULL_FILE}")
        if source == "full":
            return result
        by_id = {item.id: item for item in result.items}
        missing = [i for i in quick_ids() if i not in by_id]
        if missing:
            raise RaLiteError(f"quick.json names items not in the bundled data: {missing}",
                              "reinstall ra-lite; the package data is inconsistent")
        return LoadResult("bundled:quick", [by_id[i] for i in quick_ids()], result.problems)

    path = Path(source).expanduser()
    # An existing file, or anything ending in .jsonl without a "repo:" prefix, is a local path;
    # "owner/name" and "owner/name:file.jsonl" are Hub dataset ids.
    if path.exists() or (path.suffix == ".jsonl" and ":" not in source):
        if not path.is_file():
            raise RaLiteError(f"benchmark file {source} does not exist",
                              "give an existing .jsonl path, 'quick', 'full', or a Hub dataset id")
        return parse_jsonl(path.read_bytes(), str(path))

    repo_id, _, filename = source.partition(":")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise RaLiteError(f"cannot tell what benchmark source {source!r} is",
                          "use 'quick', 'full', a local .jsonl path, or a Hub dataset id like owner/name")
    local = _hub_download(repo_id, filename or DEFAULT_HUB_FILENAME)
    return parse_jsonl(Path(local).read_text(encoding="utf-8"), f"{repo_id}:{filename or DEFAULT_HUB_FILENAME}")


# ---------------------------------------------------------------------------- statistics and the bundled check


@dataclass(frozen=True)
class DataStats:
    n_items: int
    per_category: dict[str, int]
    per_domain: dict[str, int]
    per_cell: dict[str, dict[str, int]]  # per_cell[category][domain]
    per_tag: dict[str, int]
    response_counts: dict[int, int]  # number of responses -> items
    best_positions: dict[int, int]  # 1-based position of the (first) top-scored response -> items
    items_with_ties: int  # items whose ground truth has at least one tied pair

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def compute_stats(items: list[BenchItem]) -> DataStats:
    best_positions = Counter()
    for it in items:
        top = max(it.scores.values())
        best_positions[1 + next(i for i, n in enumerate(it.responses) if it.scores[n] == top)] += 1
    return DataStats(
        n_items=len(items),
        per_category={c: sum(it.category == c for it in items) for c in CATEGORIES},
        per_domain={d: sum(it.domain == d for it in items) for d in DOMAINS},
        per_cell={c: {d: sum(it.category == c and it.domain == d for it in items) for d in DOMAINS}
                  for c in CATEGORIES},
        per_tag=dict(sorted(Counter(t for it in items for t in it.tags).items())),
        response_counts=dict(sorted(Counter(len(it.responses) for it in items).items())),
        best_positions=dict(sorted(best_positions.items())),
        items_with_ties=sum(len(set(it.scores.values())) < len(it.scores) for it in items),
    )


def check_bundled(path: str | None = None) -> tuple[DataStats, list[str]]:
    """Validate a data file (default: the bundled one) under the bundled rules.

    Returns the statistics and a list of failures (empty when the file passes). Beyond the
    per-item rules: no malformed line, 3..8 responses, at least two distinct scores per item,
    >= 120 items, >= 6 per (category, domain) cell; and for the bundled file, quick.json's ids
    exist, cover every cell and include >= 2 adversarial items.
    """
    if path and not Path(path).is_file():
        raise RaLiteError(f"benchmark file {path} does not exist", "give the path of a .jsonl file to check")
    text = Path(path).read_text(encoding="utf-8") if path else _bundled_text(FULL_FILE)
    result = parse_jsonl(text, path or f"bundled:{FULL_FILE}")
    failures = [f"line {p.line}: {p.message}" for p in result.problems]
    for it in result.items:
        if not BUNDLED_MIN_RESPONSES <= len(it.responses) <= BUNDLED_MAX_RESPONSES:
            failures.append(f"{it.id}: {len(it.responses)} responses, bundled items need "
                            f"{BUNDLED_MIN_RESPONSES}..{BUNDLED_MAX_RESPONSES}")
        if len(set(it.scores.values())) < 2:
            failures.append(f"{it.id}: all responses have the same score, so the item ranks nothing")
    stats = compute_stats(result.items)
    if stats.n_items < BUNDLED_MIN_ITEMS:
        failures.append(f"{stats.n_items} items, need >= {BUNDLED_MIN_ITEMS}")
    for c, row in stats.per_cell.items():
        for d, n in row.items():
            if n < BUNDLED_MIN_PER_CELL:
                failures.append(f"cell {c}/{d}: {n} items, need >= {BUNDLED_MIN_PER_CELL}")
    if path is None:
        by_id = {it.id: it for it in result.items}
        ids = quick_ids()
        quick = [by_id[i] for i in ids if i in by_id]
        failures += [f"quick.json: unknown id {i!r}" for i in ids if i not in by_id]
        if len(set(ids)) != len(ids):
            failures.append("quick.json: duplicate ids")
        cells = {(it.category, it.domain) for it in quick}
        failures += [f"quick.json: no item for cell {c}/{d}" for c in CATEGORIES for d in DOMAINS
                     if (c, d) not in cells]
        if sum("adversarial" in it.tags for it in quick) < QUICK_MIN_ADVERSARIAL:
            failures.append(f"quick.json: fewer than {QUICK_MIN_ADVERSARIAL} adversarial items")
    return stats, failures


def format_stats(stats: DataStats) -> str:
    """The data card's statistics as Markdown."""
    lines = [f"Items: **{stats.n_items}**; items with at least one ground-truth tie: {stats.items_with_ties}.", ""]
    lines += ["| category \\ domain | " + " | ".join(DOMAINS) + " | total |",
              "|---|" + "---:|" * (len(DOMAINS) + 1)]
    for c in CATEGORIES:
        row = stats.per_cell[c]
        lines.append(f"| {c} | " + " | ".join(str(row[d]) for d in DOMAINS) + f" | {stats.per_category[c]} |")
    lines.append("| **total** | " + " | ".join(str(stats.per_domain[d]) for d in DOMAINS) + f" | {stats.n_items} |")
    lines += ["", "| tag | items |", "|---|---:|"] + [f"| {t} | {n} |" for t, n in stats.per_tag.items()]
    lines += ["", "| responses per item | items |", "|---:|---:|"]
    lines += [f"| {k} | {n} |" for k, n in stats.response_counts.items()]
    lines += ["", "| position of the (first) top-scored response | items |", "|---:|---:|"]
    lines += [f"| {k} | {n} |" for k, n in stats.best_positions.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ra_lite.bench.dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--check", nargs="?", const="", metavar="FILE",
                        help="validate FILE (default: the bundled data) and print its statistics")
    args = parser.parse_args(argv)
    if args.check is None:
        parser.print_help()
        return 2
    try:
        stats, failures = check_bundled(args.check or None)
    except RaLiteError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 1
    print(format_stats(stats))
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    print(f"\n{'FAILED' if failures else 'OK'}: {len(failures)} problem(s)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
