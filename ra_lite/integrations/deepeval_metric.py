"""A DeepEval metric: RewardAnything scores an LLMTestCase's output under a principle.

    from deepeval import evaluate
    from deepeval.test_case import LLMTestCase
    from ra_lite.integrations.deepeval_metric import RaLiteMetric

    metric = RaLiteMetric("Prefer answers that cite a source.", model="ra-8b-Q4_K_M.gguf",
                          threshold=0.6)
    evaluate([LLMTestCase(input="...", actual_output="...")], [metric])

`score` is (expected score - 1) / 4 in [0, 1], `reason` the model's reasoning, `success` score >=
threshold. With `vs_expected=True` the output is judged listwise beside the test case's
expected_output. A judgment that fails sets `error` (DeepEval then reports the metric as errored,
success False) instead of a score. Needs deepeval installed; ra-lite itself never imports it.
"""

from __future__ import annotations

import asyncio

from deepeval.metrics import BaseMetric

from ra_lite.integrations.verdicts import judge_output, judge_with_options


class RaLiteMetric(BaseMetric):
    def __init__(self, principle: str, model: str | None = None, server: str | None = None, *,
                 threshold: float = 0.5, vs_expected: bool = False,
                 api_key: str | None = None, **judge_options):
        self.principle, self.model_path, self.server = principle, model, server
        self.threshold, self.vs_expected, self.api_key = threshold, vs_expected, api_key
        self.judge_options = judge_options
        self.include_reason = True
        self.async_mode = True
        self.evaluation_model = "RewardAnything via ra-lite"

    def measure(self, test_case, *args, **kwargs) -> float | None:
        from ra_lite.errors import RaLiteError

        self.error = None
        try:
            judge, options = judge_with_options(self.model_path, self.server, self.api_key,
                                                self.judge_options)
        except RaLiteError as error:
            return self._failed(error.one_line())
        reference = test_case.expected_output if self.vs_expected else None
        verdict = judge_output(judge, self.principle, test_case.input or "",
                               test_case.actual_output or "", reference, options)
        if not verdict.judged:
            return self._failed(verdict.reason)
        self.score, self.reason = verdict.value, verdict.reason
        self.score_breakdown = {"score": verdict.score, "expected_score": verdict.expected_score}
        self.success = self.score >= self.threshold
        return self.score

    async def a_measure(self, test_case, *args, **kwargs) -> float | None:
        return await asyncio.to_thread(self.measure, test_case)

    def _failed(self, why: str) -> None:
        self.score, self.reason, self.error, self.success = None, None, why, False
        return None

    def is_successful(self) -> bool:
        return self.error is None and self.score is not None and self.score >= self.threshold

    @property
    def __name__(self):
        return "RewardAnything (ra-lite)"
