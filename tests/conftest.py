"""Shared fixtures.

User state is isolated: every test gets its own HOME, Hugging Face cache and ra-lite cache, so
tests never read or write the developer's files. Real-model fixtures load once per session
(loading is the slow part) and are shared by the tests that only read from them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.random_gguf import write_random_gguf

# Where this machine keeps the compiled llama.cpp (scripts/llama_build_flags.sh's rule), read
# before any test isolates HOME: tests that run the install script or llama-server use it.
WHEEL_CACHE = Path(os.environ.get("RA_LITE_WHEEL_CACHE") or Path(
    os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ra-lite" / "wheels")


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RA_LITE_HOME", str(home / ".ra-lite"))


@pytest.fixture(scope="session")
def embedded_path():
    from ra_lite.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def smollm_judge():
    """The embedded SmolLM2 model, loaded once (read-only use: do not change its options)."""
    import ra_lite

    judge = ra_lite.load(None, n_ctx=4096, notify=lambda message: None)
    yield judge
    judge.close()


@pytest.fixture(scope="session")
def random_gguf(tmp_path_factory, embedded_path):
    """A random-weight Llama GGUF with SmolLM2's real tokenizer and chat template."""
    path = tmp_path_factory.mktemp("random") / "random-llama.gguf"
    write_random_gguf(path, tokenizer_from=embedded_path, seed=1234)
    return path


@pytest.fixture(scope="session")
def random_judge(random_gguf):
    import ra_lite

    judge = ra_lite.load(random_gguf, n_ctx=4096, notify=lambda message: None)
    yield judge
    judge.close()
