"""Parallel judging on real llama.cpp models (embedded SmolLM2 and a random-weight GGUF).

Batching changes llama.cpp's float sums, so these assert validity and consistency, not equality
with the sequential path.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ra_lite.errors import RaLiteError
from ra_lite.judge import JudgeOptions
from ra_lite.request import JudgeRequest
from tests.support.kill import kill_after_records

pytestmark = pytest.mark.slow


def requests_for(p: int, tag: str) -> list[JudgeRequest]:
    """p + 1 requests (one waits for a free slot) with 2..10 uniquely named responses."""
    out = []
    for i in range(p + 1):
        n = 2 + (i + p) % 9
        out.append(JudgeRequest.create("Prefer the correct, concise answer.", f"What is {i}+{p}?",
                                       {f"{tag}{i}_{k}": f"{i + p + k - 1}" for k in range(n)}))
    return out


def assert_valid(judgment, request: JudgeRequest):
    names = set(request.responses)
    assert set(judgment.scores) == names and sorted(judgment.ranking) == sorted(names)
    assert all(1 <= s <= 5 for s in judgment.scores.values())
    ranked = [judgment.scores[n] for n in judgment.ranking]
    assert ranked == sorted(ranked, reverse=True)          # ranking consistent with the scores


@pytest.mark.parametrize("model, slot_counts", [("smollm_judge", (1, 2, 3, 5, 8)),
                                                ("random_judge", (1, 2, 4, 7))])
def test_every_parallel_judgment_is_valid_and_in_request_order(model, slot_counts, request):
    judge = request.getfixturevalue(model)
    options = JudgeOptions(think_budget=4, temperature=0.7, seed=3)
    for p in slot_counts:
        requests = requests_for(p, f"p{p}r")
        results = list(judge.judge_many(requests, options, parallel=p))
        assert len(results) == len(requests)
        for judgment, req in zip(results, requests):
            assert_valid(judgment, req)                    # names mapped back, in order


def test_greedy_result_does_not_depend_on_the_slot(random_judge):
    options = JudgeOptions(think_budget=6, temperature=0)
    target = JudgeRequest.create("Prefer correct answers.", "2+2?", {"a": "4", "b": "5", "c": "22"})
    fill = [JudgeRequest.create("Be brief.", f"Say {i}", {"x": "ok", "y": str(i)}) for i in range(3)]
    outputs = set()
    for pos in range(4):                       # the target lands in slot 0, 1, 2, 3
        results = list(random_judge.judge_many(fill[:pos] + [target] + fill[pos:], options,
                                               parallel=4))
        outputs.add((results[pos].raw_text, tuple(results[pos].think_token_ids)))
    assert len(outputs) == 1


def test_parallel_beyond_the_kv_memory_names_the_limit(smollm_judge, monkeypatch):
    options = JudgeOptions(think_budget=1500)
    monkeypatch.setattr("ra_lite.runtime.devices.available_memory_bytes", lambda: 1 << 40)
    with pytest.raises(RaLiteError, match=r"at most 2 slots fit") as caught:
        smollm_judge.resolve_slots(8, options)
    assert "--parallel 2 or less" in caught.value.fix
    assert smollm_judge.resolve_slots("auto", options) == 2
    queue = smollm_judge.queue(2, options)
    assert queue.slots == 2


def test_a_request_too_long_fails_alone(random_judge):
    options = JudgeOptions(think_budget=4)
    huge = JudgeRequest.create("p", "q", {"a": "word " * 5000, "b": "x"})
    ok = JudgeRequest.create("p", "q", {"a": "1", "b": "2"})
    outcomes = {o.index: o for o in random_judge.judge_each([ok, huge, ok], options, 2)}
    assert outcomes[0].error is None and outcomes[2].error is None
    assert isinstance(outcomes[1].error, RaLiteError)


def write_requests(path, n):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"r{i}", "principle": "Prefer correct answers.",
                                "prompt": f"{i}+1?", "responses": {"cand": str(i + 1),
                                                                  "base": str(i)}}) + "\n")
    return path


def test_parallel_batch_killed_midway_resumes_without_loss(tmp_path):
    src, out = write_requests(tmp_path / "in.jsonl", 12), tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "ra_lite", "batch", str(src), "-o", str(out),
               "--think-budget", "24", "--n-ctx", "2048", "--parallel", "4", "--no-progress"]
    before = kill_after_records(command, out, 2, timeout=180)
    assert 2 <= before < 12, "the kill should land mid-batch"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert sorted(ids) == sorted(f"r{i}" for i in range(12)) and len(ids) == 12
    assert all(set(r["results"]["scores"]) == {"cand", "base"} for r in records)
    assert f"{12 - before} judged now" in done.stdout


def test_aborting_a_queue_with_its_failure_reports_that_failure_to_every_ticket(smollm_judge):
    """The server's recovery path: a queue that failed ends its tickets with the failure
    (answered 500), not as cancelled (which would look like clients that left)."""
    from ra_lite.judge_queue import Ticket

    outcomes = {}
    tickets = [Ticket(r, JudgeOptions(think_budget=50),
                      lambda judgment, error, i=i: outcomes.setdefault(i, error))
               for i, r in enumerate(requests_for(1, "abort"))]

    class Source:
        def take(self, block):
            return tickets.pop(0) if tickets else None

    queue = smollm_judge.queue(2, JudgeOptions(think_budget=50))
    rounds = queue.rounds(Source())
    try:
        next(rounds)                              # both admitted, prompts being evaluated
        failure = RuntimeError("llama.cpp went away")
        queue.abort(failure)
    finally:
        rounds.close()
    assert outcomes == {0: failure, 1: failure}
