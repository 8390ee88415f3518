"""The input contract is byte-identical to the official rewardanything 1.0.1 code."""

import json
import random
from pathlib import Path

import pytest

from ra_lite.prompt import SYSTEM_PROMPT, build_chat_prompt, mask_responses

CASES = json.loads((Path(__file__).parent / "fixtures" / "official_contract.json").read_text("utf-8"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["input"]["principle"][:20])
def test_messages_match_the_official_package_byte_for_byte(case):
    given = case["input"]
    chat = build_chat_prompt(given["principle"], given["prompt"], given["responses"])
    assert chat.messages == case["messages"]
    assert [m["content"].encode() for m in chat.messages] == \
        [m["content"].encode() for m in case["messages"]]
    assert chat.masked_to_real == case["masked2real"]


def test_system_prompt_is_the_official_text():
    assert SYSTEM_PROMPT == CASES[0]["messages"][0]["content"]
    assert SYSTEM_PROMPT.startswith("\nYou are an evaluator") and SYSTEM_PROMPT.endswith("}\n")


def test_masking_leaves_the_global_random_state_alone():
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    mask_responses({"a": "1", "b": "2", "c": "3"})
    assert [random.random() for _ in range(3)] == expected


def test_mapping_depends_only_on_the_number_of_responses():
    _, first = mask_responses({"a": "x", "b": "y", "c": "z"})
    _, second = mask_responses({"p": "1", "q": "2", "r": "3"})
    order = {"a": "p", "b": "q", "c": "r"}
    assert {k: order[v] for k, v in first.items()} == second


def test_non_ascii_is_kept_unescaped():
    chat = build_chat_prompt("礼貌", "¿Qué?", {"x": "🙂"})
    assert "礼貌" in chat.messages[1]["content"] and "🙂" in chat.messages[1]["content"]
