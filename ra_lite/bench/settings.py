"""The generation settings of a mini-RABench run.

Results are kept in ra-lite's judgment cache (ra_lite.judgment_cache), keyed by the model's
sha256, these settings and the item's exact request: that is what makes a bench run resumable
(a rerun finds what an interrupted one finished), what lets a new quant be compared with a
reference without judging the reference again, and what `ra-lite batch` shares with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class BenchSettings:
    """Greedy by default: differences between quants should come from the weights, not from
    sampling noise."""

    think_budget: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    n_ctx: int = 8192
    repetition_guard: bool = True
    orders: int = 1               # response orders per item (ra_lite.orders)
    speculative: bool = False

    def options(self):
        """As ra_lite.judge.JudgeOptions (checks the values)."""
        from ra_lite.judge import JudgeOptions

        return JudgeOptions(think_budget=self.think_budget, temperature=self.temperature,
                            top_p=self.top_p, seed=self.seed,
                            repetition_guard=self.repetition_guard, orders=self.orders,
                            speculative=self.speculative)

    def with_budget(self, think_budget: int) -> "BenchSettings":
        return replace(self, think_budget=think_budget)

    def to_dict(self) -> dict:
        return asdict(self)
