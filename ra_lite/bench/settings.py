"""The generation settings of a mini-RABench run.

Results are kept in ra-lite's judgment cache (ra_lite.judgment_cache), keyed by the model's
sha256, these settings and the item's exact request: that is what makes a bench run resumable
(a rerun finds what an interrupted one finished), what lets a new quant be compared with a
reference without judging the reference again, and what `ra-lite batch` shares with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ra_lite.defaults import DEFAULT_N_CTX
from ra_lite.options import JudgeOptions

# Greedy: differences between quants should come from the weights, not from sampling noise.
BENCH_DEFAULTS = {"think_budget": 512, "temperature": 0.0, "top_p": 1.0}


@dataclass(frozen=True)
class BenchSettings:
    """A bench run's JudgeOptions (greedy by default, BENCH_DEFAULTS) and context size."""

    options: JudgeOptions = field(default_factory=lambda: JudgeOptions(**BENCH_DEFAULTS))
    n_ctx: int = DEFAULT_N_CTX

    @property
    def think_budget(self) -> int:
        return self.options.think_budget

    def with_budget(self, think_budget: int) -> "BenchSettings":
        return replace(self, options=replace(self.options, think_budget=think_budget))

    def to_dict(self) -> dict:
        return {**asdict(self.options), "n_ctx": self.n_ctx}
