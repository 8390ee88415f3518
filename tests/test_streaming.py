"""Streaming reasoning (API callback, `judge --stream`) and batch progress; stdout stays clean."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

import ra_lite.cli as cli
from ra_lite.batch import run_batch
from ra_lite.judge import Judge
from ra_lite.progress import ProgressReporter, generated_tokens
from ra_lite.testing import FakeBackend, ascending_answer

FLAGS = ["judge", "-p", "Be brief.", "--prompt", "Hi?", "-r", "a=Hello.", "-r", "b=Hello there."]
THOUGHT = "first I compare the two answers, then I score them"


def answer_with_reasoning(names):
    return ascending_answer(names).replace("fake reasoning", THOUGHT)


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(cli, "load_judge", lambda **_: Judge(
        FakeBackend(fallback=answer_with_reasoning)))


def invoke(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_api_callback_receives_the_reasoning_piece_by_piece():
    pieces = []
    judge = Judge(FakeBackend(fallback=answer_with_reasoning))
    result = judge.judge("P", "Q", {"a": "1", "b": "2"}, think_budget=99,
                         on_reasoning=lambda text, n, budget: pieces.append((text, n, budget)))
    assert "".join(text for text, _, _ in pieces) == result.reasoning == THOUGHT
    assert [n for _, n, _ in pieces] == list(range(1, len(pieces) + 1))
    assert {budget for _, _, budget in pieces} == {99} and len(pieces) > 1


def test_json_with_stream_keeps_stdout_parseable_and_reasoning_on_stderr(fake):
    result = invoke(*FLAGS, "--json", "--stream")
    assert result.exit_code == 0
    obj = json.loads(result.stdout)                      # nothing else on stdout
    assert obj["thoughts"] == THOUGHT
    assert THOUGHT in result.stderr and "reasoning tokens" in result.stderr


def test_no_stream_and_the_non_terminal_default_write_nothing_to_stderr(fake):
    for flags in ([], ["--no-stream"]):
        result = invoke(*FLAGS, "--json", *flags)
        assert json.loads(result.stdout)["thoughts"] == THOUGHT
        assert THOUGHT not in result.stderr


def test_streamed_table_still_prints_the_reasoning_when_stdout_is_not_a_terminal(fake):
    result = invoke(*FLAGS, "--stream")
    assert "rank" in result.stdout and THOUGHT in result.stdout   # e.g. redirected to a file
    assert THOUGHT in result.stderr and "rank" not in result.stderr


def test_progress_reporter_counts_judgments_and_tokens_in_any_order(capsys):
    records = [{"id": "b", "ra_lite": {"tokens": {"think": 30, "answer": 10}}},
               {"id": "x", "error": "bad line"},
               {"id": "a", "ra_lite": {"tokens": {"think": 5, "answer": 5}}}]
    with ProgressReporter(total=5, done=2, enabled=True) as reporter:
        for record in records:
            reporter.update(record)
    assert reporter.judgments == 3 and reporter.tokens == 50
    err = capsys.readouterr().err
    assert "5/5" in err and "judgments/s" in err and "tok/s" in err


def test_generated_tokens_of_a_judgment_and_of_its_record():
    judgment = Judge(FakeBackend(fallback=ascending_answer)).judge("P", "Q", {"a": "1", "b": "2"})
    judgment.tokens.think, judgment.tokens.answer = 7, 3
    assert generated_tokens(judgment) == 10 == generated_tokens(judgment.to_dict())
    assert generated_tokens(None) == 0


def test_batch_reports_each_written_record_and_closes(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "principle": "P", "prompt": "Q",
                                       "responses": {"a": "1", "b": "2"}}) + "\n"
                           for i in range(4)))
    out = tmp_path / "out.jsonl"
    run_batch(Judge(FakeBackend(fallback=ascending_answer)), src, out)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:1]) + "\n")          # as if killed after the first

    class Recorder:
        def __init__(self, total, done):
            self.started, self.ids, self.closed = (total, done), [], False

        def update(self, record):
            self.ids.append(record["id"])

        def close(self):
            self.closed = True

    made = []
    run_batch(Judge(FakeBackend(fallback=ascending_answer)), src, out,
              progress=lambda total, done: made.append(Recorder(total, done)) or made[-1])
    assert made[0].started == (4, 1) and made[0].ids == ["r1", "r2", "r3"] and made[0].closed


@pytest.mark.slow
def test_api_callback_on_the_embedded_model(smollm_judge):
    pieces = []
    result = smollm_judge.judge("Prefer the shorter answer.", "What is 2+2?",
                                {"a": "4", "b": "It is four."}, think_budget=24,
                                on_reasoning=lambda text, n, budget: pieces.append((text, n)))
    assert [n for _, n in pieces] == list(range(1, len(result.think_token_ids) + 1))
    assert "".join(text for text, _ in pieces).strip().startswith(result.reasoning)


@pytest.mark.slow
def test_real_subprocess_json_stream_on_the_embedded_model(tmp_path):
    """The real CLI in a subprocess: stdout is only the JSON, stderr carries the reasoning."""
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "ra_lite", "judge", "--json", "--stream", "--think-budget", "24",
         "--n-ctx", "2048", *FLAGS[1:]],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["thoughts"] and obj["thoughts"] in proc.stderr
    assert f"/24 reasoning tokens" in proc.stderr
