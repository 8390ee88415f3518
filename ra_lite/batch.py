"""Judge a JSONL file of requests into a JSONL file of results, resumably.

Each result is appended and fsync'd as soon as it exists, so a killed run loses at most the
judgment in flight; rerunning skips the ids already in the output. A torn last line (a kill
mid-write) is cut off before appending. A request that is itself invalid gets an error record
and the batch goes on.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest, loads_request_json


@dataclass
class BatchItem:
    id: str
    line: int
    request: JudgeRequest | None
    error: str | None = None


@dataclass
class BatchSummary:
    total: int
    judged_now: int
    already_done: int
    errors: int
    mean_scores: dict[str, float] = field(default_factory=dict)   # response name -> mean score
    counts: dict[str, int] = field(default_factory=dict)          # response name -> judgments
    mean_seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def below(self, threshold: float, target: str | None) -> dict[str, float]:
        """Response names whose mean score is under `threshold` (only `target` when given)."""
        if target is not None and target not in self.mean_scores:
            raise RaLiteError(f"no judged response is named {target!r}",
                              f"--target must be one of: {', '.join(sorted(self.mean_scores))}")
        names = [target] if target is not None else list(self.mean_scores)
        return {n: self.mean_scores[n] for n in names if self.mean_scores[n] < threshold}


def read_batch_input(path: Path) -> list[BatchItem]:
    if not path.exists():
        raise RaLiteError(f"batch input {path} does not exist", "check the path")
    items: list[BatchItem] = []
    first_line_of: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            item = _parse_line(line, number)
            if item.id in first_line_of:
                raise RaLiteError(f"{path}: id {item.id!r} appears on lines "
                                  f"{first_line_of[item.id]} and {number}",
                                  "give every request a unique \"id\" (resuming relies on it)")
            first_line_of[item.id] = number
            items.append(item)
    if not items:
        raise RaLiteError(f"batch input {path} has no requests",
                          'write one JSON request per line: {"id", "principle", "prompt", '
                          '"responses"}')
    return items


def _parse_line(line: str, number: int) -> BatchItem:
    fallback_id = f"line-{number}"
    try:
        obj = loads_request_json(line, f"line {number}")
    except RaLiteError as e:
        return BatchItem(fallback_id, number, None, e.one_line())
    item_id = obj.get("id", fallback_id) if isinstance(obj, dict) else fallback_id
    item_id = str(item_id)
    try:
        return BatchItem(item_id, number, JudgeRequest.from_dict(obj))
    except RaLiteError as e:
        return BatchItem(item_id, number, None, f"line {number}: {e.one_line()}")


def read_done(output: Path) -> dict[str, dict]:
    """Records already in the output, by id; cuts a torn final line so appends stay valid."""
    if not output.exists():
        return {}
    data = output.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        print(f"ra-lite: {output} ends in an incomplete line (an interrupted run); "
              "discarding it and judging that request again", file=sys.stderr)
        with open(output, "r+b") as f:
            f.truncate(good_end)
            os.fsync(f.fileno())
    done: dict[str, dict] = {}
    for number, line in enumerate(data[:good_end].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            done[str(record["id"])] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            raise RaLiteError(f"{output} line {number} is not a ra-lite batch record",
                              "pass a new --output path, or the output of an earlier run of "
                              "this batch") from None
    return done


class _OutputLock:
    """One writer per output file: two runs appending to it would interleave records."""

    def __init__(self, output: Path):
        self.output = output
        self.handle = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-writer is on the user
            return self
        self.handle = open(self.output.with_name(self.output.name + ".lock"), "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise RaLiteError(f"another ra-lite batch is writing {self.output}",
                              "wait for it to finish, or write to another --output") from None
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()
            Path(self.handle.name).unlink(missing_ok=True)


def run_batch(judge, input_path: str | Path, output_path: str | Path, options=None,
              progress: Callable[[int, int], object] | None = None,
              parallel: int | str = "auto") -> BatchSummary:
    """Judge every request in input_path not yet in output_path; return the whole file's summary.

    parallel: judgments decoded at once (see Judge.judge_many); records are then written in
    the order they finish, each with its id, so resuming works the same.

    progress(total, already_done) makes a reporter (e.g. ra_lite.progress.ProgressReporter),
    told update(record) after each record is written, in any order, and close() at the end.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise RaLiteError("the output would overwrite the input", "pass another --output path")
    items = read_batch_input(input_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with _OutputLock(output_path):
        done = read_done(output_path)
        pending = [item for item in items if item.id not in done]
        judged_now = 0
        slots = _slots(judge, parallel, options) if pending else 1
        reporter = progress(len(items), len(items) - len(pending)) if progress else None
        try:
            with open(output_path, "a", encoding="utf-8") as out:
                for item, record in _judged(judge, pending, options, slots):
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                    done[item.id] = record
                    judged_now += 1
                    if reporter is not None:
                        reporter.update(record)
        finally:
            if reporter is not None:
                reporter.close()
    wanted = {item.id for item in items}
    return summarize([r for i, r in done.items() if i in wanted], judged_now, len(items))


def _slots(judge, parallel, options) -> int:
    from ra_lite.parallel_judge import resolve_parallel

    return resolve_parallel(judge, parallel, options)


def _judged(judge, pending: list[BatchItem], options, slots: int):
    """(item, record) for every pending item: in input order with one slot, else as finished."""
    if slots <= 1:
        for item in pending:
            yield item, _judge_item(judge, item, options)
        return
    from ra_lite.parallel_judge import judge_each

    valid = [item for item in pending if item.request is not None]
    for item in pending:
        if item.request is None:
            yield item, {"id": item.id, "error": item.error}
    for outcome in judge_each(judge, [item.request for item in valid], options, slots):
        item = valid[outcome.index]
        if outcome.error is None:
            yield item, {"id": item.id, **outcome.judgment.to_dict()}
        elif isinstance(outcome.error, RaLiteError):   # as _judge_item: record it, go on
            yield item, {"id": item.id, "error": outcome.error.one_line()}
        else:
            raise outcome.error


def _judge_item(judge, item: BatchItem, options) -> dict:
    if item.request is None:
        return {"id": item.id, "error": item.error}
    try:
        judgment = judge.judge_request(item.request, options)
    except RaLiteError as e:   # e.g. this request does not fit the context: record, go on
        return {"id": item.id, "error": e.one_line()}
    return {"id": item.id, **judgment.to_dict()}


def summarize(records: list[dict], judged_now: int, total: int) -> BatchSummary:
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    seconds, timed, errors = 0.0, 0, 0
    for record in records:
        if "error" in record:
            errors += 1
            continue
        for name, score in record["results"]["scores"].items():
            sums[name] = sums.get(name, 0.0) + score
            counts[name] = counts.get(name, 0) + 1
        total_s = record.get("ra_lite", {}).get("timings", {}).get("total_s")
        if total_s is not None:
            seconds += total_s
            timed += 1
    return BatchSummary(
        total=total, judged_now=judged_now, already_done=len(records) - judged_now,
        errors=errors, mean_scores={n: sums[n] / counts[n] for n in sums}, counts=counts,
        mean_seconds=seconds / timed if timed else None)
