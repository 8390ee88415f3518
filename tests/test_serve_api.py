"""The HTTP API: official shapes, limits, auth and every kind of bad request (fake backend),
and one round trip on the real embedded model."""

import json
import socket

import pytest

from ra_lite.errors import RaLiteError
from ra_lite.judge import Judge
from ra_lite.serve.server import RewardServer, ServerConfig
from ra_lite.testing import FakeBackend, ascending_answer
from tests.support.api_client import OfficialApiClient, post_json, raw

REQUEST = {"principle": "Be brief.", "prompt": "Hi?", "responses": {"short": "Hi.", "long": "Hello there!"}}


@pytest.fixture
def make_server():
    servers = []

    def make(backend=None, **config):
        judge = Judge(backend or FakeBackend(fallback=ascending_answer), model_name="fake-model")
        server = RewardServer(judge, ServerConfig(port=0, **config)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown(timeout=10)


def test_health_has_the_official_fields_and_model_info(make_server):
    server = make_server()
    status, body, _ = raw(server.url, "GET", "/health")
    assert status == 200 and body["status"] == "healthy" and body["service"] == "RewardAnything API"
    assert body["model"] == "fake-model" and body["queue"]["capacity"] == 64
    assert server.url.startswith("http://127.0.0.1:")        # loopback unless asked otherwise


def test_single_request_round_trips_with_real_names(make_server):
    client = OfficialApiClient(make_server().url)
    result = client.judge("Be brief.", "Hi?", {"short": "Hi.", "long": "Hello there!"})
    assert set(result["scores"]) == {"short", "long"} and sorted(result["ranking"]) == ["long", "short"]
    assert result["reasoning"] == "fake reasoning"
    assert result["scores"][result["ranking"][0]] == 5


def test_mask_responses_false_is_accepted_and_names_are_still_real(make_server):
    result = OfficialApiClient(make_server().url).judge(**REQUEST, mask_responses=False)
    assert set(result["scores"]) == {"short", "long"}


def test_batch_results_come_in_request_order(make_server):
    requests = [{"principle": "P", "prompt": f"Q{i}", "responses": {f"r{i}-{k}": str(k) for k in range(1 + i % 4)}}
                for i in range(12)]
    results = OfficialApiClient(make_server().url).judge_batch(requests)
    assert [sorted(r["scores"]) for r in results] == [sorted(q["responses"]) for q in requests]


@pytest.mark.parametrize("body, status, detail", [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"principle": "P", "prompt": "Q"}).encode(), 400, "no responses"),
    (json.dumps({"principle": 3, "prompt": "Q", "responses": {"a": "x"}}).encode(), 400, "principle must be a string"),
    (json.dumps({"principle": "P", "prompt": "Q", "responses": {"a": 1}}).encode(), 400, "not a string"),
    (json.dumps({"principle": "P", "prompt": "Q", "responses": "a"}).encode(), 400, "object or a list"),
    (json.dumps({"principle": "P", "prompt": "Q", "responses": {}}).encode(), 400, "no responses to judge"),
    (json.dumps({**REQUEST, "mask_responses": "yes"}).encode(), 400, "mask_responses"),
    (b'{"principle": "P", "prompt": "Q", "responses": {"a": "x", "a": "y"}}', 400, "twice"),
])
def test_bad_single_requests_are_400_with_a_reason(make_server, body, status, detail):
    code, answer, _ = raw(make_server().url, "POST", "/api/rewardanything", body,
                          {"Content-Type": "application/json"})
    assert code == status and detail in answer["detail"]


def test_bad_batches(make_server):
    server = make_server(max_batch=3)
    assert post_json(server.url, "/api/rewardanything_batch", REQUEST)[0] == 400     # not a list
    code, body, _ = post_json(server.url, "/api/rewardanything_batch", [])
    assert code == 400 and body["detail"] == "No requests provided"
    code, body, _ = post_json(server.url, "/api/rewardanything_batch", [REQUEST] * 4)
    assert code == 422 and "limit of 3" in body["detail"]
    code, body, _ = post_json(server.url, "/api/rewardanything_batch",
                              [REQUEST, {"principle": "P", "prompt": "", "responses": {"a": "x"}}])
    assert code == 400 and body["detail"].startswith("request 1: the prompt is empty")


def test_size_and_count_limits(make_server):
    server = make_server(max_request_bytes=2000, max_responses=3)
    big = {**REQUEST, "responses": {"a": "x" * 3000}}
    code, body, headers = post_json(server.url, "/api/rewardanything", big)
    assert code == 413 and "limit of 2000" in body["detail"] and headers.get("Connection") == "close"
    many = {**REQUEST, "responses": {f"r{i}": "x" for i in range(4)}}
    code, body, _ = post_json(server.url, "/api/rewardanything", many)
    assert code == 422 and "4 responses" in body["detail"] and "limit of 3" in body["detail"]
    assert raw(server.url, "POST", "/api/rewardanything", None, {})[0] == 400    # empty body
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:   # no Content-Length
        conn.sendall(b"POST /api/rewardanything HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 411 ")


def test_api_key_is_required_when_set(make_server):
    server = make_server(api_key="s3cret")
    assert post_json(server.url, "/api/rewardanything", REQUEST)[0] == 401
    code, body, headers = post_json(server.url, "/api/rewardanything", REQUEST,
                                    {"Authorization": "Bearer wrong"})
    assert code == 401 and "API key" in body["detail"] and headers["WWW-Authenticate"] == "Bearer"
    assert post_json(server.url, "/api/rewardanything", REQUEST, {"Authorization": "s3cret"})[0] == 401
    assert OfficialApiClient(server.url, api_key="s3cret").judge(**REQUEST)["scores"]
    assert raw(server.url, "GET", "/health")[0] == 200    # liveness probes need no key


def test_unknown_paths_and_methods(make_server):
    url = make_server().url
    assert raw(url, "GET", "/nope")[:2] == (404, {"detail": "Not Found"})
    assert raw(url, "POST", "/nope", b"{}")[0] == 404
    assert raw(url, "GET", "/api/rewardanything")[0] == 405
    assert raw(url, "DELETE", "/health")[0] == 405


def test_model_errors_become_400_and_bugs_500(make_server):
    class Refusing(FakeBackend):
        def generate(self, chat, options, forcing=None):
            if "too long" in chat.messages[1]["content"]:
                raise RaLiteError("the request needs 9000 tokens", "raise --n-ctx")
            raise KeyError("a bug")

    server = make_server(Refusing())
    code, body, _ = post_json(server.url, "/api/rewardanything", {**REQUEST, "prompt": "too long"})
    assert code == 400 and body["detail"] == "the request needs 9000 tokens — raise --n-ctx"
    code, body, _ = post_json(server.url, "/api/rewardanything", REQUEST)
    assert code == 500 and "KeyError" in body["detail"]
    assert raw(server.url, "GET", "/health")[0] == 200      # the worker survived both


@pytest.mark.slow
def test_real_model_round_trip(smollm_judge):
    """The embedded model behind the server: valid judgments under the caller's names."""
    from dataclasses import replace

    judge = Judge(smollm_judge.backend, replace(smollm_judge.options, think_budget=8),
                  model_name=smollm_judge.model_name)
    server = RewardServer(judge, ServerConfig(port=0)).start()
    try:
        client = OfficialApiClient(server.url, timeout=120)
        single = client.judge("Prefer correct answers.", "2+2?", {"four": "4", "five": "5"})
        assert sorted(single["ranking"]) == ["five", "four"]
        batch = client.judge_batch([REQUEST, {"principle": "P", "prompt": "Q", "responses": {"x": "1", "y": "2", "z": "3"}}])
        assert [sorted(b["scores"]) for b in batch] == [["long", "short"], ["x", "y", "z"]]
        for b in batch:
            assert all(b["scores"][a] >= b["scores"][c] for a, c in zip(b["ranking"], b["ranking"][1:]))
    finally:
        assert server.shutdown(timeout=60)


def test_serve_command_builds_the_configured_server(monkeypatch):
    from click.testing import CliRunner

    import ra_lite.cli as cli
    import ra_lite.serve.cli as serve_cli

    seen = {}
    monkeypatch.setattr(cli, "load_judge", lambda **settings: seen.update(settings) or
                        Judge(FakeBackend(fallback=ascending_answer)))
    monkeypatch.setattr(serve_cli, "run_until_signal", lambda server: seen.update(
        config=server.config, url=server.url) or server.shutdown(timeout=5))
    monkeypatch.setenv("RA_LITE_API_KEY", "from-env")
    result = CliRunner().invoke(cli.main, ["serve", "x.gguf", "--port", "0", "--max-responses", "7",
                                           "--queue-size", "5", "--think-budget", "9"])
    assert result.exit_code == 0, result.output
    assert seen["model"] == "x.gguf" and seen["think_budget"] == 9
    config = seen["config"]
    assert (config.max_responses, config.queue_size, config.api_key, config.parallel) == (7, 5, "from-env", 1)
    assert seen["url"].startswith("http://127.0.0.1:")
    for args, message in ((["serve", "a.gguf", "--model", "b.gguf"], "two models"),
                          (["serve", "--workers", "2", "--parallel", "3"],
                           "--parallel 3 and --workers 2 together"),
                          (["serve", "--queue-size", "0"], "queue-size must be at least 1")):
        bad = CliRunner().invoke(cli.main, args)
        assert bad.exit_code == 2 and message in bad.output, bad.output
