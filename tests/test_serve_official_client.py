"""The official `rewardanything.Client` (1.0.1, vendored unchanged in tests/fixtures/official_client)
against `ra-lite serve`: same endpoints, fields and auth header, no changes on the client side."""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from ra_lite.judge import Judge
from ra_lite.serve.server import RewardServer, ServerConfig
from ra_lite.testing import FakeBackend, ascending_answer

import pydantic  # noqa: F401  (test extras; the official client imports both)
import requests

OFFICIAL = Path(__file__).parent / "fixtures" / "official_client"


@pytest.fixture(scope="module")
def official():
    """Import client.py/models.py as the package `rewardanything` without its __init__ (which
    pulls in torch and transformers for local inference)."""
    saved = {k: v for k, v in sys.modules.items() if k == "rewardanything" or k.startswith("rewardanything.")}
    package = types.ModuleType("rewardanything")
    package.__path__ = [str(OFFICIAL)]
    sys.modules["rewardanything"] = package
    modules = {}
    for name in ("models", "client"):
        spec = importlib.util.spec_from_file_location(f"rewardanything.{name}", OFFICIAL / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules[name] = module
    yield modules["client"]
    for key in [k for k in sys.modules if k == "rewardanything" or k.startswith("rewardanything.")]:
        del sys.modules[key]
    sys.modules.update(saved)


@pytest.fixture
def server():
    judge = Judge(FakeBackend(fallback=ascending_answer), model_name="fake")
    server = RewardServer(judge, ServerConfig(port=0, api_key="k-123")).start()
    yield server
    server.shutdown(timeout=10)


def test_official_client_judges_batches_and_checks_health(official, server):
    client = official.Client(server.url, api_key="k-123", timeout=30, max_retries=0)
    assert client.health_check()
    result = client.judge(principle="Be brief.", prompt="Hi?",
                          responses={"terse": "Hi.", "chatty": "Hello, how are you today?"})
    assert set(result.scores) == {"terse", "chatty"} and sorted(result.ranking) == ["chatty", "terse"]
    assert result.reasoning == "fake reasoning" and result.scores[result.ranking[0]] == 5

    requests = [{"principle": "P", "prompt": f"Q{i}", "responses": {f"n{i}-{k}": "t" for k in range(i + 1)}}
                for i in range(5)]
    batch = client.judge_batch(requests)
    assert [sorted(r.scores) for r in batch] == [sorted(q["responses"]) for q in requests]
    assert all(sorted(r.ranking) == sorted(r.scores) for r in batch)


def test_official_client_sees_http_errors(official, server):
    wrong_key = official.Client(server.url, api_key="nope", max_retries=0)
    with pytest.raises(requests.HTTPError) as info:
        wrong_key.judge("P", "Q", {"a": "x"})
    assert info.value.response.status_code == 401
    client = official.Client(server.url, api_key="k-123", max_retries=0)
    with pytest.raises(requests.HTTPError) as info:
        client.judge("P", "", {"a": "x"})
    assert info.value.response.status_code == 400 and "prompt is empty" in info.value.response.json()["detail"]
