"""The verifiers judge plugin "ra-lite-judge", installed as the top-level module `ra_lite_judge`
(verifiers imports a plugin id as a top-level module): ra_lite.integrations.verifiers_judge."""

from ra_lite.integrations.verifiers_judge import RaLiteJudge, RaLiteJudgeConfig

__all__ = ["RaLiteJudge", "RaLiteJudgeConfig"]
