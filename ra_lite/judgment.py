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
class ServerWork:
    """What a judgment cost a remote server (ra_lite.remote), and how it was answered.

    route: "choices" (free reasoning, then one one-token request per choice point, scores read
    from the server's probabilities) or "grammar" (the answer decoded on the server under GBNF
    grammars: integer scores only). choices_by_grammar: choice points answered by a one-token
    grammar request because no allowed token was among the probabilities the server returned
    (those choices have no probabilities, so the judgment has no expected scores).
    cache_lost: follow-up requests whose prompt the server re-processed from the start (its
    slot had lost the judgment's prefix: see the README's llama-server flags).
    """

    route: str
    requests: int = 0
    tokens_generated: int = 0        # tokens the server sampled (reasoning, grammar answers)
    prompt_tokens_evaluated: int = 0  # prompt tokens the server ran (not served from its cache)
    choices_by_grammar: int = 0
    cache_lost: int = 0

    def count(self, generated: int, prompt_tokens: int, cached: int | None) -> None:
        """One completion request: what the server sampled, and the prompt tokens it ran (all of
        them when it does not say how many its cache served)."""
        self.requests += 1
        self.tokens_generated += generated
        self.prompt_tokens_evaluated += max(0, prompt_tokens - (cached or 0))

    def add(self, other: "ServerWork") -> "ServerWork":
        """Two orders' work as one (the route of the first)."""
        return ServerWork(self.route, *(getattr(self, f) + getattr(other, f) for f in
                                        ("requests", "tokens_generated", "prompt_tokens_evaluated",
                                         "choices_by_grammar", "cache_lost")))


@dataclass
class Consistency:
    """How much a request's per-order verdicts agree (ra_lite.orders says how each is computed)."""

    n_orders: int
    pairwise_agreement: float | None     # None with one response (no pairs)
    top1_agreement: float
    score_spread: dict[str, int]
    expected_score_spread: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


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
    # Judged under several response orders (ra_lite.orders): every order's own verdict, the
    # first being the official order's, and how much they agree. None for one order.
    orders: list["Judgment"] | None = field(default=None, repr=False)
    consistency: Consistency | None = None
    # Speculative reasoning: {"drafted", "accepted", "steps"} token counts (None when off).
    speculative: dict | None = None
    cached: bool = False                        # answered from the judgment cache
    server: ServerWork | None = None            # judged on a server: its work (None: local)

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
        if fields.get("orders"):
            fields["orders"] = [cls.from_record(r) for r in fields["orders"]]
        if fields.get("consistency"):
            fields["consistency"] = Consistency(**fields["consistency"])
        if fields.get("server"):
            fields["server"] = ServerWork(**fields["server"])
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
            "cached": self.cached,
        }
        if self.speculative is not None:
            details["speculative"] = dict(self.speculative)
        if self.server is not None:
            details["server"] = asdict(self.server)
        if self.orders:
            details["orders"] = [verdict.order_entry(i + 1) for i, verdict in
                                 enumerate(self.orders)]
            details["consistency"] = self.consistency.to_dict()
        return {
            "thoughts": self.reasoning,
            "results": {"scores": self.scores, "best-to-worst": self.ranking},
            "ra_lite": details,
        }


    def order_entry(self, number: int) -> dict:
        """This verdict as one entry of a multi-order result's ra_lite.orders."""
        return {"order": number, "masked_to_real": self.masked_to_real,
                "results": {"scores": self.scores, "best-to-worst": self.ranking},
                "expected_scores": self.expected_scores, "thoughts": self.reasoning,
                "think_end": self.think_end, "tokens": asdict(self.tokens)}


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

    @property
    def order_consistent(self) -> bool | None:
        """Judged in both orders (orders=2, the swap test): did both put the same one first?
        None when judged in one order only."""
        c = self.judgment.consistency
        return None if c is None else c.pairwise_agreement == 1.0

    def to_dict(self) -> dict:
        return {"winner": self.winner, "score_a": self.score_a, "score_b": self.score_b,
                "tie": self.tie, "order_consistent": self.order_consistent,
                "judgment": self.judgment.to_dict()}
