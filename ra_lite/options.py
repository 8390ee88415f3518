"""JudgeOptions: the generation settings of a judgment, defined once.

Everything that lists these settings derives from this module, so a new setting is added in one
place: the command-line flags (`ra_lite.cli.generation_options` builds its click options from
GENERATION_FLAGS, with per-command defaults: `bench` is greedy), the bench settings
(`ra_lite.bench.settings.BenchSettings` holds a JudgeOptions) and the judgment cache key
(`JudgeOptions.verdict_settings`). The bottom layer: it imports nothing that judges.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ra_lite.defaults import DEFAULT_TEMPERATURE, DEFAULT_THINK_BUDGET, DEFAULT_TOP_P
from ra_lite.errors import RaLiteError
from ra_lite.orders import check_orders


@dataclass(frozen=True)
class JudgeOptions:
    """Generation settings. The official runtime samples at temperature 0.1, top-p 0.9.

    think_budget: the most tokens the reasoning may take before ra-lite closes it; 0 turns
    thinking off (the paper reports ~8 accuracy points lost without it).
    repetition_guard: close the reasoning early when it has fallen into an exact loop (a span
    repeated back to back; see ra_lite.runtime.repetition), recorded as think_end "repetition".
    orders: judge each request under this many response orders and aggregate them
    (ra_lite.orders); 1 is the official order alone. At most N! for N responses.
    speculative: draft reasoning tokens by n-gram lookup and verify them in the same decode
    (local models; the output is distributed exactly as without it; see runtime/drafts.py).
    """

    think_budget: int = DEFAULT_THINK_BUDGET
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    seed: int = 0
    repetition_guard: bool = True
    orders: int = 1
    speculative: bool = False

    def __post_init__(self):
        if self.think_budget < 0:
            raise RaLiteError(f"think budget {self.think_budget} is negative",
                              "use 0 to turn thinking off, or a positive token count")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise RaLiteError("temperature must be >= 0 and top_p in (0, 1]",
                              "e.g. temperature 0.1, top_p 0.9 (the official settings)")
        object.__setattr__(self, "orders", check_orders(self.orders))

    @property
    def sampling(self):
        from ra_lite.runtime.decode import SamplingSettings

        return SamplingSettings(self.temperature, self.top_p, self.seed)

    @classmethod
    def from_settings(cls, settings: dict) -> "JudgeOptions":
        """From a command's keyword arguments (the GENERATION_FLAGS' parameters; `no_think`
        sets the budget to 0). Checked here, before any model loads."""
        values = {f.name: settings[f.name] for f in fields(cls) if f.name in settings}
        if settings.get("no_think"):
            values["think_budget"] = 0
        return cls(**values)

    def verdict_settings(self) -> dict:
        """The fields that decide a verdict (the judgment cache's key). Greedy decoding
        (temperature 0) reads neither the seed nor top-p, so they are left out there: a greedy
        CI job that changes only its seed still hits."""
        greedy = self.temperature <= 0
        return {"think_budget": self.think_budget,
                "temperature": 0.0 if greedy else self.temperature,
                "top_p": None if greedy else self.top_p, "seed": None if greedy else self.seed,
                "repetition_guard": self.repetition_guard, "orders": self.orders,
                "speculative": self.speculative}


@dataclass(frozen=True)
class Flag:
    """A JudgeOptions field as a command-line flag (ra_lite.cli builds the click option)."""

    field: str
    declaration: str                  # "--think-budget", or "--speculative/--no-speculative"
    help: str
    kind: type = int


GENERATION_FLAGS = (
    Flag("think_budget", "--think-budget",
         "Most tokens of reasoning before ra-lite closes the <think> block."),
    Flag("temperature", "--temperature", "Sampling temperature (0 = greedy).", float),
    Flag("top_p", "--top-p", "Nucleus sampling: keep the smallest set of tokens whose "
         "probability reaches this.", float),
    Flag("seed", "--seed", "Sampling seed (each judgment's sampler starts from it)."),
    Flag("repetition_guard", "--repetition-guard/--no-repetition-guard",
         "Close the reasoning early when it repeats a span back to back (an exact loop).", bool),
    Flag("orders", "--orders",
         "Judge each request under K response orders and aggregate them (order 1 is the "
         "official one; K=N is a Latin square). Reports how consistent the verdict is."),
    Flag("speculative", "--speculative/--no-speculative",
         "Draft reasoning tokens by n-gram lookup and verify them in the same decode (same "
         "output distribution; faster where the reasoning quotes its input).", bool),
)
assert {f.field for f in GENERATION_FLAGS} == {f.name for f in fields(JudgeOptions)}, \
    "every JudgeOptions field has exactly one flag"
