"""What `ra-lite batch` tells a CI system: a Markdown summary and a JUnit XML report.

The summary (`--summary FILE.md`, `-` for stdout, and appended to `$GITHUB_STEP_SUMMARY` when
that is set) has per-response mean scores and score distributions, the gate's verdict, the
lowest-scored items and the judgment cache's hit rate. The JUnit report (`--junit FILE.xml`)
has one test case per request: failed when the request could not be judged, or, when a
`--fail-under` gate fails, when the request's own score for a failing response is under the
threshold (the items that pulled that mean under); every other case passes, with its scores in
its properties. Both are written atomically, and a path that cannot be written is named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ra_lite.atomic_files import write_atomic, write_error
from ra_lite.errors import RaLiteError

LOWEST_SHOWN = 5


@dataclass
class GateResult:
    """A --fail-under gate over the whole output: which checked responses' means are under."""

    threshold: float
    target: str | None
    means: dict[str, float]              # the checked responses' means
    failing: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failing

    def line(self) -> str:
        if self.passed:
            return f"PASS: every checked mean score is at least {self.threshold:g}"
        listed = ", ".join(f"{n} {s:.2f}" for n, s in self.failing.items())
        return f"FAIL: mean score under {self.threshold:g}: {listed}"


def check_gate(summary, threshold: float, target: str | None) -> GateResult:
    failing = summary.below(threshold, target)
    names = [target] if target is not None else list(summary.mean_scores)
    return GateResult(threshold, target, {n: summary.mean_scores[n] for n in names}, failing)


def _scores(record: dict) -> dict[str, int] | None:
    results = record.get("results")
    return results.get("scores") if isinstance(results, dict) else None


def summary_markdown(summary, records: list[dict], gate: GateResult | None, title: str) -> str:
    lines = [f"## ra-lite batch: {title}", ""]
    judged = summary.total - summary.errors
    lines.append(f"{summary.total} requests: {judged} judged, {summary.errors} could not be "
                 f"judged; {summary.judged_now} judged in this run, {summary.cached} of them "
                 f"from the judgment cache" + (f" (hit rate {100 * summary.cache_hit_rate:.0f}%)"
                                               if summary.cache_hit_rate is not None else "") +
                 f", {summary.already_done} already in the output.")
    lines.append("")
    if gate is not None:
        verdict = "✅ passed" if gate.passed else "❌ failed"
        lines += [f"**Gate** (`--fail-under {gate.threshold:g}`"
                  f"{f' --target {gate.target}' if gate.target else ''}): {verdict}", ""]
    names = sorted(summary.mean_scores, key=lambda n: -summary.mean_scores[n])
    if names:
        lines += ["| response | mean score | judged | 1 | 2 | 3 | 4 | 5 |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in names:
            counts = [0] * 5
            for record in records:
                score = (_scores(record) or {}).get(name)
                if isinstance(score, int) and 1 <= score <= 5:
                    counts[score - 1] += 1
            mark = " ❌" if gate is not None and name in gate.failing else ""
            lines.append(f"| {_cell(name)}{mark} | {summary.mean_scores[name]:.2f} | "
                         f"{summary.counts[name]} | " + " | ".join(map(str, counts)) + " |")
        lines.append("")
    focus = [gate.target] if gate is not None and gate.target else names
    lowest = sorted(((score, str(r.get("id")), name) for r in records
                     for name, score in (_scores(r) or {}).items() if name in focus),
                    key=lambda row: (row[0], row[1]))[:LOWEST_SHOWN]
    if lowest:
        lines += [f"Lowest-scored items{f' for {gate.target}' if gate and gate.target else ''}:",
                  "", "| id | response | score |", "|---|---|---|"]
        lines += [f"| {_cell(i)} | {_cell(n)} | {s} |" for s, i, n in lowest]
        lines.append("")
    errors = [r for r in records if "error" in r]
    if errors:
        lines += ["Requests that could not be judged:", ""]
        lines += [f"- `{_cell(str(r.get('id')))}`: {_cell(str(r['error']))}"
                  for r in errors[:20]]
        if len(errors) > 20:
            lines.append(f"- … and {len(errors) - 20} more (see the output file)")
        lines.append("")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def junit_xml(records: list[dict], gate: GateResult | None, suite: str) -> str:
    cases, failures, errors = [], 0, 0
    failing = gate.failing if gate is not None else {}
    for record in records:
        name = quoteattr(str(record.get("id")))
        seconds = ((record.get("ra_lite") or {}).get("timings") or {}).get("total_s") or 0.0
        head = f'  <testcase classname={quoteattr(suite)} name={name} time="{seconds:.3f}">'
        if "error" in record:
            errors += 1
            cases.append(f'{head}\n    <error message={quoteattr(str(record["error"]))} '
                         f'type="not judged"/>\n  </testcase>')
            continue
        scores = _scores(record) or {}
        under = {n: s for n, s in scores.items() if n in failing and s < gate.threshold}
        properties = "".join(f'\n      <property name={quoteattr("score." + n)} value="{s}"/>'
                             for n, s in scores.items())
        body = f"\n    <properties>{properties}\n    </properties>"
        if under:
            failures += 1
            detail = ", ".join(f"{n} scored {s} (mean {failing[n]:.2f} < {gate.threshold:g})"
                               for n, s in under.items())
            body += (f"\n    <failure message={quoteattr(detail)} type=\"fail-under\">"
                     f"{escape(detail)}</failure>")
        cases.append(f"{head}{body}\n  </testcase>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites><testsuite name={quoteattr(suite)} tests="{len(records)}" '
            f'failures="{failures}" errors="{errors}">\n' + "\n".join(cases) +
            "\n</testsuite></testsuites>\n")


def write_text(path: Path, text: str) -> None:
    """Write a report whole (temp file + rename), naming the path when it cannot be."""
    path = Path(path)
    try:
        write_atomic(path, text.encode("utf-8"))
    except OSError as e:
        raise write_error(path, e) from None


def append_text(path: Path, text: str) -> None:
    """Append (the GitHub step summary is one file every step appends to)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise write_error(Path(path), e) from None




def inspect_scores_jsonl(records: list[dict], target: str | None) -> str:
    """Inspect AI's precomputed-scores JSONL (`inspect_ai.scorer.precomputed_scores(FILE)`) from
    batch records: per request id, `value` = the target response's (expected score - 1) / 4,
    `explanation` = the reasoning, `metadata` = scores, ranking, expected scores. The target is
    --target, or the only response of a one-response request; error records are left out (Inspect
    then scores those samples as unscored)."""
    lines = []
    for record in records:
        if "error" in record:
            continue
        scores = record["results"]["scores"]
        name = target if target is not None else (next(iter(scores)) if len(scores) == 1
                                                  else None)
        if name is None or name not in scores:
            raise RaLiteError(f"request {record['id']!r} has responses {sorted(scores)}: which "
                              "one is the sample's output?", "pass --target NAME")
        details = record.get("ra_lite") or {}
        expected = (details.get("expected_scores") or {}).get(name)
        value = ((expected if expected is not None else scores[name]) - 1) / 4
        lines.append(json.dumps({
            "id": record["id"], "value": value, "explanation": record.get("thoughts", ""),
            "metadata": {"score": scores[name], "expected_score": expected, "scores": scores,
                         "ranking": record["results"]["best-to-worst"]}}, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)
