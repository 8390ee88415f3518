"""ra-lite: RewardAnything judgments from quantized GGUF models on llama.cpp.

    import ra_lite
    judge = ra_lite.load("RewardAnything-8B-v1.Q4_K_M.gguf")
    result = judge.judge(principle, prompt, {"a": "...", "b": "..."})
    result.scores, result.ranking, result.reasoning

Importing the package is cheap: names resolve on first use, and llama_cpp loads only with a model.
"""

from ra_lite.errors import RaLiteError

__version__ = "0.1.0"

_LAZY = {
    "load": "ra_lite.judge", "Judge": "ra_lite.judge", "JudgeOptions": "ra_lite.judge",
    "Judgment": "ra_lite.judgment", "Comparison": "ra_lite.judgment",
    "JudgeRequest": "ra_lite.request",
}
__all__ = [*_LAZY, "RaLiteError", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ra_lite' has no attribute {name!r}")
