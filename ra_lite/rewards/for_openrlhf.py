"""OpenRLHF's remote reward model interface over ra-lite judgments.

Two ways in, the same scoring:

* a server: `ra-lite serve MODEL --reward-principle "..."` answers POST /get_reward, so
  OpenRLHF is pointed at it with `--reward.remote_url http://judge-box:8000/get_reward`;
* a file: OpenRLHF loads a `.py` given as the remote URL and calls its `reward_func(queries,
  prompts, labels)`; this module is such a file (its path: `python -c "import
  ra_lite.rewards.for_openrlhf as m; print(m.__file__)"`). It judges with the model or server
  named by RA_LITE_REWARD_MODEL / RA_LITE_REWARD_SERVER and the principle in
  RA_LITE_REWARD_PRINCIPLE.

Request {"query": [...], "prompts": [...], "labels": [...]}; answer {"rewards": [...], "scores":
[...], "extra_logs": {...}}, one value per sample. `query` is the prompt and the response as
the policy's tokenizer decoded them, special tokens kept: the response is what follows the
prompt (when the query starts with it; else the text after the last assistant turn marker),
with trailing end-of-turn and padding tokens (`<|im_end|>`, `<|endoftext|>`, `</s>`,
`<|eot_id|>`, and any other `<|...|>`) removed; the prompt the judge sees is the last user turn
of a ChatML / Llama-3 prompt, with its markup removed.

OpenRLHF (0.10+) sends samples one at a time, without their group, so scoring is pointwise
against a reference, as in RewardAnything's own RL example: the label is the reference answer,
judged beside the response, reward = the response's score mapped to [0, 1] (`scores` the same,
as OpenRLHF wants them in [0, 1]); without a label the response is judged alone. A sample that
cannot be judged gets `failure_score` (0.5) and extra_logs["ra_lite_judged"] = 0.
"""

from __future__ import annotations

import logging
import os
import re

from ra_lite.errors import RaLiteError
from ra_lite.request import JudgeRequest

FAILURE_SCORE = 0.5
log = logging.getLogger("ra_lite.rewards")
_TRAILING_SPECIALS = re.compile(r"(?:\s*(?:<\|[^|<>\s]{1,40}\|>|</s>|<pad>))+\s*$")
_ANY_SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>|</?s>")
_ASSISTANT = re.compile(r"(?:<\|im_start\|>assistant\n|<\|start_header_id\|>assistant"
                        r"<\|end_header_id\|>\n\n|<\|assistant\|>\n?)")
_USER_TURNS = (re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL),
               re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)"
                          r"(?:<\|eot_id\|>|$)", re.DOTALL))


def split_response(query: str, prompt: str) -> str:
    """The response part of an OpenRLHF query (see the module docstring)."""
    if prompt and query.startswith(prompt):
        response = query[len(prompt):]
    else:
        turns = list(_ASSISTANT.finditer(query))
        response = query[turns[-1].end():] if turns else query
    return _TRAILING_SPECIALS.sub("", response).strip()


def prompt_text(prompt: str) -> str:
    """The judge's prompt: the last user turn of a templated prompt, markup removed."""
    for pattern in _USER_TURNS:
        turns = pattern.findall(prompt)
        if turns:
            return turns[-1].strip()
    return _ANY_SPECIAL.sub("", prompt).strip()


def reward_requests(queries: list[str], prompts: list[str], labels: list | None,
                    principle: str) -> list[JudgeRequest | RaLiteError]:
    """One pointwise request per sample (or the error that sample is)."""
    labels = list(labels) if labels is not None else [None] * len(queries)
    if not (len(queries) == len(prompts) == len(labels)):
        raise RaLiteError(f"{len(queries)} queries, {len(prompts)} prompts and {len(labels)} "
                          "labels", "send one prompt and one label per query")
    out: list = []
    for query, prompt, label in zip(queries, prompts, labels):
        responses = {"generated": split_response(str(query), str(prompt))}
        if isinstance(label, str) and label.strip():
            responses["reference"] = label
        try:
            if not responses["generated"]:
                raise RaLiteError("the response is empty", "nothing to judge")
            out.append(JudgeRequest.create(principle, prompt_text(str(prompt)) or "(none)",
                                           responses))
        except RaLiteError as e:
            out.append(e)
    return out


def assemble(outcomes: list, failure_score: float = FAILURE_SCORE) -> dict:
    """OpenRLHF's answer from per-sample outcomes (a Judgment-like object or an exception)."""
    from ra_lite.rewards.core import scores_of

    rewards, references, judged = [], [], []
    for outcome in outcomes:
        if outcome is None or isinstance(outcome, BaseException):
            if outcome is not None:
                log.warning("ra-lite reward: a sample could not be judged (%s); it gets %s",
                            getattr(outcome, "one_line", lambda: outcome)(), failure_score)
            rewards.append(failure_score)
            references.append(failure_score)
            judged.append(0.0)
            continue
        scores = scores_of(outcome)
        rewards.append((scores["generated"] - 1) / 4)
        references.append((scores.get("reference", 1) - 1) / 4)
        judged.append(1.0)
    return {"rewards": rewards, "scores": list(rewards),
            "extra_logs": {"ra_lite_judged": judged, "ra_lite_reference_score": references}}


def get_reward(judge, body: dict, principle: str, failure_score: float = FAILURE_SCORE,
               parallel="auto") -> dict:
    """The whole exchange on a judge (used by reward_func; the server uses its own queue)."""
    from ra_lite.judge_queue import JudgeQueue

    requests = reward_requests(body.get("query") or [], body.get("prompts") or [],
                               body.get("labels"), principle)
    outcomes: list = list(requests)
    todo = [(i, r) for i, r in enumerate(requests) if isinstance(r, JudgeRequest)]
    if todo:
        try:
            for finished in JudgeQueue(judge, parallel).each([r for _, r in todo]):
                outcomes[todo[finished.index][0]] = finished.error or finished.judgment
        except Exception as error:   # noqa: BLE001 - a reward must never stop training
            outcomes = [error if isinstance(o, JudgeRequest) else o for o in outcomes]
    return assemble(outcomes, failure_score)


def reward_func(queries, prompts, labels=None, **kwargs) -> dict:
    """OpenRLHF's file-based remote reward (--reward.remote_url /path/to/this/file.py)."""
    from ra_lite.rewards.core import judge_for

    principle = kwargs.get("principle") or os.environ.get("RA_LITE_REWARD_PRINCIPLE")
    if not principle:
        raise RaLiteError("no principle for the reward",
                          "set RA_LITE_REWARD_PRINCIPLE (or pass principle=...)")
    judge = judge_for(kwargs.get("model"), kwargs.get("server"))
    return get_reward(judge, {"query": list(queries), "prompts": list(prompts),
                              "labels": None if labels is None else list(labels)}, principle)
