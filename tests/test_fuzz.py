"""Hostile input, fuzzed: every entry point answers bad input with a clear error.

Property-based (hypothesis) generators for each kind of input ra-lite reads, each checked
against the property its entry point must keep:

(a) request JSON -> the one JSON reader + JudgeRequest, and `ra-lite judge`: a value or a
    one-line RaLiteError (exit 2, `error:` line), never a traceback;
(b) JSONL batch files -> `run_batch`: one record per id, every good line judged, an error record
    for each bad line, nothing written before lost on a rerun;
(c) HTTP requests -> `ra-lite serve`: never a 500, an answer within a bound, healthy afterwards;
(d) bench data files -> `load_items`: items or a one-line RaLiteError;
(e) GGUF headers (a valid tiny GGUF, mutated) -> every GGUF reader: info or a one-line
    RaLiteError, within a time bound;
(f) the judgment cache database (corrupted, truncated) -> lookups miss, stores work, never an
    exception.

Budget: RA_LITE_FUZZ_EXAMPLES inputs per generator (default 60 in the test suite, which keeps
this file near 20 s on the 2-core reference machine); `benchmarks/fuzz.py` runs the same
generators longer and prints how many inputs each tried. The cases that found bugs are kept
below as plain regression tests.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ra_lite.errors import RaLiteError
from ra_lite.judge import Judge, JudgeOptions
from ra_lite.request import JudgeRequest, loads_request_json
from ra_lite.testing import FakeBackend, ascending_answer

EXAMPLES = int(os.environ.get("RA_LITE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get(
    "RA_LITE_FUZZ_RANDOM"), suppress_health_check=list(HealthCheck))
# A deeply nested document as the issue found it: 100,000 levels, 200 kB.
DEEP = "[" * 100_000 + "]" * 100_000
GOOD = {"principle": "Prefer the correct answer.", "prompt": "2+2?",
        "responses": {"right": "4", "wrong": "5"}}


def one_line_error(error: RaLiteError) -> None:
    """The error convention: a problem and a fix, printed as one line."""
    line = error.one_line()
    assert "\n" not in line and line.strip(), line
    assert "Traceback" not in line


# --- generators ----------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | \
    st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
nasty_text = st.sampled_from(["", " ", "\x00", "\ud800", "\udfff", "\u2028", "\ufeff", "\x1b[2J",
                              "<|im_end|>", "<think>", "x" * 5000, "é" * 300, "\r\n"])


@st.composite
def mutated_requests(draw) -> str:
    """A valid request mutated the way real producers break it, as JSON text."""
    obj = json.loads(json.dumps(GOOD))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["drop", "retype", "extra", "nasty", "responses", "root"]))
        if kind == "drop" and obj and isinstance(obj, dict):
            obj.pop(draw(st.sampled_from(sorted(obj))), None)
        elif kind == "retype" and isinstance(obj, dict) and obj:
            obj[draw(st.sampled_from(sorted(obj)))] = draw(json_values)
        elif kind == "extra" and isinstance(obj, dict):
            obj[draw(st.text(max_size=6))] = draw(json_values)
        elif kind == "nasty" and isinstance(obj, dict):
            obj[draw(st.sampled_from(["principle", "prompt"]))] = draw(nasty_text)
        elif kind == "responses" and isinstance(obj, dict):
            obj["responses"] = draw(st.dictionaries(nasty_text | st.text(max_size=4),
                                                    nasty_text | json_values, max_size=5)
                                    | st.lists(nasty_text | json_values, max_size=5))
        elif kind == "root":
            obj = draw(json_values)
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=True)
    wrap = draw(st.sampled_from(["none", "deep", "truncate", "bignum", "dupkey", "garbage"]))
    if wrap == "deep":
        depth = draw(st.sampled_from([10, 1_000, 50_000]))
        text = "[" * depth + text + "]" * depth
    elif wrap == "truncate":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif wrap == "bignum":
        text = text.replace('"2+2?"', "9" * 5000, 1) if '"2+2?"' in text else "9" * 5000
    elif wrap == "dupkey" and text.startswith("{") and len(text) > 2:
        text = '{"principle": "a", ' + text[1:]
    elif wrap == "garbage":
        text += draw(st.sampled_from(["}", "\x00", "\ufffd", " trailing"]))
    return text


# --- (a) request JSON ----------------------------------------------------------------------
@FUZZ
@given(mutated_requests())
def test_any_request_text_is_a_request_or_a_one_line_error(text):
    try:
        JudgeRequest.from_dict(loads_request_json(text, "the request"))
    except RaLiteError as error:
        one_line_error(error)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_a_one_line_error(data):
    try:
        JudgeRequest.from_dict(loads_request_json(data, "the body"))
    except RaLiteError as error:
        one_line_error(error)


def fake_cli(monkeypatch):
    import ra_lite.cli as cli

    monkeypatch.setattr(cli, "load_judge", lambda **settings: Judge(
        FakeBackend(fallback=ascending_answer), model_name="fake"))
    return cli


@FUZZ
@given(mutated_requests())
def test_judge_command_answers_any_request_file_with_exit_0_or_one_error_line(text):
    from click.testing import CliRunner

    import ra_lite.cli as cli

    real = cli.load_judge
    cli.load_judge = lambda **settings: Judge(FakeBackend(fallback=ascending_answer))
    try:
        result = CliRunner().invoke(cli.main, ["judge", "-", "--json"], input=text.encode(
            "utf-8", "surrogatepass"))
    finally:
        cli.load_judge = real
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.output.startswith("error: ") and result.output.count("\n") == 1


# --- (b) JSONL batch files -----------------------------------------------------------------
@st.composite
def batch_files(draw) -> tuple[bytes, int]:
    """Lines of a batch file, good ones (with ids) mixed with bad ones; (bytes, good count)."""
    lines, good = [], 0
    for i in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["good", "good", "bad", "binary", "empty", "crlf"]))
        if kind in ("good", "crlf"):
            line = json.dumps({"id": f"g{i}", **GOOD}).encode()
            lines.append(line + (b"\r\n" if kind == "crlf" else b"\n"))
            good += 1
        elif kind == "bad":
            lines.append(draw(mutated_requests()).encode("utf-8", "surrogatepass")
                         .replace(b"\n", b" ") + b"\n")
        elif kind == "binary":
            lines.append(draw(st.binary(min_size=1, max_size=40)).replace(b"\n", b"") + b"\n")
        else:
            lines.append(b"\n")
    data = b"".join(lines)
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data                     # a BOM
    if draw(st.booleans()) and data.endswith(b"\n"):
        data = data[:-1]                                   # no final newline
    return data, good


@FUZZ
@given(batch_files())
def test_a_batch_judges_every_good_line_and_records_every_bad_one(tmp_path_factory, case):
    from ra_lite.batch import read_done, run_batch

    data, good = case
    folder = tmp_path_factory.mktemp("batch")
    src, out = folder / "in.jsonl", folder / "out.jsonl"
    src.write_bytes(data)
    judge = Judge(FakeBackend(fallback=ascending_answer))
    try:
        summary = run_batch(judge, src, out, JudgeOptions(think_budget=0), parallel=1)
    except RaLiteError as error:          # the file as a whole: no requests, duplicate ids
        one_line_error(error)
        return
    records = read_done(out)
    assert summary.total == len(records)
    judged = [r for r in records.values() if "error" not in r]
    assert len(judged) >= good and summary.errors == len(records) - len(judged)
    again = run_batch(judge, src, out, JudgeOptions(think_budget=0), parallel=1)
    assert again.judged_now == 0 and read_done(out) == records      # nothing lost or redone


# --- (c) HTTP ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    from ra_lite.serve.server import RewardServer, ServerConfig

    judge = Judge(FakeBackend(fallback=ascending_answer), JudgeOptions(think_budget=0))
    server = RewardServer(judge, ServerConfig(port=0, read_timeout=2.0)).start()
    yield server
    server.shutdown(timeout=5)


@st.composite
def http_requests(draw) -> bytes:
    method = draw(st.sampled_from(["POST", "GET", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS",
                                   "BREW", "post"]))
    path = draw(st.sampled_from(["/api/rewardanything", "/api/rewardanything_batch",
                                 "/get_reward", "/health", "/", "/%00", "/api/../health",
                                 "/" + "a" * 3000, "*"]))
    body = draw(mutated_requests()).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        body = b"[" + body + b"]"
    headers = {"Host": "fuzz"}
    length = draw(st.sampled_from(["exact", "none", "short", "long", "negative", "text",
                                   "huge", "chunked"]))
    if length == "exact":
        headers["Content-Length"] = str(len(body))
    elif length == "short":
        headers["Content-Length"] = str(max(len(body) - 3, 0))
    elif length == "long":                # more than is sent: the read times out, not hangs
        headers["Content-Length"] = str(len(body) + 5)
    elif length == "negative":
        headers["Content-Length"] = "-1"
    elif length == "text":
        headers["Content-Length"] = "ten"
    elif length == "huge":
        headers["Content-Length"] = str(1 << 40)
    elif length == "chunked":
        headers["Transfer-Encoding"] = "chunked"
    headers["Content-Type"] = draw(st.sampled_from(["application/json", "text/plain", "",
                                                    "application/json; charset=latin-1"]))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            # The server may answer (e.g. 413 for a huge Content-Length) and close before the
            # whole body is sent: a race on a loaded machine, not a failure. Read its answer.
            pass
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


@settings(max_examples=max(EXAMPLES // 2, 10), deadline=None, derandomize=not os.environ.get(
    "RA_LITE_FUZZ_RANDOM"), suppress_health_check=list(HealthCheck))
@given(http_requests())
def test_the_server_never_answers_500_or_hangs(server, data):
    started = time.monotonic()
    reply = exchange(server.port, data)
    assert time.monotonic() - started < 10          # read_timeout 2 s bounds a short body
    status = reply.split(b"\r\n", 1)[0]
    assert b" 500 " not in status, reply[:300]
    if reply:
        assert status.startswith(b"HTTP/1."), reply[:100]


def test_the_server_is_healthy_after_the_fuzzing(server):
    from tests.support.api_client import post_json, raw

    assert raw(server.url, "GET", "/health")[0] == 200
    code, body, _ = post_json(server.url, "/api/rewardanything", GOOD)
    assert code == 200 and set(body["results"]["scores"]) == {"right", "wrong"}


# --- (d) bench data files ------------------------------------------------------------------
@FUZZ
@given(batch_files())
def test_bench_data_loads_or_fails_in_one_line(tmp_path_factory, case):
    from ra_lite.bench.dataset import load_items

    data, _ = case
    path = tmp_path_factory.mktemp("bench") / "data.jsonl"
    path.write_bytes(data)
    try:
        loaded = load_items(str(path))
    except RaLiteError as error:
        one_line_error(error)
        return
    assert all(item.responses for item in loaded.items)


# --- (e) GGUF headers ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> bytes:
    """A valid GGUF: a causal-LM header with strings, arrays and one tensor."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@st.composite
def mutated_gguf(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["byte", "u64", "truncate"]))
        # Within the header (counts, lengths, types): the first 600 bytes.
        at = draw(st.integers(0, min(len(data), 600) - 1))
        if kind == "byte":
            data[at] = draw(st.integers(0, 255))
        elif kind == "u64" and at + 8 <= len(data):
            data[at:at + 8] = struct.pack("<Q", draw(st.sampled_from(
                [0, 1, 2**31, 2**32 - 1, 2**63 - 1, 2**64 - 1])))
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get(
    "RA_LITE_FUZZ_RANDOM"), suppress_health_check=list(HealthCheck))
@given(st.data())
def test_every_gguf_reader_answers_a_damaged_header_in_one_line(tmp_path_factory, tiny_gguf,
                                                                 data):
    from ra_lite.remote.client import template_from_gguf
    from ra_lite.runtime.gguf_info import read_gguf_info

    path = tmp_path_factory.mktemp("bad") / "bad.gguf"
    path.write_bytes(data.draw(mutated_gguf(tiny_gguf)))
    for reader in (read_gguf_info, template_from_gguf):
        started = time.monotonic()
        try:
            reader(path)
        except RaLiteError as error:
            one_line_error(error)
        assert time.monotonic() - started < 5, reader.__name__


def test_the_tiny_gguf_itself_reads(tmp_path, tiny_gguf):
    from ra_lite.runtime.gguf_info import read_gguf_info

    path = tmp_path / "ok.gguf"
    path.write_bytes(tiny_gguf)
    assert read_gguf_info(path).architecture == "llama"


# --- (f) the judgment cache ----------------------------------------------------------------
@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["flip", "truncate", "zero"]),
                          st.integers(0, 40_000)), min_size=1, max_size=4))
# Found by the fuzzer: a flipped byte inside a stored text made sqlite3 raise UnicodeDecodeError
# (not a DatabaseError) from the first PRAGMA, which escaped as a traceback.
# And one inside a row's text: "Could not decode to UTF-8 column 'record'".
@example(damage=[("flip", 3818)])
@example(damage=[("flip", 7395)])
@example(damage=[("truncate", 0), ("flip", 0)])
def test_a_damaged_judgment_cache_misses_and_keeps_working(tmp_path_factory, damage):
    from ra_lite.judgment import Judgment
    from ra_lite.judgment_cache import JudgmentCache, ModelCache

    folder = tmp_path_factory.mktemp("cache")
    path = folder / "judgments.sqlite3"
    request = JudgeRequest.from_dict(GOOD)
    options = JudgeOptions()
    judged = Judge(FakeBackend(fallback=ascending_answer)).judge_request(request)
    store = JudgmentCache(path)
    ModelCache(store, "0" * 64).store(request, options, judged)
    store.close()
    data = bytearray(path.read_bytes())
    for kind, at in damage:
        if not data:
            break
        at %= len(data)
        if kind == "flip":
            data[at] ^= 0xFF
        elif kind == "zero":
            data[at:at + 512] = bytes(len(data[at:at + 512]))
        else:
            del data[at:]
    path.write_bytes(bytes(data))
    notices: list[str] = []
    store = JudgmentCache(path, notify=notices.append)
    try:
        cache = ModelCache(store, "0" * 64)
        found = cache.lookup(request, options)
        assert found is None or isinstance(found, Judgment)
        cache.store(request, options, judged)
        assert cache.lookup(request, options) is not None
    finally:
        store.close()


def test_a_locked_judgment_cache_does_not_hang_a_lookup_forever(tmp_path, monkeypatch):
    import sqlite3

    import ra_lite.judgment_cache as judgment_cache

    monkeypatch.setattr(judgment_cache, "BUSY_TIMEOUT_MS", 300)
    path = tmp_path / "judgments.sqlite3"
    store = judgment_cache.JudgmentCache(path)
    cache = judgment_cache.ModelCache(store, "0" * 64)
    request = JudgeRequest.from_dict(GOOD)
    cache.lookup(request, JudgeOptions())
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        judged = Judge(FakeBackend(fallback=ascending_answer)).judge_request(request)
        try:
            cache.store(request, JudgeOptions(), judged)
            cache.lookup(request, JudgeOptions())
        except RaLiteError as error:
            one_line_error(error)
        assert time.monotonic() - started < 10
    finally:
        locker.execute("ROLLBACK")
        locker.close()
        store.close()


# --- regressions: the escapes the issue found, and what the fuzzer found -----------------------
def test_deep_json_is_a_400_on_serve_not_a_500(server):
    from tests.support.api_client import raw

    code, body, _ = raw(server.url, "POST", "/api/rewardanything", DEEP.encode(),
                        {"Content-Type": "application/json"})
    assert code == 400 and "nests JSON" in body["detail"]
    code, body, _ = raw(server.url, "POST", "/get_reward", DEEP.encode(),
                        {"Content-Type": "application/json"})
    assert code == 400 and "nests JSON" in body["detail"]


def test_deep_json_is_one_error_line_on_judge(tmp_path, monkeypatch):
    from click.testing import CliRunner

    cli = fake_cli(monkeypatch)
    path = tmp_path / "deep.json"
    path.write_text(DEEP)
    result = CliRunner().invoke(cli.main, ["judge", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "nests JSON" in result.output


def test_one_deep_line_costs_one_record_not_the_batch(tmp_path, monkeypatch):
    from click.testing import CliRunner

    cli = fake_cli(monkeypatch)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(DEEP + "\n" + json.dumps({"id": "good", **GOOD}) + "\n")
    result = CliRunner().invoke(cli.main, ["batch", str(src), "-o", str(out), "--no-progress",
                                           "--no-cache"])
    assert result.exit_code == 3 and "Traceback" not in result.output        # some not judged
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["id"] for r in records} == {"line-1", "good"}
    assert "nests JSON" in next(r for r in records if r["id"] == "line-1")["error"]
    assert next(r for r in records if r["id"] == "good")["results"]["scores"]


def test_a_duplicated_request_key_names_its_own_fix():
    with pytest.raises(RaLiteError) as caught:
        loads_request_json('{"principle": "a", "principle": "b"}', "x")
    assert "'principle' twice" in caught.value.problem and caught.value.fix == "write 'principle' once"
    with pytest.raises(RaLiteError) as caught:
        loads_request_json('{"responses": {"a": "1", "a": "2"}}', "x")
    assert "give each response its own name" in caught.value.fix


def test_a_batch_line_that_is_not_utf8_or_has_a_surrogate_id_is_its_own_error(tmp_path):
    from ra_lite.batch import read_done, run_batch

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b'{"id": "\xff", "principle": "p"}\n' +
                    json.dumps({"id": "\ud800", **GOOD}).encode() + b"\n" +
                    json.dumps({"id": "ok", **GOOD}).encode() + b"\n")
    summary = run_batch(Judge(FakeBackend(fallback=ascending_answer)), src, out,
                        JudgeOptions(think_budget=0), parallel=1)
    records = read_done(out)
    assert summary.errors == 2 and "results" in records["ok"]
    assert "not UTF-8" in records["line-1"]["error"] and "surrogate" in records["line-2"]["error"]


def test_a_huge_integer_is_one_error_line():
    with pytest.raises(RaLiteError, match="cannot be read as JSON"):
        loads_request_json('{"principle": ' + "9" * 5000 + "}", "x")
