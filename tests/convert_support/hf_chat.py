"""Render a chat template the way transformers' apply_chat_template does (transformers itself is not installed).

Mirrors transformers.utils.chat_template_utils._compile_jinja_template: an immutable sandbox with
trim_blocks and lstrip_blocks, the loopcontrols extension, a tojson filter that keeps non-ASCII,
and the raise_exception / strftime_now globals; special tokens are passed as variables.
"""

from __future__ import annotations

import json
from datetime import datetime

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment


def render_hf(template: str, messages: list[dict], add_generation_prompt: bool = False, **kwargs) -> str:
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)
