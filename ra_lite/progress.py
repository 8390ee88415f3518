"""Progress for commands that run many judgments (`batch`, `bench`), on stderr.

A ProgressReporter is told about each finished judgment, in whatever order they finish (a
parallel engine completes them out of order), and shows judgments/s and generated tokens/s
next to tqdm's bar. Rates are over this run's wall time since the reporter started, so a
resumed batch is not credited with work done by an earlier run.
"""

from __future__ import annotations

import sys
import time


def generated_tokens(judgment) -> int:
    """Tokens a judgment generated (reasoning + answer), from a Judgment or its to_dict() record;
    0 for an error record or None."""
    if judgment is None:
        return 0
    if isinstance(judgment, dict):
        tokens = judgment.get("ra_lite", {}).get("tokens") or judgment.get("tokens") or {}
        return int(tokens.get("think", 0)) + int(tokens.get("answer", 0))
    return judgment.tokens.think + judgment.tokens.answer


class ProgressReporter:
    """A tqdm bar with judgments/s and tokens/s. Use update(judgment) once per judgment."""

    def __init__(self, total: int, done: int = 0, label: str = "judging", unit: str = "req",
                 enabled: bool | None = None, count_tokens: bool = True):
        from tqdm import tqdm

        # enabled=None: tqdm's own rule, shown only when stderr is a terminal.
        self.bar = tqdm(total=total, initial=done, desc=label, unit=unit, file=sys.stderr,
                        disable=None if enabled is None else not enabled)
        self.count_tokens = count_tokens     # False for replays: nothing is generated
        self.started = time.perf_counter()
        self.judgments = 0
        self.tokens = 0

    def update(self, judgment=None) -> None:
        """One judgment finished (a Judgment, a batch record, or None for an error)."""
        self.judgments += 1
        self.tokens += generated_tokens(judgment)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rates = f"{self.judgments / elapsed:.2f} judgments/s"
        if self.count_tokens:
            rates += f", {self.tokens / elapsed:.1f} tok/s"
        self.bar.set_postfix_str(rates, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> "ProgressReporter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
