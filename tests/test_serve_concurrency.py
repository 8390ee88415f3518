"""Many clients at once: every request answered with its own names, in order, one judgment at a
time, a full queue refused cleanly, and shutdown (in-process and by SIGTERM) finishing queued work."""

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ra_lite.judge import Judge
from ra_lite.serve.server import RewardServer, ServerConfig
from tests.support.api_client import SlowFake, post_json, raw, serve_subprocess, wait_for_line


def request_for(i: int) -> dict:
    """Distinct names per request, 1-5 responses, so a mixed-up answer cannot pass."""
    return {"principle": f"principle {i}", "prompt": f"prompt {i}",
            "responses": {f"req{i}-resp{k}": f"text {i}.{k}" for k in range(1 + i % 5)}}


def start(backend, **config) -> RewardServer:
    return RewardServer(Judge(backend), ServerConfig(port=0, **config)).start()


def test_sixty_concurrent_requests_each_get_their_own_answer():
    backend = SlowFake(delay=0.005)
    server = start(backend, queue_size=100)
    try:
        requests = [request_for(i) for i in range(60)]
        with ThreadPoolExecutor(max_workers=60) as pool:
            replies = list(pool.map(lambda r: post_json(server.url, "/api/rewardanything", r), requests))
        assert [code for code, _, _ in replies] == [200] * 60
        for request, (_, body, _) in zip(requests, replies):
            names = set(request["responses"])
            assert set(body["results"]["scores"]) == names
            assert set(body["results"]["best-to-worst"]) == names
            assert set(body["ra_lite"]["masked_to_real"].values()) == names
        assert backend.max_active == 1                       # queued, never interleaved
        assert len(backend.calls) == 60 and server.worker.completed == 60
    finally:
        assert server.shutdown(timeout=30)


def test_concurrent_batches_keep_request_order():
    server = start(SlowFake(delay=0.002), queue_size=100)
    try:
        batches = [[request_for(b * 10 + i) for i in range(8)] for b in range(12)]
        with ThreadPoolExecutor(max_workers=12) as pool:
            replies = list(pool.map(lambda b: post_json(server.url, "/api/rewardanything_batch", b), batches))
        for batch, (code, body, _) in zip(batches, replies):
            assert code == 200 and len(body) == len(batch)
            assert [set(r["results"]["scores"]) for r in body] == [set(q["responses"]) for q in batch]
    finally:
        server.shutdown(timeout=30)


def test_a_full_queue_answers_503_immediately_and_loses_nothing_accepted():
    backend = SlowFake(delay=0.3)
    server = start(backend, queue_size=2)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(post_json, server.url, "/api/rewardanything", request_for(i))
                       for i in range(8)]
            replies = [f.result() for f in futures]
        codes = sorted(code for code, _, _ in replies)
        accepted = codes.count(200)
        assert set(codes) == {200, 503} and 1 + 2 <= accepted < 8   # running + queued
        refused = next(body for code, body, _ in replies if code == 503)
        assert "queue is full" in refused["detail"]
        assert len(backend.calls) == accepted
    finally:
        server.shutdown(timeout=30)


def test_shutdown_finishes_queued_work_and_then_refuses():
    backend = SlowFake(delay=0.1)
    server = start(backend, queue_size=50)
    results = {}

    def send(i):
        results[i] = post_json(server.url, "/api/rewardanything", request_for(i))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while server.worker.pending + server.worker.completed < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.shutdown(timeout=30)
    for t in threads:
        t.join(10)
    assert sorted(results) == list(range(10))
    assert all(code == 200 for code, _, _ in results.values())
    assert server.worker.completed == 10
    with pytest.raises(OSError):
        raw(server.url, "GET", "/health", timeout=2)          # the port is closed


SERVE_WITH_FAKE = """
import ra_lite.cli as cli
from ra_lite.judge import Judge
from tests.support.api_client import SlowFake
cli.load_judge = lambda **settings: Judge(SlowFake(delay=0.15), model_name="slow-fake")
cli.main(["serve", "--port", "0", "--queue-size", "50"])
"""


def test_sigterm_drains_the_queue_before_exiting(tmp_path):
    """`ra-lite serve` in a subprocess (fake backend behind the real CLI and signal handling)."""
    with serve_subprocess(["-c", SERVE_WITH_FAKE], "serving slow-fake on ") as (proc, lines, url):
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, post_json(url, "/api/rewardanything", request_for(i)))) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:      # wait until all 8 are queued or done
            status, health, _ = raw(url, "GET", "/health")
            if health["queue"]["pending"] + health["queue"]["completed"] >= 8:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        wait_for_line(lines, "shutting down", 20)
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0
        assert sorted(results) == list(range(8))
        assert all(code == 200 and set(body["results"]["scores"]) == set(request_for(i)["responses"])
                   for i, (code, body, _) in results.items())
        wait_for_line(lines, "stopped (8 jobs done)", 5)


@pytest.mark.slow
def test_real_model_serialises_concurrent_requests(smollm_judge):
    from dataclasses import replace

    judge = Judge(smollm_judge.backend, replace(smollm_judge.options, think_budget=0))
    server = RewardServer(judge, ServerConfig(port=0)).start()
    try:
        requests = [request_for(i) for i in range(4)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            replies = list(pool.map(lambda r: post_json(server.url, "/api/rewardanything", r, timeout=300), requests))
        for request, (code, body, _) in zip(requests, replies):
            assert code == 200 and set(body["results"]["scores"]) == set(request["responses"])
    finally:
        server.shutdown(timeout=120)
