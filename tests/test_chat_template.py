"""Prompt rendering from the GGUF's own template, incl. a Qwen3-style thinking switch."""

import pytest

import ra_lite
from ra_lite.chat_template import render_chat
from ra_lite.errors import RaLiteError
from ra_lite.grammar import parse_answer
from tests.support.random_gguf import write_random_gguf

# Written for these tests in the style of Qwen3's template: ChatML, and an empty think block in
# the generation prompt when enable_thinking is false.
QWEN3_STYLE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
MESSAGES = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]


def test_thinking_switch_is_passed_to_the_template():
    on = render_chat(QWEN3_STYLE, MESSAGES, enable_thinking=True)
    off = render_chat(QWEN3_STYLE, MESSAGES, enable_thinking=False)
    assert on == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"


def test_template_errors_become_clear_errors():
    with pytest.raises(RaLiteError, match="refused the prompt: no system"):
        render_chat("{{ raise_exception('no system') }}", MESSAGES, enable_thinking=True)
    with pytest.raises(RaLiteError, match="failed to render"):
        render_chat("{% for %}", MESSAGES, enable_thinking=True)


@pytest.fixture(scope="module")
def qwen3_style_judge(tmp_path_factory, embedded_path):
    path = write_random_gguf(tmp_path_factory.mktemp("q3") / "q3.gguf", embedded_path, seed=7,
                             chat_template=QWEN3_STYLE)
    judge = ra_lite.load(path, n_ctx=2048, notify=lambda m: None)
    yield judge
    judge.close()


def test_thinking_off_uses_the_templates_empty_think_block(qwen3_style_judge):
    result = qwen3_style_judge.judge("P", "Q", {"a": "1", "b": "2"}, think_budget=0)
    assert result.raw_text.startswith("{") and result.reasoning == ""
    backend = qwen3_style_judge.backend
    from ra_lite.prompt import build_chat_prompt
    assert backend.render(build_chat_prompt("P", "Q", {"a": "1"}), False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_thinking_on_opens_the_block_itself(qwen3_style_judge):
    result = qwen3_style_judge.judge("P", "Q", {"a": "1", "b": "2"}, think_budget=5, temperature=1.0)
    assert result.raw_text.startswith("<think>\n")
    parse_answer(result.raw_text, list(result.masked_to_real))
    assert result.tokens.think <= 5
