"""RewardAnything's input contract: system prompt, user message and name masking.

Adapted from the official `rewardanything` package, version 1.0.1, file `rewardanything/processing.py`
(SYSTEM_PROMPT, make_masked_responses, prepare_chat_messages), Copyright the RewardAnything
authors, licensed under the Apache License 2.0. The model was trained on exactly this text, so
it is kept byte-identical; tests/test_prompt.py checks it against a fixture made from the
official code. Changes from the original: the shuffle uses a private `random.Random(42)` instead
of reseeding the global `random` module (same permutation, no side effect on the caller), and the
functions return a dataclass instead of a tuple.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

SYSTEM_PROMPT = """
You are an evaluator judging model responses based on a given **evaluation principle**. Your primary goal is to assess how well each response for the prompt adheres to the principle, placing this above typical general preferences, though you should not endorse harmful content.

Your task:
1. Read the principle, prompt, and all responses carefully and consider how each response aligns with the principle, **briefly in a concise thinking process**
2. Score each response from 1-5:
   - 5: Perfect adherence + excellent quality
   - 4: Strong adherence with minor limitations
   - 3: Basic adherence
   - 2: Partial adherence with key omissions
   - 1: Poor adherence or contradicts principle
3. Sort responses from best to worst (distinguish between same scores)

Use the scoring scale accurately based on merit - don't compress scores if responses show significant quality differences. If responses vary substantially in quality, utilize the full range (1-5) to reflect these differences.

Output ONLY this JSON format:
{
  "scores": {"model-1": 2, "model-2": 4, ...},
  "best-to-worst": ["model-2", "model-1", ...]
}
"""

# The official code seeds the shuffle with 42 before every request, so the mapping from
# caller names to masked names depends only on the number of responses.
MASKING_SEED = 42


@dataclass(frozen=True)
class ChatPrompt:
    """The two chat messages the model sees, and how masked names map back."""

    messages: list[dict[str, str]]
    masked_to_real: dict[str, str]

    @property
    def masked_names(self) -> list[str]:
        """model-1..model-N, in the order the model saw them."""
        return list(self.masked_to_real)


def mask_responses(responses: dict[str, str], order: tuple[int, ...] | None = None
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """Rename responses to model-1..model-N in the official seed-42 shuffled order.

    order: another presentation of the same responses (ra_lite.orders): order[i] is the index,
    in the official shuffled order, of the response shown as model-(i+1). None (or the
    identity) is the official order itself. Returns (masked responses, masked name -> caller name).
    """
    pairs = list(responses.items())
    random.Random(MASKING_SEED).shuffle(pairs)
    if order is not None:
        assert sorted(order) == list(range(len(pairs))), order
        pairs = [pairs[i] for i in order]
    masked_names = [f"model-{i + 1}" for i in range(len(pairs))]
    masked = {masked: text for masked, (_, text) in zip(masked_names, pairs)}
    masked_to_real = {masked: real for masked, (real, _) in zip(masked_names, pairs)}
    return masked, masked_to_real


def user_message(principle: str, prompt: str, masked_responses: dict[str, str]) -> str:
    """The user turn: one JSON object, non-ASCII kept as is (ensure_ascii=False)."""
    return json.dumps(
        {"principle": principle, "prompt": prompt, "responses": masked_responses},
        ensure_ascii=False,
    )


def build_chat_prompt(principle: str, prompt: str, responses: dict[str, str],
                      order: tuple[int, ...] | None = None) -> ChatPrompt:
    """The official prepare_chat_messages(..., mask_responses=True); `order` presents the
    responses in another order (see mask_responses), the text around them unchanged."""
    masked, masked_to_real = mask_responses(responses, order)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_message(principle, prompt, masked)},
    ]
    return ChatPrompt(messages=messages, masked_to_real=masked_to_real)
