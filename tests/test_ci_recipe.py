"""The CI recipe users copy (examples/ci): parsed, and its shell steps run in order, twice, in a
temporary checkout with the embedded model; the second run is answered from the judgment cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import WHEEL_CACHE

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "ci" / "github-actions.yml"


def workflow():
    return yaml.safe_load(RECIPE.read_text())


def test_the_workflow_caches_what_it_must_and_publishes_its_reports():
    doc = workflow()
    steps = doc["jobs"]["score"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    cached = [s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/cache")]
    assert cached == ["~/.cache/ra-lite/wheels", "~/.cache/huggingface",
                      "~/.cache/ra-lite/judgment-cache"]
    assert {"actions/upload-artifact", "mikepenz/action-junit-report"} <= set(uses)
    judge_step = next(s for s in steps if s.get("name") == "Judge and gate")
    for flag in ("--fail-under", "--target", "--summary", "--junit"):
        assert flag in judge_step["run"]
    install = next(s for s in steps if s.get("name") == "Install ra-lite")
    # The README's install command, run from the ra-lite checkout.
    assert "scripts/install.sh" in install["run"]
    gitlab = yaml.safe_load((ROOT / "examples" / "ci" / "gitlab-ci.yml").read_text())
    assert any("ra-lite batch" in line for line in gitlab["ra-lite-scoring"]["script"])
    assert gitlab["ra-lite-scoring"]["artifacts"]["reports"]["junit"] == "ra-lite-junit.xml"


@pytest.mark.slow
def test_the_recipes_shell_steps_run_in_order_and_the_second_run_is_cached(tmp_path):
    doc = workflow()
    run_steps = [s for s in doc["jobs"]["score"]["steps"] if "run" in s]
    assert [s["name"] for s in run_steps][:3] == ["Install ra-lite", "Pull the model",
                                                   "Judge and gate"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    work = tmp_path / "repo"
    (work / "eval").mkdir(parents=True)
    requests = [{"id": f"q{i}", "principle": "Prefer the correct answer.",
                 "prompt": f"What is {i}+1?",
                 "responses": {"candidate": str(i + 1), "baseline": str(i + 2)}}
                for i in range(3)]
    (work / doc["env"]["REQUESTS"]).write_text("".join(json.dumps(r) + "\n" for r in requests))
    (work / ".ra-lite-src").symlink_to(ROOT)
    step_summary = tmp_path / "step-summary.md"
    env = {**os.environ, **{k: str(v) for k, v in doc["env"].items()},
           "FAIL_UNDER": "1", "RA_LITE_ARGS": "--think-budget 8 --parallel 1",
           "GITHUB_STEP_SUMMARY": str(step_summary), "RA_LITE_WHEEL_CACHE": str(WHEEL_CACHE),
           "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "PYTHON": str(venv / "bin" / "python3"), "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)        # the venv's own ra-lite, as installed by the recipe

    def run_all():
        outputs = []
        for step in run_steps:
            done = subprocess.run(["bash", "-eo", "pipefail", "-c", step["run"]], cwd=work,
                                  env=env, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, (step["name"], done.stdout, done.stderr)
            outputs.append(done)
        return outputs

    first = run_all()
    results = [json.loads(l) for l in (work / "ra-lite-results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in results) == ["q0", "q1", "q2"]
    assert not any(r["ra_lite"]["cached"] for r in results)
    suite = ET.parse(work / "ra-lite-junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert "ra-lite batch" in step_summary.read_text() and \
        "Gate" in (work / "ra-lite-summary.md").read_text()
    assert "PASS" in first[2].stdout + first[2].stderr
    # A fresh checkout of the same commit: no results file, the judgment cache restored.
    for name in ("ra-lite-results.jsonl", "ra-lite-summary.md", "ra-lite-junit.xml"):
        (work / name).unlink()
    second = run_all()
    results = [json.loads(l) for l in (work / "ra-lite-results.jsonl").read_text().splitlines()]
    assert len(results) == 3 and all(r["ra_lite"]["cached"] for r in results)
    assert "3 from the judgment cache" in second[2].stdout
    assert "model SmolLM2" not in second[2].stderr          # never loaded
    assert "hit rate 100%" in (work / "ra-lite-summary.md").read_text()
    assert "entries" in second[3].stdout                   # `ra-lite cache stats`
