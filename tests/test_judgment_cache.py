"""The judgment cache: keys, hits and misses, damage, concurrent writers, the size cap, and the
commands that use it (batch answered without loading the model, `ra-lite cache`)."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from dataclasses import replace

import pytest
from click.testing import CliRunner

import ra_lite.cli as cli
from ra_lite.judge import Judge, JudgeOptions
from ra_lite.judgment_cache import JudgmentCache, ModelCache, request_key
from ra_lite.request import JudgeRequest
from ra_lite.testing import FakeBackend, ascending_answer

SHA = "a" * 64
REQUEST = JudgeRequest.create("Be brief.", "Hi?", {"a": "Hello.", "b": "Hello there."})


def a_judgment(request=REQUEST, options=JudgeOptions()):
    return Judge(FakeBackend(fallback=ascending_answer)).judge_request(request, options)


def test_a_stored_judgment_is_found_again_marked_cached(tmp_path):
    store = JudgmentCache(tmp_path / "j.sqlite3")
    cache = ModelCache(store, SHA)
    assert cache.lookup(REQUEST, JudgeOptions()) is None
    original = a_judgment()
    cache.store(REQUEST, JudgeOptions(), original)
    again = JudgmentCache(tmp_path / "j.sqlite3")           # another process, say
    found = ModelCache(again, SHA).lookup(REQUEST, JudgeOptions())
    assert found.cached and found.to_dict()["ra_lite"]["cached"] is True
    assert replace(found, cached=False) == original
    assert (store.hits, store.misses) == (0, 1) and (again.hits, again.misses) == (1, 0)
    store.close()
    again.close()
    assert JudgmentCache(tmp_path / "j.sqlite3").stats().hit_rate == 0.5


@pytest.mark.parametrize("change", [
    {"think_budget": 7}, {"temperature": 0.5}, {"top_p": 0.5}, {"seed": 1},
    {"repetition_guard": False}, {"orders": 2}, {"speculative": True}])
def test_every_setting_that_changes_the_verdict_is_in_the_key(change):
    assert request_key(SHA, JudgeOptions(), REQUEST) != \
        request_key(SHA, replace(JudgeOptions(), **change), REQUEST)


def test_greedy_keys_leave_out_what_greedy_decoding_never_reads():
    greedy = replace(JudgeOptions(), temperature=0.0)
    key = request_key(SHA, greedy, REQUEST)
    assert request_key(SHA, replace(greedy, seed=7, top_p=0.5), REQUEST) == key
    assert request_key(SHA, replace(greedy, think_budget=7), REQUEST) != key
    assert request_key(SHA, replace(greedy, temperature=0.1), REQUEST) != key


def test_the_model_and_every_part_of_the_request_are_in_the_key():
    base = request_key(SHA, JudgeOptions(), REQUEST)
    assert request_key("b" * 64, JudgeOptions(), REQUEST) != base
    for other in (JudgeRequest.create("Be brief!", "Hi?", REQUEST.responses),
                  JudgeRequest.create("Be brief.", "Hi!", REQUEST.responses),
                  JudgeRequest.create("Be brief.", "Hi?", {"a": "Hello!", "b": "Hello there."}),
                  JudgeRequest.create("Be brief.", "Hi?", {"b": "Hello there.", "a": "Hello."}),
                  JudgeRequest.create("Be brief.", "Hi?", {"x": "Hello.", "b": "Hello there."})):
        assert request_key(SHA, JudgeOptions(), other) != base
    assert request_key(SHA, JudgeOptions(), REQUEST) == base           # and it is stable


def test_a_damaged_database_is_set_aside_and_rebuilt(tmp_path):
    path = tmp_path / "j.sqlite3"
    store = JudgmentCache(path)
    ModelCache(store, SHA).store(REQUEST, JudgeOptions(), a_judgment())
    store.close()
    data = bytearray(path.read_bytes())
    data[:100] = b"\x13" * 100                           # the header: no longer a database
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"j.sqlite3{suffix}").unlink(missing_ok=True)
    notices = []
    store = JudgmentCache(path, notify=notices.append)
    cache = ModelCache(store, SHA)
    assert cache.lookup(REQUEST, JudgeOptions()) is None          # never trusted
    assert any(p.name.startswith("j.sqlite3.corrupt-") for p in tmp_path.iterdir())
    assert notices and "set it aside" in notices[0]
    cache.store(REQUEST, JudgeOptions(), a_judgment())            # the new one works
    assert cache.lookup(REQUEST, JudgeOptions()) is not None


def test_a_row_that_fails_its_checksum_reads_as_a_miss_and_is_dropped(tmp_path):
    path = tmp_path / "j.sqlite3"
    store = JudgmentCache(path)
    cache = ModelCache(store, SHA)
    cache.store(REQUEST, JudgeOptions(), a_judgment())
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE entries SET record = replace(record, '\"scores\"', '\"scorez\"')")
    assert cache.lookup(REQUEST, JudgeOptions()) is None
    assert store.stats().entries == 0


def _writer(path, worker, n):
    store = JudgmentCache(path)
    cache = ModelCache(store, SHA)
    judge = Judge(FakeBackend(fallback=ascending_answer))
    for i in range(n):
        request = JudgeRequest.create("P", f"worker {worker} item {i}", {"a": "x", "b": "y"})
        cache.store(request, JudgeOptions(), judge.judge_request(request))
    store.close()


def test_concurrent_processes_and_threads_lose_no_write(tmp_path):
    path = tmp_path / "j.sqlite3"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_writer, args=(path, w, 25)) for w in range(3)]
    threads = [threading.Thread(target=_writer, args=(path, 10 + w, 25)) for w in range(3)]
    for worker in processes + threads:
        worker.start()
    for worker in processes + threads:
        worker.join(120)
    assert all(p.exitcode == 0 for p in processes)
    store = JudgmentCache(path)
    assert store.stats().entries == 150
    cache = ModelCache(store, SHA)
    for w in (0, 2, 10, 12):
        request = JudgeRequest.create("P", f"worker {w} item 24", {"a": "x", "b": "y"})
        assert cache.lookup(request, JudgeOptions()) is not None


def test_the_size_cap_evicts_the_least_recently_used(tmp_path):
    store = JudgmentCache(tmp_path / "j.sqlite3", max_bytes=40_000)
    cache = ModelCache(store, SHA)
    judge = Judge(FakeBackend(fallback=ascending_answer))
    requests = [JudgeRequest.create("P", f"q{i}" + "x" * 2000, {"a": "x", "b": "y"})
                for i in range(200)]
    for request in requests:
        cache.store(request, JudgeOptions(), judge.judge_request(request))
        cache.lookup(requests[0], JudgeOptions())          # keep the first one in use
    stats = store.stats()
    assert stats.bytes <= 40_000 + 64 * 3000 and stats.entries < 200
    assert cache.lookup(requests[0], JudgeOptions()) is not None
    assert cache.lookup(requests[1], JudgeOptions()) is None


# --- the commands ---------------------------------------------------------------------------
def write_batch(path, n):
    path.write_text("".join(json.dumps({"id": f"r{i}", "principle": "Be brief.",
                                        "prompt": f"Q{i}",
                                        "responses": {"cand": "a", "base": "bb"}}) + "\n"
                            for i in range(n)))
    return path


def test_a_second_batch_run_is_answered_without_loading_the_model(tmp_path, monkeypatch):
    loads = []

    def load_judge(**settings):
        loads.append(settings)
        return Judge(FakeBackend(fallback=ascending_answer))

    monkeypatch.setattr(cli, "load_judge", load_judge)
    src = write_batch(tmp_path / "in.jsonl", 4)
    runner = CliRunner()
    first = runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "a.jsonl"),
                                     "--no-progress"])
    assert first.exit_code == 0, first.output
    assert "(0 from the judgment cache)" in first.output and len(loads) == 1
    second = runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "b.jsonl"),
                                      "--no-progress"])
    assert second.exit_code == 0, second.output
    assert "(4 from the judgment cache)" in second.output and len(loads) == 1
    records = [json.loads(l) for l in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert all(r["ra_lite"]["cached"] for r in records)
    # A changed setting misses (and loads the model); so does --no-cache.
    third = runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "c.jsonl"),
                                     "--no-progress", "--seed", "1"])
    assert "(0 from the judgment cache)" in third.output and len(loads) == 2
    fourth = runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "d.jsonl"),
                                      "--no-progress", "--no-cache"])
    assert "from the judgment cache" not in fourth.output and len(loads) == 3


def test_another_model_file_misses(tmp_path, monkeypatch, random_gguf):
    monkeypatch.setattr(cli, "load_judge",
                        lambda **s: Judge(FakeBackend(fallback=ascending_answer)))
    src = write_batch(tmp_path / "in.jsonl", 2)
    runner = CliRunner()
    runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "a.jsonl"), "--no-progress"])
    other = runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "b.jsonl"),
                                     "--no-progress", "--model", str(random_gguf)])
    assert "(0 from the judgment cache)" in other.output


def test_cache_stats_and_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "load_judge",
                        lambda **s: Judge(FakeBackend(fallback=ascending_answer)))
    src = write_batch(tmp_path / "in.jsonl", 3)
    runner = CliRunner()
    runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "a.jsonl"), "--no-progress"])
    runner.invoke(cli.main, ["batch", str(src), "-o", str(tmp_path / "b.jsonl"), "--no-progress"])
    stats = json.loads(runner.invoke(cli.main, ["cache", "stats", "--json"]).output)
    assert stats["entries"] == 3 and stats["hits"] == 3 and stats["misses"] == 3
    assert stats["hit_rate"] == 0.5 and stats["by_kind"] == {"judgment": 3}
    assert "3 entries" in runner.invoke(cli.main, ["cache", "stats"]).output
    assert "removed 3 entries" in runner.invoke(cli.main, ["cache", "clear"]).output
    assert json.loads(runner.invoke(cli.main, ["cache", "stats", "--json"]).output)["entries"] == 0


def test_judge_uses_the_cache_only_when_asked(tmp_path, monkeypatch):
    backend = FakeBackend(fallback=ascending_answer)
    monkeypatch.setattr(cli, "load_judge", lambda **s: Judge(backend))
    flags = ["judge", "-p", "P", "--prompt", "Q", "-r", "a=1", "-r", "b=2", "--json"]
    runner = CliRunner()
    for _ in range(2):
        runner.invoke(cli.main, flags)
    assert len(backend.calls) == 2                                  # off by default
    runner.invoke(cli.main, flags + ["--cache"])
    cached = runner.invoke(cli.main, flags + ["--cache"])
    assert len(backend.calls) == 3 and json.loads(cached.output)["ra_lite"]["cached"] is True
