"""Render the chat prompt with the model's own template (from the GGUF metadata).

Rendered the way Hugging Face's apply_chat_template does (sandboxed Jinja, trim_blocks,
lstrip_blocks, `raise_exception`, a non-ASCII-preserving `tojson`), since that is how the
official runtime built the prompts the model was trained and evaluated on.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from ra_lite.errors import RaLiteError

# Qwen3 (RewardAnything's base) uses ChatML; used only when a GGUF carries no template at all.
CHATML_FALLBACK = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _raise(message: str):
    raise RaLiteError(f"the model's chat template refused the prompt: {message}",
                      "use a GGUF whose template accepts a system and a user message")


@lru_cache(maxsize=8)
def _compile(template: str):
    """Compiling a template takes ~20 ms; a judge renders the same one for every request."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda value, indent=None, **_: json.dumps(
        value, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(template: str, messages: list[dict[str, str]], *, enable_thinking: bool,
                bos_token: str = "", eos_token: str = "") -> str:
    from jinja2 import TemplateError

    try:
        return _compile(template).render(
            messages=messages, add_generation_prompt=True, enable_thinking=enable_thinking,
            bos_token=bos_token, eos_token=eos_token, tools=None)
    except TemplateError as e:
        raise RaLiteError(f"the model's chat template failed to render ({e})",
                          "the GGUF's tokenizer.chat_template is broken; re-convert it") from None
