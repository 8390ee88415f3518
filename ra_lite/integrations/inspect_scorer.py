"""An Inspect AI scorer: RewardAnything grades each sample's output under a principle.

    from inspect_ai import Task, task
    from ra_lite.integrations.inspect_scorer import ra_lite_scorer

    @task
    def my_eval():
        return Task(dataset=..., solver=generate(),
                    scorer=ra_lite_scorer(principle="Prefer answers that cite a source.",
                                          model="RewardAnything-8B-v1.Q4_K_M.gguf"))

mode "pointwise" judges state.output.completion alone against the principle; "vs_target" judges it
listwise beside target.text (the reference answer) and reports the output's own score. The Score's
value is (expected score - 1) / 4 in [0, 1] (metrics mean() and stderr()), `answer` the output,
`explanation` the model's reasoning, metadata the scores, ranking, expected scores, how the
reasoning ended and (with orders > 1) the order consistency. A sample that cannot be judged is
Score.unscored(reason="grader_failed") with the reason in its explanation: never a number.

The judgment runs off the event loop (a worker thread), at most `max_concurrent` at once per
process (Inspect's own concurrency(): the same mechanism that bounds its model calls); a local
model judges them one after another through its judge queue. Needs `pip install 'ra-lite[inspect]'`
(inspect-ai); the rest of ra-lite never imports it.
"""

from __future__ import annotations

import asyncio

from ra_lite.errors import RaLiteError
from ra_lite.integrations.verdicts import judge_output, judge_with_options

MODES = ("pointwise", "vs_target")


def ra_lite_scorer(principle: str, model: str | None = None, server: str | None = None, *,
                   mode: str = "pointwise", api_key: str | None = None,
                   max_concurrent: int = 1, **judge_options):
    """The scorer factory (module docstring); judge_options: JudgeOptions fields
    (think_budget, temperature, top_p, seed, orders)."""
    try:
        from inspect_ai.scorer import Score, mean, scorer, stderr
        from inspect_ai.util import concurrency
    except ImportError:
        raise RaLiteError("the Inspect AI scorer needs inspect-ai",
                          "pip install 'ra-lite[inspect]' (or inspect-ai)") from None
    if mode not in MODES:
        raise RaLiteError(f"unknown mode {mode!r}", f"use one of {', '.join(MODES)}")
    if not principle or not principle.strip():
        raise RaLiteError("ra_lite_scorer needs a principle", "pass principle='...'")
    from ra_lite.options import JudgeOptions

    unknown = sorted(set(judge_options) - set(JudgeOptions.__dataclass_fields__))
    if unknown:                     # said now, not once per sample
        raise RaLiteError(f"ra_lite_scorer: unknown judge option(s) {unknown}",
                          "use JudgeOptions fields: think_budget, temperature, top_p, seed, "
                          "orders")

    @scorer(metrics=[mean(), stderr()], name="ra_lite")
    def build():
        async def score(state, target):     # (TaskState, Target) -> Score
            output = state.output.completion if state.output is not None else ""
            reference = target.text if mode == "vs_target" else None
            async with concurrency("ra-lite", max_concurrent):
                try:
                    judge, options = await asyncio.to_thread(
                        judge_with_options, model, server, api_key, judge_options)
                except RaLiteError as error:
                    return Score.unscored(reason="grader_failed", answer=output,
                                          explanation=error.one_line())
                verdict = await asyncio.to_thread(judge_output, judge, principle,
                                                  state.input_text, output, reference, options)
            if not verdict.judged:
                return Score.unscored(reason="grader_failed", answer=output,
                                      explanation=verdict.reason, metadata=verdict.metadata)
            return Score(value=verdict.value, answer=output, explanation=verdict.reason,
                         metadata={**verdict.metadata, "score": verdict.score,
                                   "expected_score": verdict.expected_score})
        return score

    return build()
