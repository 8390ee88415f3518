"""RULER-shaped group rewards: all completions of one prompt judged together, relative scores.

OpenPipe ART's RULER ranks a group of trajectories with an LLM judge and a rubric and returns
0-1 scores; GRPO users ask for the same from TRL (issue #4707). RewardAnything is a listwise judge
trained for exactly this, with a principle in place of RULER's rubric:

    from ra_lite.integrations.ruler import ruler, ruler_score_group
    scores = ruler([[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                    for a in answers], judge, principle="Prefer correct, concise answers.")
    # -> one score in [0, 1] per trajectory (None where it could not be judged)

A trajectory is a list of chat messages (or a string): the last assistant message is the
completion, the messages before it the prompt (they must be the same for every trajectory of a
group, else it is not a group). Scores are (expected score - 1) / 4 from one listwise judgment
(groups above MAX_GROUP are split around an anchor, as ra_lite.rewards does).
`ruler_score_group(group, ...)` takes an object with `.trajectories`, each with `.messages()`
or `.messages_and_choices` (ART's shape), and sets `.reward` on each, returning the group.
"""

from __future__ import annotations

from ra_lite.errors import RaLiteError
from ra_lite.rewards.core import MAX_GROUP, score_completions, text_of


def split_trajectory(messages) -> tuple[str, str]:
    """(prompt text, completion text) of one trajectory."""
    if isinstance(messages, str):
        return "", messages
    messages = [m if isinstance(m, dict) else {"role": getattr(m, "role", ""),
                                               "content": getattr(m, "content", "")}
                for m in messages]
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None:
        raise RaLiteError("a trajectory has no assistant message",
                          "give each trajectory the conversation ending in its completion")
    prompt = text_of(messages[:last]) if last else ""
    return prompt, text_of([messages[last]])


def ruler(message_lists: list, judge, principle: str, *, options=None,
          max_group: int = MAX_GROUP) -> list[float | None]:
    """A score in [0, 1] per trajectory of one group (module docstring)."""
    if not principle or not str(principle).strip():
        raise RaLiteError("no principle for ruler()", "pass principle='...' (RULER's rubric)")
    pairs = [split_trajectory(m) for m in message_lists]
    prompts = {p for p, _ in pairs}
    if len(prompts) > 1:
        raise RaLiteError(f"the trajectories have {len(prompts)} different prompts: not one group",
                          "call ruler() once per group of completions of the same prompt")
    rewards, _ = score_completions(judge, [p for p, _ in pairs], [c for _, c in pairs],
                                   [principle] * len(pairs), options=options,
                                   max_group=max_group)
    return rewards


def ruler_score_group(group, judge, principle: str, *, options=None):
    """ART's group shape: sets trajectory.reward for each of group.trajectories."""
    trajectories = list(group.trajectories)
    message_lists = []
    for t in trajectories:
        if callable(getattr(t, "messages", None)):
            message_lists.append(t.messages())
        else:
            message_lists.append(getattr(t, "messages_and_choices"))
    for trajectory, reward in zip(trajectories, ruler(message_lists, judge, principle,
                                                      options=options)):
        trajectory.reward = reward
    return group
