"""Judge a JSONL file of requests into a JSONL file of results, resumably.

Each result is appended and fsync'd as soon as it exists, so a killed run loses at most the
judgment in flight; rerunning skips the ids already in the output. A torn last line (a kill
mid-write, or a disk that filled up) is cut off before appending. A request that is itself
invalid gets an error record and the batch goes on; the summary counts it, and the CLI exits
with its own status for "some requests could not be judged".

With a judgment cache (ra_lite.judgment_cache), requests judged before under the same model and
settings are answered from it first; the model is loaded only if something is left to judge.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ra_lite.atomic_files import write_error
from ra_lite.errors import RaLiteError
from ra_lite.judge_queue import JudgeQueue
from ra_lite.request import JudgeRequest, check_unicode, loads_request_json


@dataclass
class BatchItem:
    id: str
    line: int
    request: JudgeRequest | None
    error: str | None = None


@dataclass
class BatchSummary:
    total: int
    judged_now: int                 # records written by this run (cached ones included)
    already_done: int
    errors: int                     # records of requests that could not be judged
    mean_scores: dict[str, float] = field(default_factory=dict)   # response name -> mean score
    counts: dict[str, int] = field(default_factory=dict)          # response name -> judgments
    mean_seconds: float | None = None
    cached: int = 0                 # of judged_now: answered from the judgment cache
    cache_looked_up: int = 0        # requests this run looked up in the cache (0: no cache)

    @property
    def cache_hit_rate(self) -> float | None:
        return self.cached / self.cache_looked_up if self.cache_looked_up else None

    def to_dict(self) -> dict:
        return {**asdict(self), "cache_hit_rate": self.cache_hit_rate}

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
    # Bytes, line by line: a line that is not UTF-8 is that line's error, not the whole file's.
    with open(path, "rb") as f:
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


def _parse_line(line: bytes, number: int) -> BatchItem:
    fallback_id = f"line-{number}"
    try:
        obj = loads_request_json(line, f"line {number}")
    except RaLiteError as e:
        return BatchItem(fallback_id, number, None, e.one_line())
    item_id = obj.get("id", fallback_id) if isinstance(obj, dict) else fallback_id
    item_id = str(item_id)
    try:
        check_unicode(item_id, f"line {number}: the id")
    except RaLiteError as e:         # the record could not be written with this id
        return BatchItem(fallback_id, number, None, e.one_line())
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


def record_of(item_id: str, judgment, error: RaLiteError | None) -> dict:
    """A batch output record: the judgment in the official shape, or the request's error."""
    if error is not None:
        return {"id": item_id, "error": error.one_line()}
    return {"id": item_id, **judgment.to_dict()}


def local_records(judge, parallel, cache, options, items: list[BatchItem]):
    """(item, record, cached) per item as each finishes: the judge queue on this machine."""
    queue = JudgeQueue(judge, parallel, cache, options)
    for outcome in queue.each([item.request for item in items], options):
        judgment = outcome.judgment
        yield (items[outcome.index], record_of(items[outcome.index].id, judgment, outcome.error),
               bool(judgment is not None and judgment.cached))


def run_batch(judge, input_path: str | Path, output_path: str | Path, options=None,
              progress: Callable[[int, int], object] | None = None,
              parallel: int | str = "auto", cache=None, engine=None) -> BatchSummary:
    """Judge every request in input_path not yet in output_path; return the whole file's summary.

    judge: a Judge, or a function that returns one: called only when something is left to judge
    after the cache (so a fully cached run never loads the model). options: the generation
    settings (default: the judge's own; required with a judge function).
    parallel: judgments decoded at once (see Judge.judge_many); records are then written in
    the order they finish, each with its id, so resuming works the same.
    cache: a ra_lite.judgment_cache.ModelCache for the judge's model, or None.
    engine: what judges the pending valid requests, engine(items, options) -> (item, record,
    cached) as each finishes (default: the judge queue on this machine; ra_lite.on_ray's
    RayEngine judges them on a Ray cluster). This function stays the single writer either way.

    progress(total, already_done) makes a reporter (e.g. ra_lite.progress.ProgressReporter),
    told update(record) after each record is written, in any order, and close() at the end.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    if input_path.resolve() == output_path.resolve():
        raise RaLiteError("the output would overwrite the input", "pass another --output path")
    items = read_batch_input(input_path)
    if options is None and engine is None:
        options = (judge() if callable(judge) and not hasattr(judge, "backend") else judge).options
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(output_path.parent, e) from None
    with _OutputLock(output_path):
        done = read_done(output_path)
        pending = [item for item in items if item.id not in done]
        written = cached = 0
        reporter = progress(len(items), len(items) - len(pending)) if progress else None
        try:
            with _RecordWriter(output_path) as out:
                def write(item, record):
                    nonlocal written
                    out.append(record)
                    done[item.id] = record
                    written += 1
                    if reporter is not None:
                        reporter.update(record)

                for item in pending:
                    if item.request is None:
                        write(item, {"id": item.id, "error": item.error})
                valid = [item for item in pending if item.request is not None]
                records = engine(valid, options) if engine is not None else \
                    local_records(judge, parallel, cache, options, valid)
                for item, record, was_cached in records:
                    cached += was_cached
                    write(item, record)
        finally:
            if reporter is not None:
                reporter.close()
    looked_up = len(valid) if cache is not None else 0
    wanted = {item.id for item in items}
    summary = summarize([r for i, r in done.items() if i in wanted], written, len(items))
    summary.cached, summary.cache_looked_up = cached, looked_up
    return summary


class _RecordWriter:
    """Appends one JSON line per record with unbuffered writes and an fsync each, so a record
    is on disk before the next judgment starts, and a failed write (a full disk) raises at once
    with the path named, leaving at most a torn last line that the next run cuts off."""

    def __init__(self, path: Path):
        self.path = path
        self.file = None

    def __enter__(self) -> "_RecordWriter":
        try:
            self.file = open(self.path, "ab", buffering=0)
        except OSError as e:
            raise write_error(self.path, e) from None
        return self

    def append(self, record: dict) -> None:
        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        try:
            while data:
                data = data[self.file.write(data):]
            os.fsync(self.file.fileno())
        except OSError as e:
            raise write_error(self.path, e, kept="the records before this one are kept; a "
                                                 "rerun resumes after them") from None

    def __exit__(self, *exc) -> None:
        self.file.close()


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
