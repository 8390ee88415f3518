"""One output (or several) judged under a principle, as the frameworks' adapters need it.

    verdict = judge_output(judge, principle, prompt, output)                    # pointwise
    verdict = judge_output(judge, principle, prompt, output, reference=target)  # vs a target
    verdict.value          # (expected score - 1) / 4 in [0, 1]; None when not judged
    verdict.reason         # the model's reasoning (or why there is no verdict)

Pointwise: the output alone is judged against the principle (a listwise judge with one
response). Against a reference: the output and the reference in one listwise judgment, and the
output's own score is reported (the reference's is in the metadata). The value uses the expected
score (the probability-weighted 1-5) where the judgment has one, else the integer score. A
judgment that fails — the output does not fit the context, the server is down, an empty output —
is a Verdict with `value` None and the reason: each adapter maps that to its framework's own
"failed/unscored", never to a number that would be averaged in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest

OUTPUT, REFERENCE = "output", "reference"


@dataclass
class Verdict:
    value: float | None              # [0, 1]; None: not judged
    score: int | None = None         # the integer score 1-5
    expected_score: float | None = None
    reason: str = ""                 # the reasoning, or why there is no verdict
    metadata: dict = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        return self.value is not None

    @classmethod
    def failed(cls, why: str) -> "Verdict":
        return cls(None, reason=why, metadata={"error": why})


def judge_with_options(model: str | None, server: str | None, api_key: str | None = None,
                       overrides: dict | None = None):
    """(judge, options) for an adapter: the process-wide judge for a local GGUF or a ra-lite
    server (ra_lite.rewards.core.judge_for), and its options with the adapter's JudgeOptions
    fields laid over them (None when there are none: the judge's own apply)."""
    from dataclasses import replace

    from ra_lite.options import JudgeOptions
    from ra_lite.rewards.core import judge_for

    judge = judge_for(model, server, api_key)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return judge, None
    try:
        return judge, replace(judge.options or JudgeOptions(), **given)
    except TypeError as error:
        raise RaLiteError(f"unknown judge option ({error})",
                          "use JudgeOptions fields: think_budget, temperature, top_p, seed, "
                          "orders") from None


def to_unit(score: float) -> float:
    """A 1-5 score on [0, 1]."""
    return (float(score) - 1.0) / 4.0


def judge_output(judge, principle: str, prompt: str, output: str,
                 reference: str | None = None, options=None) -> Verdict:
    """The output's verdict (module docstring); never raises for the output's own problems."""
    if not isinstance(output, str) or not output.strip():
        return Verdict.failed("empty output: nothing to judge")
    responses = {OUTPUT: output}
    if reference is not None and str(reference).strip():
        responses[REFERENCE] = str(reference)
    try:
        judgment = judge.judge_request(JudgeRequest.create(principle, prompt, responses),
                                       options)
    except RaLiteError as error:
        return Verdict.failed(error.one_line())
    expected = (judgment.expected_scores or {}).get(OUTPUT)
    score = judgment.scores[OUTPUT]
    metadata = {"scores": dict(judgment.scores), "ranking": list(judgment.ranking),
                "expected_scores": judgment.expected_scores, "think_end": judgment.think_end}
    if judgment.consistency is not None:
        metadata["consistency"] = judgment.consistency.to_dict()
    return Verdict(to_unit(expected if expected is not None else score), score, expected,
                   judgment.reasoning, metadata)


def judge_outputs(judge, principle: str, prompt: str, outputs: list[str], options=None
                  ) -> list[Verdict]:
    """Several outputs of one prompt in one listwise judgment, a Verdict each (in order)."""
    names = [f"output-{i}" for i in range(1, len(outputs) + 1)]
    empty = [i for i, o in enumerate(outputs) if not isinstance(o, str) or not o.strip()]
    live = [(n, o) for i, (n, o) in enumerate(zip(names, outputs)) if i not in empty]
    if not live:
        return [Verdict.failed("empty output: nothing to judge") for _ in outputs]
    try:
        judgment = judge.judge_request(JudgeRequest.create(principle, prompt, dict(live)),
                                       options)
    except RaLiteError as error:
        return [Verdict.failed(error.one_line()) for _ in outputs]
    expected = judgment.expected_scores or {}
    verdicts = []
    for i, name in enumerate(names):
        if i in empty:
            verdicts.append(Verdict.failed("empty output: nothing to judge"))
            continue
        score = judgment.scores[name]
        value = expected.get(name, score)
        verdicts.append(Verdict(to_unit(value), score, expected.get(name), judgment.reasoning,
                                {"rank": judgment.ranking.index(name) + 1,
                                 "ranking": list(judgment.ranking)}))
    return verdicts
