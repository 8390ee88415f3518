"""`ra-lite batch` in CI: exit codes that tell the truth, the Markdown summary and JUnit report
(parsed), a full disk, and inputs that once escaped the error convention."""

from __future__ import annotations

import errno
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

import ra_lite.cli as cli
from ra_lite.judge import Judge
from ra_lite.testing import FakeBackend, ascending_answer


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(cli, "load_judge",
                        lambda **s: Judge(FakeBackend(fallback=ascending_answer)))


def write_batch(path, n, extra_lines=()):
    lines = [json.dumps({"id": f"r{i}", "principle": "Be brief.", "prompt": f"Q{i}",
                         "responses": {"cand": "a", "base": "bb"}}) for i in range(n)]
    path.write_text("\n".join(lines + list(extra_lines)) + "\n")
    return path


def batch(*args, env=None):
    return CliRunner().invoke(cli.main, ["batch", *map(str, args), "--no-progress"], env=env)


# ascending_answer gives model-1 a 5, the rest 1; with two responses model-1 is "base".
@pytest.mark.parametrize("extra, gate, code", [
    ((), ["--fail-under", "3", "--target", "base"], 0),
    ((), ["--fail-under", "3", "--target", "cand"], 1),
    (("not json",), [], 3),
    (('{"id": "x", "principle": "P", "prompt": "Q", "responses": {}}',),
     ["--fail-under", "3", "--target", "cand"], 3),
    ((), ["--fail-under", "3", "--target", "nobody"], 2),
])
def test_exit_codes(tmp_path, fake, extra, gate, code):
    src = write_batch(tmp_path / "in.jsonl", 3, extra)
    result = batch(src, "-o", tmp_path / "out.jsonl", *gate)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 3:
        assert "INCOMPLETE: 1 of 4 requests could not be judged" in result.output
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4   # nothing lost


def test_usage_errors_exit_2(tmp_path, fake):
    assert batch(tmp_path / "missing.jsonl", "-o", tmp_path / "o.jsonl").exit_code == 2
    src = write_batch(tmp_path / "in.jsonl", 1)
    assert batch(src, "-o", tmp_path / "o.jsonl", "--parallel", "zero").exit_code == 2
    assert batch(src, "-o", tmp_path / "o.jsonl", "--orders", "0").exit_code == 2


def test_summary_and_junit_reports(tmp_path, fake):
    src = write_batch(tmp_path / "in.jsonl", 5, ["not json"])
    step_summary = tmp_path / "step.md"
    step_summary.write_text("earlier step\n")
    result = batch(src, "-o", tmp_path / "out.jsonl", "--fail-under", "3", "--target", "cand",
                   "--summary", tmp_path / "summary.md", "--junit", tmp_path / "junit.xml",
                   env={"GITHUB_STEP_SUMMARY": str(step_summary)})
    assert result.exit_code == 3, result.output
    text = (tmp_path / "summary.md").read_text()
    assert "| cand ❌ | 1.00 | 5 | 5 | 0 | 0 | 0 | 0 |" in text
    assert "| base | 5.00 | 5 | 0 | 0 | 0 | 0 | 5 |" in text
    assert "❌ failed" in text and "Lowest-scored items for cand" in text
    assert "Requests that could not be judged" in text and "line-6" in text
    assert "hit rate 0%" in text
    assert step_summary.read_text() == "earlier step\n" + text        # appended, not replaced
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert suite.get("tests") == "6" and suite.get("failures") == "5" and suite.get("errors") == "1"
    assert cases["line-6"].find("error") is not None
    failure = cases["r0"].find("failure")
    assert "cand scored 1 (mean 1.00 < 3)" in failure.get("message")
    props = {p.get("name"): p.get("value") for p in cases["r0"].iter("property")}
    assert props == {"score.cand": "1", "score.base": "5"}
    # A passing gate fails no case.
    passing = batch(src, "-o", tmp_path / "out.jsonl", "--fail-under", "3", "--target", "base",
                    "--junit", tmp_path / "pass.xml", "--summary", "-")
    suite = ET.parse(tmp_path / "pass.xml").getroot().find("testsuite")
    assert suite.get("failures") == "0" and "✅ passed" in passing.output


def test_a_full_disk_is_one_line_and_the_rerun_loses_nothing(tmp_path, fake, monkeypatch):
    import ra_lite.batch as batch_module

    src = write_batch(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"
    real_fsync, calls = batch_module.os.fsync, {"n": 0}

    def full_disk(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(batch_module.os, "fsync", full_disk)
    result = batch(src, "-o", out, "--no-cache")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: cannot write {out}: No space left on device (errno 28)" in result.output
    assert "free disk space" in result.output and "resumes" in result.output
    monkeypatch.setattr(batch_module.os, "fsync", real_fsync)
    again = batch(src, "-o", out, "--no-cache")
    assert again.exit_code == 0, again.output
    ids = [json.loads(l)["id"] for l in out.read_text().splitlines()]
    assert sorted(ids) == [f"r{i}" for i in range(6)]


def test_an_unwritable_report_path_is_named(tmp_path, fake):
    src = write_batch(tmp_path / "in.jsonl", 1)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = batch(src, "-o", tmp_path / "out.jsonl", "--junit", blocker / "junit.xml")
    assert result.exit_code == 2 and f"cannot write {blocker}" in result.output


SURROGATE = '{"principle": "P", "prompt": "Q", "responses": {"a": "ok", "b": "bad \\ud800 here"}}'


def test_an_unpaired_surrogate_is_a_one_line_error(tmp_path, fake):
    (tmp_path / "r.json").write_text(SURROGATE)
    result = CliRunner().invoke(cli.main, ["judge", str(tmp_path / "r.json")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: response 'b' contains an unpaired UTF-16 surrogate "
                                    "(\\ud800) at character 4")
    src = tmp_path / "in.jsonl"
    src.write_text(SURROGATE.replace("{", '{"id": "s", ', 1) + "\n")
    result = batch(src, "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 3
    assert "unpaired UTF-16 surrogate" in json.loads((tmp_path / "out.jsonl").read_text())["error"]


def test_the_server_answers_400_to_an_unpaired_surrogate():
    from ra_lite.serve.server import RewardServer, ServerConfig
    from tests.support.api_client import raw

    judge = Judge(FakeBackend(fallback=ascending_answer))
    with RewardServer(judge, ServerConfig(port=0)) as server:
        status, body, _ = raw(server.url, "POST", "/api/rewardanything", SURROGATE.encode(),
                              {"Content-Type": "application/json"})
    assert status == 400 and "unpaired UTF-16 surrogate" in body["detail"]
