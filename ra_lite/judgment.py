"""The result of one judgment, under the caller's response names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TokenCounts:
    prompt: int = 0
    prompt_reused: int = 0          # served from the KV cache of an earlier judgment
    think: int = 0
    answer: int = 0
    answer_evaluated: int = 0       # answer tokens the model actually had to run


@dataclass
class Timings:
    prefill_s: float = 0.0
    think_s: float = 0.0
    answer_s: float = 0.0
    total_s: float = 0.0


@dataclass
class Judgment:
    scores: dict[str, int]                      # caller's name -> 1..5
    ranking: list[str]                          # caller's names, best to worst
    reasoning: str
    raw_text: str                               # the model's output, with masked names
    masked_to_real: dict[str, str]              # model-k -> caller's name
    score_probabilities: dict[str, list[float]] | None = None   # caller's name -> P(1..5)
    think_truncated: bool = False               # the think budget closed the reasoning
    think_end: str = ""                         # off, model, budget, end_of_generation, replayed
    tokens: TokenCounts = field(default_factory=TokenCounts)
    timings: Timings = field(default_factory=Timings)
    model: str = ""
    # For replaying this output through another model (mini-RABench's KL divergence).
    think_token_ids: list[int] = field(default_factory=list, repr=False)
    think_closing: str = field(default="", repr=False)

    @property
    def best(self) -> str:
        return self.ranking[0]

    @property
    def expected_scores(self) -> dict[str, float] | None:
        """Probability-weighted score per response: finer than the integer score."""
        if not self.score_probabilities:
            return None
        return {name: sum((i + 1) * p for i, p in enumerate(probs))
                for name, probs in self.score_probabilities.items()}

    def to_record(self) -> dict:
        """Every field, losslessly (for caches); the inverse of from_record()."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "Judgment":
        fields = dict(record)
        fields["tokens"] = TokenCounts(**fields["tokens"])
        fields["timings"] = Timings(**fields["timings"])
        return cls(**fields)

    def to_dict(self) -> dict:
        """The official RewardAnything response shape, plus ra-lite's details under "ra_lite"."""
        details = {
            "raw_text": self.raw_text,
            "masked_to_real": self.masked_to_real,
            "score_probabilities": self.score_probabilities,
            "expected_scores": self.expected_scores,
            "think_truncated": self.think_truncated,
            "think_end": self.think_end,
            "tokens": asdict(self.tokens),
            "timings": asdict(self.timings),
            "model": self.model,
        }
        return {
            "thoughts": self.reasoning,
            "results": {"scores": self.scores, "best-to-worst": self.ranking},
            "ra_lite": details,
        }


@dataclass
class Comparison:
    """A pairwise judgment: which of two responses the principle prefers."""

    winner: str            # "a" or "b"
    score_a: int
    score_b: int
    judgment: Judgment

    @property
    def tie(self) -> bool:
        """Equal scores: `winner` is then the model's tie-break in its ranking."""
        return self.score_a == self.score_b

    def to_dict(self) -> dict:
        return {"winner": self.winner, "score_a": self.score_a, "score_b": self.score_b,
                "tie": self.tie, "judgment": self.judgment.to_dict()}
