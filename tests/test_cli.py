"""The CLI, driven with a fake backend (and once with the real embedded model)."""

import json

import pytest
from click.testing import CliRunner

import ra_lite.cli as cli
from ra_lite.judge import Judge
from ra_lite.testing import FakeBackend, ascending_answer


@pytest.fixture
def fake(monkeypatch):
    backend = FakeBackend(fallback=ascending_answer)
    seen = {}

    def load_judge(**settings):
        seen.update(settings)
        return Judge(backend)

    monkeypatch.setattr(cli, "load_judge", load_judge)
    backend.settings = seen
    return backend


def invoke(*args, input=None):
    return CliRunner().invoke(cli.main, list(args), input=input, catch_exceptions=False)


FLAGS = ["--principle", "Be brief.", "--prompt", "Hi?", "-r", "a=Hello.", "-r", "b=Hello there, friend."]


def test_flags_print_a_ranking_table(fake):
    result = invoke("judge", *FLAGS)
    assert result.exit_code == 0, result.output
    assert "rank" in result.output and "fake reasoning" in result.output
    # The fake gives model-1 a 5; with two responses the seed-42 shuffle maps model-1 to "b".
    first_row = [l for l in result.output.splitlines() if l.startswith("1 ")][0]
    assert first_row.split()[1] == "b" and first_row.split()[2] == "5"


def test_json_output_has_the_official_shape_under_caller_names(fake):
    result = invoke("judge", *FLAGS, "--json")
    obj = json.loads(result.output)
    assert obj["results"] == {"scores": {"b": 5, "a": 1}, "best-to-worst": ["b", "a"]} or \
        obj["results"]["best-to-worst"] == ["b", "a"]
    assert obj["thoughts"] == "fake reasoning"
    assert set(obj["results"]["scores"]) == {"a", "b"}


def test_options_reach_the_loader(fake):
    invoke("judge", *FLAGS, "--no-think", "--seed", "9", "--n-gpu-layers", "0", "--model", "x.gguf")
    assert fake.settings["no_think"] is True and fake.settings["seed"] == 9
    assert fake.settings["n_gpu_layers"] == "0" and fake.settings["model"] == "x.gguf"


def test_request_from_stdin_file_and_jsonl(fake, tmp_path):
    request = {"principle": "P", "prompt": "Q", "responses": {"x": "1", "y": "2", "z": "3"}}
    assert json.loads(invoke("judge", "-", "--json", input=json.dumps(request)).output)["results"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(request, indent=2))
    assert invoke("judge", str(path), "--json").exit_code == 0
    lines = tmp_path / "r.jsonl"
    lines.write_text("\n".join(json.dumps(request) for _ in range(3)))
    out = invoke("judge", str(lines), "--json").output.strip().splitlines()
    assert len(out) == 3


def test_response_from_file(fake, tmp_path):
    (tmp_path / "long.txt").write_text("a long answer")
    invoke("judge", "-p", "P", "--prompt", "Q", "-r", f"x=@{tmp_path / 'long.txt'}", "-r", "y=no")
    chat, _ = fake.calls[-1]
    assert "a long answer" in chat.messages[1]["content"]


@pytest.mark.parametrize("args, stdin, problem", [
    (["judge", "--principle", "P", "--prompt", "Q"], None, "nothing to judge"),
    (["judge", "-p", "P", "--prompt", "Q", "-r", "a=1", "-r", "a=2"], None, "two responses are named 'a'"),
    (["judge", "-p", " ", "--prompt", "Q", "-r", "a=1"], None, "principle is empty"),
    (["judge", "-p", "P", "--prompt", "", "-r", "a=1"], None, "prompt is empty"),
    (["judge", "-p", "P", "--prompt", "Q", "-r", "novalue"], None, "NAME=TEXT"),
    (["judge", "-"], '{"principle": "P", "prompt": "Q", "responses": {"a": 1}}', "is a int, not a string"),
    (["judge", "-"], '{"principle": "P", "prompt": "Q", "responses": {}}', "no responses"),
    (["judge", "-"], '{"principle": "P", "prompt": "Q", "responses": {"a": "1", "a": "2"}}', "twice"),
    (["judge", "-"], '{"principle": "P", "prompt": "Q"', "not valid JSON"),
    (["judge", "-"], '{"prompt": "Q", "responses": {"a": "1"}}', "no principle"),
    (["judge", "-"], "", "empty"),
    (["judge", "missing.json"], None, "does not exist"),
])
def test_bad_input_is_one_clear_line_and_exit_2(fake, args, stdin, problem):
    result = invoke(*args, input=stdin)
    assert result.exit_code == 2
    assert problem in result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_model_file_problems_are_clear(tmp_path, embedded_path):
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(embedded_path.read_bytes()[:4096])
    cases = [(tmp_path / "nope.gguf", "does not exist"), (not_gguf, "not a GGUF file"),
             (truncated, "damaged GGUF"), (tmp_path, "is a directory")]
    for path, problem in cases:
        result = invoke("judge", *FLAGS, "--model", str(path))
        assert result.exit_code == 2 and problem in result.output, result.output
        assert "Traceback" not in result.output


def test_a_gguf_that_is_not_a_causal_lm_is_refused(tmp_path, embedded_path):
    from tests.support.random_gguf import write_random_gguf

    bert = write_random_gguf(tmp_path / "embedder.gguf", embedded_path, architecture="bert",
                             n_layers=1)
    result = invoke("judge", *FLAGS, "--model", str(bert))
    assert result.exit_code == 2 and "not a causal language model" in result.output


def test_info_describes_the_embedded_model():
    result = invoke("info", "--json")
    details = json.loads(result.output)
    assert details["architecture"] == "llama" and details["quant"] == "Q4_1"
    assert details["embedded_smoke_test_model"] is True
    assert details["context_length"] == 8192 and details["gpu_offload_supported"] in (True, False)


def test_help_lists_every_command():
    result = invoke("--help")
    for command in ("judge", "batch", "info", "convert", "quantize"):
        assert command in result.output


@pytest.mark.slow
def test_real_judgment_through_the_cli_on_the_embedded_model():
    result = CliRunner().invoke(cli.main, ["judge", *FLAGS, "--think-budget", "8", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert sorted(obj["results"]["best-to-worst"]) == ["a", "b"]
