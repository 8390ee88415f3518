"""One reward per completion from listwise RewardAnything judgments, for RL trainers.

A GRPO group (G completions of one prompt) is what RewardAnything judges natively: all of them
in one listwise judgment against a natural-language principle. `plan_rewards` turns a trainer's
batch into judgment requests and back:

1. Completions are grouped by the content of their prompt and principle, never by position:
   trainers split groups across processes, so a batch may hold part of a group or several.
2. Empty completions, and groups left with fewer than two completions, get None (a listwise
   judge needs something to compare against; `neutral` for trainers that need a number). Each
   is counted and warned about once per call; nothing raises.
3. A group larger than `max_group` is split into balanced sub-lists that all contain the same
   anchor (the group's first completion): sub-lists of sizes differing by at most one, each
   with the anchor plus its share of the rest. Each sub-list's scores are shifted by (the
   anchor's mean score over the sub-lists - its score in that sub-list), so scores from
   different sub-lists are on one scale, and clipped to 1-5. Bigger lists cost more than
   linearly (the prompt holds every response) and the model was trained on RABench's 3-9.
4. The score of a completion is its expected score (the probability-weighted mean of 1-5 that
   local judges report; the integer score where a backend gives no probabilities, e.g. a remote
   server), mapped linearly to [0, 1]: (score - 1) / 4. With `orders > 1` the judgment is the
   order-robust aggregate (ra_lite.orders), so a completion's reward does not depend on where
   in the list the judge saw it.
5. A judgment that fails (the group does not fit the context, the server is down) gives its
   completions None, a warning and a counter: training goes on.

The judging itself is the caller's: `judge_plan` runs the requests through ra_lite's batching
(the judge queue: the slot scheduler on a local model, concurrent requests on a remote one); the
async TRL adapter sends them to a ra-lite server instead. Both feed the same `RewardPlan`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest

MAX_GROUP = 8            # completions in one listwise judgment before a group is split
log = logging.getLogger("ra_lite.rewards")


def text_of(value) -> str:
    """A prompt or completion as plain text: a string, or chat messages (TRL's conversational
    format: a list of {"role", "content"}); several messages become "role: content" lines,
    a single one its content."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(m, dict) for m in value):
        contents = [(m.get("role", ""), _content(m.get("content"))) for m in value]
        if len(contents) == 1:
            return contents[0][1]
        return "\n\n".join(f"{role}: {text}" if role else text for role, text in contents)
    raise RaLiteError(f"a prompt or completion is a {type(value).__name__}",
                      "pass text, or chat messages as a list of {'role', 'content'} dicts")


def _content(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):       # multimodal parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


@dataclass
class RewardStats:
    """What one call of a reward function did (logged through TRL's log_metric when given)."""

    completions: int = 0
    groups: int = 0
    judgments: int = 0
    failures: int = 0              # judgments that failed (their completions got None)
    unscored: int = 0              # completions that got None for any reason
    think_tokens: int = 0
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {"ra_lite/judgments": self.judgments, "ra_lite/failures": self.failures,
                "ra_lite/unscored": self.unscored,
                "ra_lite/mean_think_tokens": self.think_tokens / max(self.judgments, 1),
                "ra_lite/seconds": self.seconds}


@dataclass
class _Part:
    """One listwise judgment: which completions (by input index) it holds, under which names."""

    group: int
    members: list[int]             # input indices; members[0] is the anchor when split
    request: JudgeRequest


@dataclass
class RewardPlan:
    n: int
    parts: list[_Part]
    groups: list[list[int]]        # the judged indices of each group (anchor first)
    skipped: dict[int, str] = field(default_factory=dict)   # index -> why it got None
    neutral: float | None = None
    stats: RewardStats = field(default_factory=RewardStats)
    started: float = field(default_factory=time.perf_counter)
    reasoning: dict[int, str] = field(default_factory=dict)   # part index -> its reasoning

    @property
    def requests(self) -> list[JudgeRequest]:
        return [part.request for part in self.parts]

    def reasoning_of(self, index: int) -> str:
        """The judge's reasoning about completion `index` (every judgment that held it; the
        reason it has none when it was not judged)."""
        texts = [self.reasoning[k] for k, part in enumerate(self.parts)
                 if index in part.members and k in self.reasoning]
        if not texts and index in self.skipped:
            return f"(not judged: {self.skipped[index]})"
        return "\n\n".join(texts)

    def rewards(self, outcomes: list) -> list[float | None]:
        """outcomes[i] for parts[i]: a name -> score (1-5) mapping, or an exception."""
        rewards: list[float | None] = [None] * self.n
        by_group: dict[int, list[tuple[_Part, dict]]] = {}
        failed_groups: set[int] = set()
        for part, outcome in zip(self.parts, outcomes):
            if isinstance(outcome, BaseException) or outcome is None:
                self.stats.failures += 1
                failed_groups.add(part.group)
                log.warning("ra-lite reward: a judgment of %d completions failed (%s); they "
                            "get no reward", len(part.members),
                            outcome.one_line() if isinstance(outcome, RaLiteError) else outcome)
                continue
            by_group.setdefault(part.group, []).append((part, outcome))
        for group, parts in by_group.items():
            if group in failed_groups:
                continue              # a split group needs every sub-list to share its scale
            for index, score in _scaled(parts).items():
                rewards[index] = (min(5.0, max(1.0, score)) - 1.0) / 4.0
        self.stats.unscored = sum(r is None for r in rewards)
        self.stats.seconds = time.perf_counter() - self.started
        if self.neutral is not None:
            rewards = [self.neutral if r is None else r for r in rewards]
        return rewards


def _scaled(parts: list[tuple[_Part, dict]]) -> dict[int, float]:
    """Scores by input index; sub-lists of a split group shifted onto the anchor's scale."""
    names = lambda part: [f"completion-{k + 1}" for k in range(len(part.members))]  # noqa: E731
    if len(parts) == 1:
        part, scores = parts[0]
        return {i: scores[n] for i, n in zip(part.members, names(part))}
    anchor_scores = [scores[names(part)[0]] for part, scores in parts]
    anchor_mean = sum(anchor_scores) / len(anchor_scores)
    out: dict[int, float] = {parts[0][0].members[0]: anchor_mean}
    for (part, scores), anchor in zip(parts, anchor_scores):
        for i, n in list(zip(part.members, names(part)))[1:]:
            out[i] = scores[n] + anchor_mean - anchor
    return out


def plan_rewards(prompts: list, completions: list, principles: list[str], *,
                 max_group: int = MAX_GROUP, neutral: float | None = None) -> RewardPlan:
    """The listwise judgments that score `completions` (see the module docstring)."""
    if len(prompts) != len(completions) or len(principles) != len(completions):
        raise RaLiteError(f"{len(prompts)} prompts, {len(completions)} completions and "
                          f"{len(principles)} principles", "pass one of each per completion")
    if max_group < 2:
        raise RaLiteError(f"max_group {max_group} is below 2", "a listwise judgment compares two "
                          "or more completions: use max_group 2 or more")
    plan = RewardPlan(n=len(completions), parts=[], groups=[], neutral=neutral)
    plan.stats.completions = len(completions)
    grouped: dict[tuple[str, str], list[int]] = {}
    texts = [text_of(c) for c in completions]
    prompt_texts = [text_of(p) for p in prompts]
    for i, text in enumerate(texts):
        if not text.strip():
            plan.skipped[i] = "empty completion"
            continue
        grouped.setdefault((principles[i], prompt_texts[i]), []).append(i)
    for (principle, prompt), members in grouped.items():
        if len(members) < 2:
            plan.skipped.update({i: "alone in its group" for i in members})
            continue
        group = len(plan.groups)
        plan.groups.append(members)
        for chunk in _split(members, max_group):
            responses = {f"completion-{k + 1}": texts[i] for k, i in enumerate(chunk)}
            try:
                request = JudgeRequest.create(principle, prompt, responses)
            except RaLiteError as e:     # e.g. an empty principle: this group only
                plan.skipped.update({i: e.one_line() for i in members})
                plan.groups.pop()
                plan.parts = [p for p in plan.parts if p.group != group]
                break
            plan.parts.append(_Part(group, chunk, request))
    plan.stats.groups = len(plan.groups)
    plan.stats.judgments = len(plan.parts)
    if plan.skipped:
        reasons = sorted(set(plan.skipped.values()))
        log.warning("ra-lite reward: %d of %d completions get no reward (%s)", len(plan.skipped),
                    len(completions), "; ".join(reasons))
    return plan


def _split(members: list[int], max_group: int) -> list[list[int]]:
    """Balanced sub-lists of at most max_group, each holding the anchor members[0]."""
    if len(members) <= max_group:
        return [members]
    anchor, rest = members[0], members[1:]
    k = math.ceil(len(rest) / (max_group - 1))
    size, extra = divmod(len(rest), k)
    chunks, start = [], 0
    for j in range(k):
        end = start + size + (j < extra)
        chunks.append([anchor] + rest[start:end])
        start = end
    return chunks


def scores_of(judgment) -> dict[str, float]:
    """A judgment's per-response score: expected where probabilities exist, else integer."""
    return dict(judgment.expected_scores or judgment.scores)


def think_tokens_of(judgment) -> int:
    tokens = getattr(judgment, "tokens", None)
    return tokens.think if tokens is not None else getattr(judgment, "think_tokens", 0)


def judge_plan(judge, plan: RewardPlan, options=None, parallel="auto") -> list:
    """Run a plan's requests through ra-lite's batching; an outcome per part (scores or the
    exception), never raising for one failed judgment."""
    from ra_lite.judge_queue import JudgeQueue

    outcomes: list = [None] * len(plan.parts)
    if not plan.parts:
        return outcomes
    options = options or judge.options
    try:
        for finished in JudgeQueue(judge, parallel, options=options).each(plan.requests,
                                                                           options):
            if finished.error is not None:
                outcomes[finished.index] = finished.error
            else:
                outcomes[finished.index] = scores_of(finished.judgment)
                plan.stats.think_tokens += think_tokens_of(finished.judgment)
                plan.reasoning[finished.index] = getattr(finished.judgment, "reasoning", "")
    except Exception as error:   # noqa: BLE001 - a reward must never stop training
        log.warning("ra-lite reward: judging failed (%s: %s)", type(error).__name__, error)
        outcomes = [o if o is not None else error for o in outcomes]
    return outcomes


def score_completions(judge, prompts: list, completions: list, principles: list[str], *,
                      options=None, parallel="auto", max_group: int = MAX_GROUP,
                      neutral: float | None = None) -> tuple[list[float | None], RewardStats]:
    """Rewards in input order, one per completion, and what it took."""
    plan = plan_rewards(prompts, completions, principles, max_group=max_group, neutral=neutral)
    rewards = plan.rewards(judge_plan(judge, plan, options, parallel))
    return rewards, plan.stats


_JUDGES: dict = {}


def judge_for(model: str | None = None, server: str | None = None, api_key: str | None = None,
              **load_kwargs):
    """A judge for reward functions that trainers import by path (verl, OpenRLHF), made on
    first use and kept for the process: a running `ra-lite serve` (server=URL, or the
    RA_LITE_REWARD_SERVER variable) or a local GGUF (model=..., or RA_LITE_REWARD_MODEL;
    the embedded smoke-test model when neither is set)."""
    import os

    server = server or os.environ.get("RA_LITE_REWARD_SERVER") or None
    model = model or os.environ.get("RA_LITE_REWARD_MODEL") or None
    key = (server, model, tuple(sorted(load_kwargs.items())))
    if key not in _JUDGES:
        if server:
            from ra_lite.rewards.server_client import RewardServerClient

            _JUDGES[key] = RewardServerClient(server, api_key or
                                              os.environ.get("RA_LITE_API_KEY"))
        else:
            import ra_lite

            _JUDGES[key] = ra_lite.load(model, **load_kwargs)
    return _JUDGES[key]


def principles_for(n: int, principle: str | None, principle_key: str | None,
                   columns: dict) -> list[str]:
    """The principle of each of n samples: fixed, or from a dataset column the trainer passes."""
    if principle_key is not None:
        values = columns.get(principle_key)
        if values is None:
            raise RaLiteError(f"the batch has no {principle_key!r} column",
                              f"add a {principle_key!r} column to the dataset, or pass "
                              "principle=... instead of principle_key")
        values = list(values)
        if len(values) != n:
            raise RaLiteError(f"the {principle_key!r} column has {len(values)} values for "
                              f"{n} completions", "one principle per sample")
        return [str(v) for v in values]
    if not principle or not str(principle).strip():
        raise RaLiteError("no principle for the reward",
                          "pass principle='...' or principle_key='<dataset column>'")
    return [principle] * n
