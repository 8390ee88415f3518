"""Tokenize a rendered chat prompt so that only the *template* can produce control tokens.

The responses being judged are untrusted text. Tokenized like the rest of the prompt (special
tokens parsed), a response containing "<|im_end|><|im_start|>assistant" would close the user turn
and speak as the model. So the prompt is split only at the special tokens the template itself
emitted, and everything between them, message contents included, is tokenized as plain text.

llama.cpp's own special-token parsing does the same partitioning (split at special tokens, then
BPE each fragment separately), so for content without such text the tokens are identical to
`tokenize(rendered, special=True)`; the tests check that.

The rule (SpecialSplitter) does not care where tokens come from: PromptTokenizer feeds it a local
llama.cpp vocabulary, ra_lite/remote/tokens.py a serving engine's /tokenize endpoint, so a remote
judgment gets the same ids as a local one.
"""

from __future__ import annotations

import re
from typing import Callable

from ra_lite.errors import RaLiteError

# llama_token_attr flags (llama.h): tokens that llama.cpp parses out of text with special=True.
_ATTR_CONTROL = 1 << 3
_ATTR_USER_DEFINED = 1 << 4


class SpecialSplitter:
    """The rule itself, for any source of tokens: a local vocabulary or a server's /tokenize.

    specials: the control-token texts that may be split out of the template's parts, and their
    ids (only those occurring in the template's parts matter; see ra_lite/remote/tokens.py).
    plain: tokenizes text with special-token parsing off and no BOS.
    """

    def __init__(self, specials: dict[str, int], plain: Callable[[str], list[int]]):
        self.special_ids = dict(specials)
        self._plain_text = plain
        # Longest first, as llama.cpp matches them.
        alternatives = sorted(self.special_ids, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def _plain(self, text: str) -> list[int]:
        if not text:
            return []
        return self._plain_text(text)

    def tokenize(self, rendered: str, contents: list[str]) -> list[int]:
        """Tokens of `rendered`, where each of `contents` (in order) is plain text."""
        protected = _locate(rendered, contents, self.pattern)
        tokens: list[int] = []
        position = 0
        for match in (self.pattern.finditer(rendered) if self.pattern else ()):
            if any(start < match.end() and match.start() < end for start, end in protected):
                continue          # inside a message: plain text, not a control token
            tokens += self._plain(rendered[position:match.start()])
            tokens.append(self.special_ids[match.group()])
            position = match.end()
        tokens += self._plain(rendered[position:])
        return tokens


class PromptTokenizer(SpecialSplitter):
    """The rule over a loaded llama.cpp model (or a vocab-only load of one)."""

    def __init__(self, llm):
        import llama_cpp

        self.llm = llm
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        specials: dict[str, int] = {}
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            if llama_cpp.llama_vocab_get_attr(vocab, token) & (_ATTR_CONTROL | _ATTR_USER_DEFINED):
                text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8", "replace")
                if text:
                    specials.setdefault(text, token)
        super().__init__(specials, lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False,
                                                             special=False))


def template_parts(rendered: str, contents: list[str]) -> list[str]:
    """The rendered prompt's text outside the message contents (where control tokens may be)."""
    parts, position = [], 0
    for start, end in _locate(rendered, contents, None):
        parts.append(rendered[position:start])
        position = end
    parts.append(rendered[position:])
    return [part for part in parts if part]


def _locate(rendered: str, contents: list[str], pattern) -> list[tuple[int, int]]:
    """Where each message content sits in the rendered prompt (templates insert it verbatim)."""
    spans, cursor = [], 0
    for content in contents:
        if not content:
            continue
        start = rendered.find(content, cursor)
        if start != -1:
            spans.append((start, start + len(content)))
            cursor = start + len(content)
        elif pattern is not None and pattern.search(content):
            # The template rewrote this message, so we cannot tell its text from the template's.
            raise RaLiteError("the chat template altered a message that contains control-token "
                              "text, so it cannot be tokenized safely",
                              "use a GGUF whose template inserts messages verbatim (ChatML/Qwen3)")
    return spans
