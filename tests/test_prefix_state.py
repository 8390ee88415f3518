"""The persisted prefix state (ra_lite/runtime/prefix_state.py) and its use by the engine:
hit, miss, damaged files, another model, disabled, eviction, and judgments equal either way."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ra_lite.file_hash import remembered_sha256
from ra_lite.runtime.prefix_state import KVLayout, PrefixStateCache, default_cache_dir
from tests.support.random_gguf import write_random_gguf

PREFIX = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] * 3     # 36 tokens


@pytest.fixture(scope="module")
def other_gguf(tmp_path_factory, embedded_path):
    """Same architecture and shapes as random_gguf, other weights: its state must not load."""
    path = tmp_path_factory.mktemp("other") / "random-llama.gguf"
    return write_random_gguf(path, tokenizer_from=embedded_path, seed=99)


def fresh_llm(path, n_ctx=512):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, verbose=False,
                           flash_attn=True)


def cache_for(llm, path, tmp_path, **kwargs):
    return PrefixStateCache(path, KVLayout.of(llm.ctx, llm.context_params),
                            directory=tmp_path / "cache", **kwargs)


def next_logits(llm, n_past: int, token: int) -> np.ndarray:
    import llama_cpp

    llm.n_tokens = n_past
    llm.eval([token])
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                 shape=(llm.n_vocab(),)).copy()


def stored_state(path, tmp_path):
    llm = fresh_llm(path)
    cache = cache_for(llm, path, tmp_path)
    llm.eval(PREFIX)
    assert cache.store(llm.ctx, PREFIX, 0) and cache.last_event == "stored"
    expected = next_logits(llm, len(PREFIX), 42)
    llm.close()
    return cache.path_for(PREFIX), expected


@pytest.mark.slow
def test_restored_state_continues_exactly_like_a_fresh_prefill(random_gguf, tmp_path):
    state_file, expected = stored_state(random_gguf, tmp_path)
    assert state_file.parent == tmp_path / "cache" and state_file.stat().st_size > 0
    llm = fresh_llm(random_gguf)
    cache = cache_for(llm, random_gguf, tmp_path)
    assert cache.restore(llm.ctx, PREFIX, 0) and cache.last_event == "hit"
    np.testing.assert_array_equal(next_logits(llm, len(PREFIX), 42), expected)
    llm.close()


@pytest.mark.slow
def test_miss_leaves_the_sequence_empty(random_gguf, tmp_path):
    import llama_cpp

    llm = fresh_llm(random_gguf)
    llm.eval([5, 6, 7])
    cache = cache_for(llm, random_gguf, tmp_path)
    assert not cache.restore(llm.ctx, PREFIX, 0) and cache.last_event == "miss"
    assert llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(llm.ctx), 0) == -1
    llm.close()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "truncate_header", "garbage",
                                    "empty", "other_tokens"])
def test_damaged_file_is_rejected_deleted_and_rebuilt(random_gguf, tmp_path, damage):
    state_file, expected = stored_state(random_gguf, tmp_path)
    data = bytearray(state_file.read_bytes())
    if damage == "flip_payload":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "truncate_header":
        data = data[:20]
    elif damage == "garbage":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    elif damage == "empty":
        data = bytearray()
    elif damage == "other_tokens":   # a well-formed file whose header lists other tokens
        start = data.index(b'"tokens": [') + len(b'"tokens": [')
        data[start:start + 1] = b"9"
    state_file.write_bytes(bytes(data))

    llm = fresh_llm(random_gguf)
    cache = cache_for(llm, random_gguf, tmp_path)
    assert not cache.restore(llm.ctx, PREFIX, 0)
    assert cache.last_event.startswith("rejected")
    assert not state_file.exists()
    # Rebuilt: prefill, store, and a fresh context restores it again, with the same numbers.
    llm.eval(PREFIX)
    assert cache.store(llm.ctx, PREFIX, 0)
    other = fresh_llm(random_gguf)
    assert cache.restore(other.ctx, PREFIX, 0)
    np.testing.assert_array_equal(next_logits(other, len(PREFIX), 42), expected)
    llm.close()
    other.close()


@pytest.mark.slow
def test_another_model_of_the_same_architecture_does_not_load_the_state(random_gguf, other_gguf,
                                                                         tmp_path):
    state_file, _ = stored_state(random_gguf, tmp_path)
    llm = fresh_llm(other_gguf)
    cache = cache_for(llm, other_gguf, tmp_path)
    assert cache.path_for(PREFIX) != state_file            # keyed by the model's identity
    assert not cache.restore(llm.ctx, PREFIX, 0) and cache.last_event == "miss"
    # Even under the other model's file name, the key inside the file does not match.
    state_file.rename(cache.path_for(PREFIX))
    assert not cache.restore(llm.ctx, PREFIX, 0)
    assert "another model" in cache.last_event and not cache.path_for(PREFIX).exists()
    llm.close()


@pytest.mark.slow
def test_another_kv_layout_or_prefix_misses(random_gguf, tmp_path):
    stored_state(random_gguf, tmp_path)
    llm = fresh_llm(random_gguf, n_ctx=1024)
    cache = cache_for(llm, random_gguf, tmp_path)
    assert not cache.restore(llm.ctx, PREFIX, 0) and cache.last_event == "miss"
    llm.close()
    llm = fresh_llm(random_gguf)
    cache = cache_for(llm, random_gguf, tmp_path)
    assert not cache.restore(llm.ctx, PREFIX[:-1], 0) and cache.last_event == "miss"
    llm.close()


@pytest.mark.slow
def test_store_refuses_a_sequence_that_holds_more_than_the_prefix(random_gguf, tmp_path):
    llm = fresh_llm(random_gguf)
    llm.eval(PREFIX + [13])
    cache = cache_for(llm, random_gguf, tmp_path)
    assert not cache.store(llm.ctx, PREFIX, 0)
    assert not cache.path_for(PREFIX).exists()
    llm.close()


@pytest.mark.slow
def test_size_cap_evicts_least_recently_used(random_gguf, tmp_path):
    llm = fresh_llm(random_gguf)
    one = cache_for(llm, random_gguf, tmp_path)
    prefixes = [PREFIX, PREFIX[1:], PREFIX[2:]]
    paths = []
    for i, prefix in enumerate(prefixes):
        llm.n_tokens = 0
        llm.eval(prefix)
        assert one.store(llm.ctx, prefix, 0)
        paths.append(one.path_for(prefix))
        os.utime(paths[-1], ns=(i * 10**9, i * 10**9))      # distinct ages
    size = paths[0].stat().st_size
    # Restoring the oldest makes it the most recently used.
    assert one.restore(llm.ctx, prefixes[0], 0)
    capped = cache_for(llm, random_gguf, tmp_path, max_bytes=2 * size + size // 2)
    llm.n_tokens = 0
    llm.eval(PREFIX[3:])
    assert capped.store(llm.ctx, PREFIX[3:], 0)
    remaining = set((tmp_path / "cache").glob("*.kvstate"))
    assert remaining == {paths[0], capped.path_for(PREFIX[3:])}
    llm.close()


def test_model_hash_is_computed_once_per_file_version(random_gguf, tmp_path):
    directory = tmp_path / "cache"
    sha = remembered_sha256(random_gguf, directory)
    import hashlib

    assert sha == hashlib.sha256(random_gguf.read_bytes()).hexdigest()
    record = next(directory.glob("*.json"))
    saved = json.loads(record.read_text())
    record.write_text(json.dumps({**saved, "sha256": "f" * 64}))
    assert remembered_sha256(random_gguf, directory) == "f" * 64      # trusted: not hashed again
    st = random_gguf.stat()
    os.utime(random_gguf, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    try:
        assert remembered_sha256(random_gguf, directory) == sha       # touched: hashed again
    finally:
        os.utime(random_gguf, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_directory_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("RA_LITE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "ra-lite" / "prompt-cache"


# --- through the Judge ---------------------------------------------------------------------------
def judge_once(path, **load_kwargs):
    import ra_lite

    notices = []
    with ra_lite.load(path, n_ctx=1024, notify=notices.append, **load_kwargs) as judge:
        result = judge.judge("Prefer the correct answer.", "2+2?", {"a": "4", "b": "5"},
                             think_budget=12, temperature=0.0)
        engine = judge.backend.engine
        return result, engine.prompt_cache_event, judge.backend.shared_prefix_tokens(), notices


def same_judgment(a, b):
    assert a.raw_text == b.raw_text
    assert a.scores == b.scores and a.ranking == b.ranking
    assert a.think_token_ids == b.think_token_ids
    assert a.score_probabilities == b.score_probabilities


@pytest.mark.slow
def test_judgment_after_restore_equals_one_after_a_fresh_prefill(random_gguf):
    uncached, event, prefix, _ = judge_once(random_gguf, prompt_cache=False)
    assert event == "" and len(prefix) > 20
    assert not default_cache_dir().exists()          # disabled: nothing read or written

    # Every judgment attaches the prefix sequence's cells (prompt_reused); what the prompt
    # cache changes is how those cells got there: prefilled and stored, or restored.
    assert uncached.tokens.prompt_reused == len(prefix)
    first, event, _, notices = judge_once(random_gguf)
    assert event == "stored" and first.tokens.prompt_reused == len(prefix)
    assert any("stored" in n for n in notices)
    assert len(list(default_cache_dir().glob("*.kvstate"))) == 1
    same_judgment(uncached, first)

    second, event, _, notices = judge_once(random_gguf)
    assert event == "hit" and any("restored" in n for n in notices)
    assert second.tokens.prompt_reused == len(prefix)
    same_judgment(first, second)


@pytest.mark.slow
def test_judge_rebuilds_a_damaged_state(random_gguf):
    first, _, _, _ = judge_once(random_gguf)
    (state_file,) = default_cache_dir().glob("*.kvstate")
    data = bytearray(state_file.read_bytes())
    data[len(data) // 2] ^= 0x55
    state_file.write_bytes(bytes(data))

    rebuilt, event, _, notices = judge_once(random_gguf)
    assert event == "stored" and any("rejected" in n for n in notices)
    assert state_file.read_bytes() != bytes(data)
    same_judgment(first, rebuilt)
    third, event, _, _ = judge_once(random_gguf)
    assert event == "hit"
    same_judgment(first, third)


@pytest.mark.slow
def test_parallel_judging_restores_the_saved_prefix_and_judges_the_same(random_gguf):
    """The multi-sequence context builds on the same saved states: its prefix sequence is
    restored instead of evaluated, and greedy judgments are unchanged by it."""
    import ra_lite
    from ra_lite.judge import JudgeOptions
    from ra_lite.request import JudgeRequest

    requests = [JudgeRequest.create("Prefer the correct answer.", f"{i}+2?",
                                    {"a": str(i + 2), "b": str(i + 3)}) for i in range(3)]
    options = JudgeOptions(think_budget=8, temperature=0.0)

    def parallel_once(**load_kwargs):
        notices = []
        with ra_lite.load(random_gguf, n_ctx=2048, notify=notices.append,
                          **load_kwargs) as judge:
            results = list(judge.judge_many(requests, options, parallel=2))
        return results, [n for n in notices if n.startswith("prompt cache")]

    fresh, notices = parallel_once(prompt_cache=False)
    assert notices == [] and not default_cache_dir().exists()
    stored, notices = parallel_once()
    assert len(notices) == 1 and "stored" in notices[0]
    assert len(list(default_cache_dir().glob("*.kvstate"))) == 1
    restored, notices = parallel_once()
    assert len(notices) == 1 and "restored" in notices[0]
    for a, b, c in zip(fresh, stored, restored):
        same_judgment(a, b)
        same_judgment(a, c)
