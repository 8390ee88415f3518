"""The server under real operations: clients that leave cancel their judgments, SIGTERM drains
within --drain-timeout, and `--parallel P` admits queued requests into P slots.

Most tests use a fake backend that stops between "decode steps" when cancelled, behind the real
judge queue (with P slots it runs P judgments at once, as on a remote server). The last test
runs `ra-lite serve --parallel 4` on the embedded model.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ra_lite.errors import RaLiteError
from ra_lite.judge import Judge
from ra_lite.runtime.decode import JudgmentCancelled
from ra_lite.serve.server import RewardServer, ServerConfig
from ra_lite.testing import FakeBackend, ascending_answer
from tests.support.api_client import SlowFake, post_json, raw, serve_subprocess, wait_for_line

STEP_S = 0.01


def request_for(i, label: str = "") -> dict:
    """Distinct names per request, 1-5 responses, so a mixed-up answer cannot pass."""
    return {"principle": f"principle {i}", "prompt": f"prompt {label or i}",
            "responses": {f"req{i}-resp{k}": f"text {i}.{k}" for k in range(1 + hash(str(i)) % 5)}}


def label_of(chat) -> str:
    return json.loads(chat.messages[1]["content"])["prompt"].removeprefix("prompt ")


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.01)


class SteppingFake(FakeBackend):
    """Judgments that take `steps_for(label)` steps of STEP_S and, like the local backend, check
    `cancelled` between steps. Records what it started, finished and stopped."""

    def __init__(self, steps_for=lambda label: 3):
        super().__init__(fallback=ascending_answer)
        self.steps_for = steps_for
        self.started: list[str] = []
        self.finished: list[str] = []
        self.stopped: dict[str, int] = {}      # label -> steps done when cancelled
        self.active: set[str] = set()           # labels running now
        self.max_active = 0                     # most running at once
        self.gate = threading.Event()           # labels starting with "gated" wait for it
        self.gate.set()
        self._lock = threading.Lock()

    def generate(self, chat, options, forcing=None, on_reasoning=None, cancelled=None):
        label = label_of(chat)
        with self._lock:
            self.started.append(label)
            self.active.add(label)
            self.max_active = max(self.max_active, len(self.active))
        try:
            if label.startswith("gated"):
                self.gate.wait(30)
            for step in range(self.steps_for(label)):
                if cancelled is not None and cancelled():
                    self.stopped[label] = step
                    raise JudgmentCancelled()
                time.sleep(STEP_S)
            self.finished.append(label)
            return super().generate(chat, options, forcing)
        finally:
            with self._lock:
                self.active.discard(label)


class EightSlotJudge(Judge):
    """A Judge that, like a local model's context, holds at most 8 slots."""

    def resolve_slots(self, parallel="auto", options=None):
        slots = super().resolve_slots(parallel, options)
        if slots > 8:
            raise RaLiteError(f"--parallel {slots}: this context holds at most 8 slots",
                              "use --parallel 8 or fewer")
        return slots


def started(server) -> list[str]:
    """Judgments that began, in order."""
    return list(server.judge.backend.started)


def stopped(server) -> list[str]:
    """Judgments stopped by a cancellation, in order."""
    return list(server.judge.backend.stopped)


@pytest.fixture
def servers():
    started = []

    def start(backend, parallel: int = 1, log=None, **config) -> RewardServer:
        judge = Judge(backend)
        server = RewardServer(judge, ServerConfig(port=0, parallel=parallel, **config),
                              log=log).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.hurry()
        server.shutdown(timeout=0)


def send_and_hold(url: str, obj, path: str = "/api/rewardanything") -> socket.socket:
    """Send a whole request on a raw socket and return it unread (close it to 'leave')."""
    host, port = url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    body = json.dumps(obj).encode()
    conn.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return conn


def in_background(function, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)))
    thread.start()
    return thread, result


# --- a client that leaves ------------------------------------------------------------------------
@pytest.mark.parametrize("parallel", [1, 2])
def test_a_client_that_leaves_while_queued_is_never_judged(servers, parallel):
    backend = SteppingFake(steps_for=lambda label: 3000 if label.startswith("long") else 3)
    log: list[str] = []
    server = servers(backend, parallel=parallel, log=log.append)
    # Fill every slot with a long judgment, queue one more request, and leave.
    holders = [send_and_hold(server.url, request_for(i, f"long-{i}")) for i in range(parallel)]
    wait_until(lambda: len(started(server)) == parallel, what="every slot busy")
    leaver = send_and_hold(server.url, request_for(9, "leaver"))
    wait_until(lambda: server.worker.pending == parallel + 1, what="the leaver queued")
    leaver.close()
    wait_until(lambda: any(" 499 " in line for line in log), what="the disconnect noticed")
    for conn in holders:                       # free the slots: the leaver's turn comes
        conn.close()
    wait_until(lambda: len(stopped(server)) == parallel, what="the long judgments stopped")
    code, body, _ = post_json(server.url, "/api/rewardanything", request_for(10, "after"))
    assert code == 200 and set(body["results"]["scores"]) == set(request_for(10)["responses"])
    assert "leaver" not in started(server) and started(server)[-1] == "after"
    assert server.worker.cancelled == parallel + 1 and server.worker.completed == 1


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_client_that_leaves_while_running_stops_it_between_steps(servers, parallel):
    backend = SteppingFake(steps_for=lambda label: 3000 if label == "long" else 3)
    server = servers(backend, parallel=parallel)
    conn = send_and_hold(server.url, request_for(1, "long"))
    wait_until(lambda: started(server) == ["long"], what="the long judgment started")
    conn.close()
    wait_until(lambda: stopped(server) == ["long"], what="the judgment stopped")
    assert backend.finished == []
    if parallel == 1:
        assert backend.stopped["long"] < 3000
    code, body, _ = post_json(server.url, "/api/rewardanything", request_for(2, "next"))
    assert code == 200 and backend.finished == ["next"]
    assert raw(server.url, "GET", "/health")[1]["queue"]["cancelled"] == 1


def test_a_client_that_leaves_frees_its_slot_for_a_queued_request(servers):
    backend = SteppingFake(steps_for=lambda label: 3000 if label.startswith("slow") else 3)
    server = servers(backend, parallel=2)
    slow = [send_and_hold(server.url, request_for(i, f"slow-{i}")) for i in range(2)]
    wait_until(lambda: len(started(server)) == 2, what="both slots busy")
    queued = in_background(post_json, server.url, "/api/rewardanything", request_for(5, "quick"))
    wait_until(lambda: server.worker.pending == 3, what="the quick request queued")
    slow[0].close()                             # frees one slot: the queued request runs in it
    queued[0].join(30)
    code, body, _ = queued[1]["value"]
    assert code == 200 and set(body["results"]["scores"]) == set(request_for(5)["responses"])
    assert stopped(server) == ["slow-0"] and "slow-1" in backend.active
    slow[1].close()
    wait_until(lambda: stopped(server) == ["slow-0", "slow-1"], what="the second slot freed")


def test_a_batch_whose_client_leaves_cancels_all_its_requests(servers):
    backend = SteppingFake(steps_for=lambda label: 3000)
    server = servers(backend, parallel=4)
    conn = send_and_hold(server.url, [request_for(i, f"b{i}") for i in range(3)],
                         path="/api/rewardanything_batch")
    wait_until(lambda: len(started(server)) == 3, what="the batch filling 3 slots")
    conn.close()
    wait_until(lambda: sorted(stopped(server)) == ["b0", "b1", "b2"], what="all three cancelled")
    assert server.worker.cancelled == 1 and backend.finished == []


# --- drain on shutdown / SIGTERM -----------------------------------------------------------------
def test_shutdown_runs_queued_jobs_until_the_deadline_then_answers_503(servers):
    backend = SlowFake(delay=0.2)                 # cannot be stopped midway: it finishes
    server = servers(backend, drain_timeout=0.5)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(post_json, server.url, "/api/rewardanything", request_for(i))
                   for i in range(10)]
        wait_until(lambda: server.worker.pending == 10, what="10 jobs queued")
        assert server.shutdown() is False          # the deadline cut some off
        replies = [f.result() for f in futures]
    codes = [code for code, _, _ in replies]
    assert set(codes) == {200, 503}
    assert codes.count(200) == len(backend.calls)   # what ran was answered, nothing else ran
    for code, body, headers in replies:
        if code == 503:
            assert "still queued at the drain deadline" in body["detail"]
            assert "shutting down" in body["detail"] and headers["Connection"] == "close"
        else:
            assert body["results"]["scores"]
    assert server.worker.refused_at_deadline == codes.count(503)


def test_a_draining_server_refuses_new_requests_and_reports_draining(servers):
    backend = SteppingFake()
    backend.gate.clear()
    server = servers(backend, drain_timeout=30)
    running = in_background(post_json, server.url, "/api/rewardanything", request_for(1, "gated"))
    wait_until(lambda: backend.started == ["gated"], what="the gated job running")
    stopping = in_background(server.shutdown)
    wait_until(lambda: server.draining, what="draining")
    code, body, headers = post_json(server.url, "/api/rewardanything", request_for(2))
    assert code == 503 and "not accepting new requests" in body["detail"]
    assert headers["Connection"] == "close"
    code, body, _ = raw(server.url, "GET", "/health")
    assert code == 503 and body["status"] == "draining"
    backend.gate.set()
    running[0].join(30)
    stopping[0].join(30)
    assert running[1]["value"][0] == 200 and stopping[1]["value"] is True
    assert backend.started == ["gated"]


@pytest.mark.parametrize("parallel", [1, 2])
def test_running_judgments_are_stopped_at_the_drain_deadline(servers, parallel):
    backend = SteppingFake(steps_for=lambda label: 3000)
    server = servers(backend, parallel=parallel, drain_timeout=0.3)
    with ThreadPoolExecutor(max_workers=parallel + 2) as pool:
        futures = [pool.submit(post_json, server.url, "/api/rewardanything", request_for(i))
                   for i in range(parallel + 2)]
        wait_until(lambda: server.worker.pending == parallel + 2 and
                   len(started(server)) == parallel, what="slots busy, 2 queued")
        assert server.shutdown() is False
        replies = [f.result() for f in futures]
    details = sorted(body["detail"] for _, body, _ in replies)
    assert [code for code, _, _ in replies] == [503] * (parallel + 2)
    assert sum("stopped at the drain deadline" in d for d in details) == parallel
    assert sum("still queued at the drain deadline" in d for d in details) == 2
    assert len(stopped(server)) == parallel and backend.finished == []


SERVE_WITH_FAKE = """
import ra_lite.cli as cli
from ra_lite.judge import Judge
from tests.test_serve_ops import SteppingFake
cli.load_judge = lambda **settings: Judge(SteppingFake(steps_for=lambda label: 20),
                                          model_name="stepping-fake")
cli.main(["serve", "--port", "0", "--queue-size", "50", "--drain-timeout", "1"])
"""


def test_sigterm_answers_503_after_the_drain_timeout_and_exits(tmp_path):
    """`ra-lite serve` in a subprocess: 12 jobs of 0.2 s each, SIGTERM, a 1 s drain."""
    with serve_subprocess(["-c", SERVE_WITH_FAKE], "serving stepping-fake on ") as (proc, lines, url):
        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(post_json, url, "/api/rewardanything", request_for(i))
                       for i in range(12)]
            wait_until(lambda: raw(url, "GET", "/health")[1]["queue"]["pending"] == 12,
                       what="12 jobs queued")
            proc.send_signal(signal.SIGTERM)
            wait_for_line(lines, "within 1 s (--drain-timeout)", 10)
            replies = [f.result() for f in futures]
        assert proc.wait(20) == 0                   # bounded: not the whole queue's 2.4 s+
        codes = [code for code, _, _ in replies]
        assert set(codes) == {200, 503} and len(codes) == 12
        refused = codes.count(503)
        assert all("shutting down" in body["detail"] for code, body, _ in replies if code == 503)
        wait_for_line(lines, f"answered 503 at the drain deadline", 5)
        assert refused >= 1


# --- --parallel ----------------------------------------------------------------------------------
def test_parallel_server_answers_concurrent_clients_and_batches_in_order(servers):
    backend = SteppingFake(steps_for=lambda label: 2 + int(label.split("-")[-1]) % 4
                           if "-" in label else 3)
    server = servers(backend, parallel=4, queue_size=100)
    singles = [request_for(i, f"s-{i}") for i in range(24)]
    batches = [[request_for(100 + 10 * b + i, f"b{b}-{i}") for i in range(5)] for b in range(4)]
    with ThreadPoolExecutor(max_workers=28) as pool:
        single_replies = pool.map(lambda r: post_json(server.url, "/api/rewardanything", r),
                                  singles)
        batch_replies = pool.map(lambda b: post_json(server.url, "/api/rewardanything_batch", b),
                                 batches)
        single_replies, batch_replies = list(single_replies), list(batch_replies)
    for request, (code, body, _) in zip(singles, single_replies):
        assert code == 200 and set(body["results"]["scores"]) == set(request["responses"])
    for batch, (code, body, _) in zip(batches, batch_replies):
        assert code == 200
        assert [set(r["results"]["scores"]) for r in body] == [set(q["responses"]) for q in batch]
    assert 1 < backend.max_active <= 4
    assert raw(server.url, "GET", "/health")[1]["queue"]["parallel"] == 4


def test_an_error_in_one_batch_request_fails_the_batch_and_stops_its_other_requests(servers):
    class Refusing(SteppingFake):
        def generate(self, chat, options, forcing=None, on_reasoning=None, cancelled=None):
            if label_of(chat) == "too-long":
                raise RaLiteError("the request needs 9000 tokens", "raise --n-ctx")
            return super().generate(chat, options, forcing, on_reasoning, cancelled)

    server = servers(Refusing(steps_for=lambda label: 3), parallel=2)
    batch = [request_for(1, "ok-1"), request_for(2, "too-long"), request_for(3, "ok-3")]
    code, body, _ = post_json(server.url, "/api/rewardanything_batch", batch)
    assert code == 400 and body["detail"] == "the request needs 9000 tokens — raise --n-ctx"
    code, _, _ = post_json(server.url, "/api/rewardanything", request_for(4, "after"))
    assert code == 200                          # the runner survived


def test_serve_parallel_option_values(monkeypatch):
    from click.testing import CliRunner

    import ra_lite.cli as cli
    import ra_lite.serve.cli as serve_cli

    seen = {}
    monkeypatch.setattr(cli, "load_judge", lambda **settings: EightSlotJudge(
        FakeBackend(fallback=ascending_answer)))
    monkeypatch.setattr(serve_cli, "run_until_signal", lambda server: seen.update(
        config=server.config, queue=server.worker.judge_queue) or server.shutdown(timeout=5))
    ok = CliRunner().invoke(cli.main, ["serve", "--port", "0", "--parallel", "4",
                                       "--drain-timeout", "7.5"])
    assert ok.exit_code == 0, ok.output
    assert seen["config"].parallel == 4 and seen["config"].drain_timeout == 7.5
    assert seen["queue"].slots == 4
    one = CliRunner().invoke(cli.main, ["serve", "--port", "0", "--parallel", "1"])
    assert one.exit_code == 0 and seen["queue"].slots == 1    # one slot: the same queue
    old = CliRunner().invoke(cli.main, ["serve", "--port", "0", "--workers", "3"])
    assert old.exit_code == 0 and seen["queue"].slots == 3    # --workers: --parallel's old name
    assert "--workers is deprecated" in old.output
    for args, message in ((["--parallel", "0"], "at least 1 slot"),
                          (["--parallel", "-3"], "at least 1 slot"),
                          (["--parallel", "many"], "not a number of slots"),
                          (["--parallel", "9"], "at most 8 slots"),
                          (["--parallel", "4", "--workers", "2"],
                           "--parallel 4 and --workers 2 together"),
                          (["--remote-tokenizer", "m.gguf"],
                           "--remote-tokenizer only apply with --remote URL"),
                          (["--remote-text-prompts"],
                           "--remote-text-prompts only apply with --remote URL"),
                          (["--drain-timeout", "-1"], "drain timeout -1.0 is negative")):
        bad = CliRunner().invoke(cli.main, ["serve", "--port", "0", *args])
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
        assert "Traceback" not in bad.output


# --- the real thing ------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_serve_parallel_4_answers_60_concurrent_clients(tmp_path):
    """`ra-lite serve --parallel 4` on the embedded model: 60 clients at once, each its own
    answer, and batches in request order."""
    args = ["-m", "ra_lite", "serve", "--port", "0", "--parallel", "4", "--think-budget", "8",
            "--n-ctx", "4096", "--queue-size", "100", "--no-log-requests"]
    with serve_subprocess(args, timeout=120) as (proc, lines, url):
        singles = [request_for(i) for i in range(56)]
        batches = [[request_for(100 + 10 * b + i) for i in range(3)] for b in range(4)]
        with ThreadPoolExecutor(max_workers=60) as pool:
            single_replies = pool.map(lambda r: post_json(url, "/api/rewardanything", r,
                                                          timeout=300), singles)
            batch_replies = pool.map(lambda b: post_json(url, "/api/rewardanything_batch", b,
                                                         timeout=300), batches)
            single_replies, batch_replies = list(single_replies), list(batch_replies)
        for request, (code, body, _) in zip(singles, single_replies):
            names = set(request["responses"])
            assert code == 200 and set(body["results"]["scores"]) == names
            assert set(body["results"]["best-to-worst"]) == names
            ranking, scores = body["results"]["best-to-worst"], body["results"]["scores"]
            assert all(scores[a] >= scores[b] for a, b in zip(ranking, ranking[1:]))
        for batch, (code, body, _) in zip(batches, batch_replies):
            assert code == 200
            assert [set(r["results"]["scores"]) for r in body] == \
                [set(q["responses"]) for q in batch]
        health = raw(url, "GET", "/health")[1]
        assert health["queue"]["parallel"] == 4 and health["queue"]["completed"] == 60
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
