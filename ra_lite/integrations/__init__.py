"""ra-lite inside the frameworks evaluators and trainers already use (each an optional extra;
the judge never imports these modules, they import the judge).

Modules, in import order (each imports only those above it):

    verdicts          one judgment for one output (pointwise, or listwise against a reference)
                      or for several (listwise), mapped to [0, 1]; a failed judgment is a
                      Verdict with its reason, never an exception or a number
    promptfoo         a Python assertion: get_assert(output, context) -> GradingResult
    inspect_scorer    an Inspect AI scorer: ra_lite_scorer(principle=...) (needs inspect-ai)
    ruler             RULER-shaped group rewards: trajectory groups in, 0-1 scores out
    verifiers_judge   a verifiers (PrimeIntellect) judge plugin, id "ra-lite-judge" (needs
                      verifiers; installed as the top-level module ra_lite_judge too)
    deepeval_metric   a DeepEval metric: RaLiteMetric(principle=...) (needs deepeval)

Trainer reward functions live in ra_lite.rewards (TRL, verl, OpenRLHF).
"""
