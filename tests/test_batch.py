"""Batch judging: resumable, gated, and loss-free (fake backend; one real kill-and-resume)."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import ra_lite.cli as cli
from ra_lite.batch import run_batch
from ra_lite.errors import RaLiteError
from ra_lite.judge import Judge
from ra_lite.testing import FakeBackend, ascending_answer
from tests.support.kill import kill_after_records


def write_requests(path, n, bad_lines=()):
    lines = []
    for i in range(n):
        if i in bad_lines:
            lines.append('{"id": "r%d", "principle": "P", "prompt": "Q", "responses": {}}' % i)
        else:
            lines.append(json.dumps({"id": f"r{i}", "principle": "Be brief.", "prompt": f"Q{i}",
                                     "responses": {"cand": "short", "base": "much longer answer"}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def fake_judge():
    return Judge(FakeBackend(fallback=ascending_answer))


def test_batch_judges_everything_once_and_resumes(tmp_path):
    src, out = write_requests(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    first = run_batch(fake_judge(), src, out)
    assert first.judged_now == 5 and first.errors == 0
    again = run_batch(fake_judge(), src, out)
    assert again.judged_now == 0 and again.already_done == 5
    assert [r["id"] for r in records(out)] == [f"r{i}" for i in range(5)]


def test_resume_after_partial_output_and_torn_line(tmp_path):
    src, out = write_requests(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    run_batch(fake_judge(), src, out)
    kept = out.read_text().splitlines()[:2]
    out.write_text("\n".join(kept) + "\n" + kept[0][:17])        # a kill mid-write
    summary = run_batch(fake_judge(), src, out)
    assert summary.judged_now == 2
    assert sorted(r["id"] for r in records(out)) == ["r0", "r1", "r2", "r3"]


def test_invalid_requests_are_recorded_and_the_rest_still_run(tmp_path):
    src, out = write_requests(tmp_path / "in.jsonl", 4, bad_lines={1}), tmp_path / "out.jsonl"
    with open(src, "a") as f:
        f.write("not json at all\n")
    summary = run_batch(fake_judge(), src, out)
    assert summary.errors == 2 and summary.judged_now == 5
    errors = {r["id"]: r["error"] for r in records(out) if "error" in r}
    assert "no responses" in errors["r1"] and "line 5" in errors["line-5"]


def test_duplicate_ids_are_refused_up_front(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "x", "principle": "P", "prompt": "Q", "responses": {"a": "1"}}\n' * 2)
    with pytest.raises(RaLiteError, match="lines 1 and 2"):
        run_batch(fake_judge(), src, tmp_path / "out.jsonl")


def test_output_may_not_be_the_input(tmp_path):
    src = write_requests(tmp_path / "in.jsonl", 1)
    with pytest.raises(RaLiteError, match="overwrite the input"):
        run_batch(fake_judge(), src, src)


def test_fail_under_gates_on_a_named_response(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "load_judge", lambda **_: fake_judge())
    src, out = write_requests(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    runner = CliRunner()
    # ascending_answer gives model-1 a 5 and the rest a 1; with 2 responses model-1 is "base".
    ok = runner.invoke(cli.main, ["batch", str(src), "-o", str(out), "--fail-under", "4",
                                  "--target", "base", "--no-progress"])
    assert ok.exit_code == 0 and "PASS" in ok.output
    bad = runner.invoke(cli.main, ["batch", str(src), "-o", str(out), "--fail-under", "4",
                                   "--target", "cand", "--no-progress"])
    assert bad.exit_code == 1 and "cand 1.00" in bad.output
    unknown = runner.invoke(cli.main, ["batch", str(src), "-o", str(out), "--fail-under", "4",
                                       "--target", "nobody", "--no-progress"])
    assert unknown.exit_code == 2 and "no judged response is named 'nobody'" in unknown.output


@pytest.mark.slow
def test_real_batch_killed_midway_resumes_without_loss(tmp_path):
    src, out = write_requests(tmp_path / "in.jsonl", 8), tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "ra_lite", "batch", str(src), "-o", str(out),
               "--think-budget", "24", "--no-progress"]
    before = kill_after_records(command, out, 2, timeout=120)
    assert 2 <= before < 8, "the kill should land mid-batch"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in records(out)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(8)) and len(ids) == 8
    assert all(set(r["results"]["scores"]) == {"cand", "base"} for r in records(out))
    assert f"{8 - before} judged now" in done.stdout
