"""A verifiers (PrimeIntellect, 0.4) judge plugin: environments name ra-lite as their judge.

    # a taskset config (TOML), or --taskset.task.judges on the command line
    [[taskset.task.judges]]
    id = "ra-lite-judge"
    principle = "Prefer answers that show their reasoning and end with the correct number."
    gguf = "RewardAnything-8B-v1.Q4_K_M.gguf"      # or server = "http://judge-box:8000"
    answer_field = "answer"                          # optional: judge beside the reference

verifiers resolves a judge id to an importable module that exports one Judge subclass in its
`__all__`; ra-lite installs that module as `ra_lite_judge` (a top-level name, as verifiers
requires), which re-exports RaLiteJudge from here. `score(task, trace)` judges the rollout's last
reply (or the full transcript, `view = "full_trace"`) under the principle — pointwise, or beside
the task's reference answer when `answer_field` names one — and returns (expected score - 1) / 4.
A judgment that fails raises, as verifiers' own judges do, so the sample is retried rather than
scored against the model. The judgment runs in a worker thread (it is CPU/GPU work, not I/O).
Needs verifiers installed; ra-lite itself never imports it.
"""

from __future__ import annotations

import asyncio

from verifiers.v1.configs.judge import JudgeConfig
from verifiers.v1.judge import Judge, JudgeView, judge_question, judge_response

from ra_lite.errors import RaLiteError
from ra_lite.integrations.verdicts import judge_output, judge_with_options

__all__ = ["RaLiteJudge", "RaLiteJudgeConfig"]


class RaLiteJudgeConfig(JudgeConfig):
    id: str = "ra-lite-judge"
    principle: str = ""
    gguf: str | None = None            # a local GGUF (path, registry name, hf://); else server
    server: str | None = None          # a running `ra-lite serve`
    api_key: str | None = None
    answer_field: str = ""             # a task field with a reference answer: judged beside it
    question_field: str = ""
    view: JudgeView = "last_reply"
    think_budget: int | None = None
    orders: int | None = None


class RaLiteJudge(Judge[float, RaLiteJudgeConfig]):
    async def score(self, task, trace) -> float:
        config = self.config
        if not config.principle.strip():
            raise ValueError("the ra-lite judge has no principle: set `principle` in its entry")
        reference = None
        if config.answer_field:
            reference = getattr(task, config.answer_field, None)
            if reference is None:
                raise ValueError(f"the ra-lite judge found no {config.answer_field!r} field on "
                                 "the task; point `answer_field` at the reference answer")
        verdict = await asyncio.to_thread(
            self._judge, judge_question(task, config.question_field),
            judge_response(trace, config.view), None if reference is None else str(reference))
        if not verdict.judged:
            raise RuntimeError(f"ra-lite could not judge the rollout: {verdict.reason}")
        return verdict.value

    def _judge(self, question: str, response: str, reference: str | None):
        config = self.config
        try:
            judge, options = judge_with_options(
                config.gguf, config.server, config.api_key,
                {"think_budget": config.think_budget, "orders": config.orders})
        except RaLiteError as error:
            raise RuntimeError(f"ra-lite judge: {error.one_line()}") from None
        return judge_output(judge, config.principle, question, response, reference, options)
