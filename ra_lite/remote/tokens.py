"""Token-id prompts for remote judgments, so untrusted text never becomes a control token.

A serving engine given the prompt as *text* tokenizes it with special-token parsing on: a response
containing "<|im_end|>\\n<|im_start|>assistant\\n..." would close the user turn and write the
judge's answer. So a remote judgment sends token ids, built by the local rule
(ra_lite/runtime/prompt_tokens.py): the template's own control tokens are split out, everything
else (message contents above all) is tokenized as plain text. The ids come from

    ServerTokenizer   llama.cpp's llama-server: POST /tokenize with parse_special off for text,
                      on (with pieces) to learn which of the template's tokens are control tokens
    GgufTokenizer     the model's own vocabulary, loaded vocab-only from a local GGUF the user
                      names (for vLLM, whose /tokenize always parses special-token text)

Text the judgment appends later (the opened think block, the reasoning the server generated,
ra-lite's forced closings and answers) is tokenized the same way: generated text as plain text,
ra-lite's own text with special tokens parsed, as the local decoder does.

Text prompts are only sent when the user opts in (text_prompts / --remote-text-prompts), and then
a request whose messages contain control-token text is refused by name (`refuse_control_text`).
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path
from typing import Callable, Protocol

from ra_lite.errors import RaLiteError
from ra_lite.runtime.prompt_tokens import PromptTokenizer, SpecialSplitter, template_parts

# Control-token texts of the ChatML/Qwen3 family (RewardAnything's), used to screen text prompts
# when no tokenizer is given: every <|...|> token, and Qwen3's added tags, which llama.cpp's GGUF
# marks user-defined and parses out of text.
CONTROL_TEXT = re.compile(r"<\|[^|\s<>]{1,64}\|>|</?(?:think|tool_call|tool_response)>")


class PromptIds(Protocol):
    def prompt(self, rendered: str, contents: list[str]) -> list[int]: ...   # with BOS if wanted
    def plain(self, text: str) -> list[int]: ...      # generated text: never control tokens
    def forced(self, text: str) -> list[int]: ...     # ra-lite's own text: special tokens parsed
    def pieces(self, ids: list[int]) -> list[bytes]: ...   # each token's bytes (special as text)
    def forced_pieces(self, text: str) -> list[tuple[int, bytes]]: ...   # forced(), with pieces
    def end_of_generation(self, token: int) -> bool | None: ...   # None: cannot tell


def _with_bos(tokens: list[int], bos: int | None) -> list[int]:
    # As Engine.prompt_tokens: the model's BOS first, unless the template already wrote it.
    if bos is not None and (not tokens or tokens[0] != bos):
        tokens.insert(0, bos)
    return tokens


class GgufTokenizer:
    """The model's own vocabulary from a local GGUF (loaded vocab-only: no weights, ~1 s)."""

    def __init__(self, path: str | Path):
        import llama_cpp

        path = self.path = Path(path)
        if not path.is_file() or path.suffix != ".gguf":
            raise RaLiteError(f"tokenizer {str(path)!r} is not a GGUF file",
                              "pass the .gguf of the model the server runs (same vocabulary)")
        try:
            self.llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise RaLiteError(f"llama.cpp could not read the vocabulary of {path} ({e})",
                              "pass an intact GGUF of the served model") from None
        self.splitter = PromptTokenizer(self.llm)
        self.bos = self.llm.token_bos() if self.llm._model.add_bos_token() else None
        if self.bos is not None and self.bos < 0:
            self.bos = None

    @property
    def control_texts(self) -> list[str]:
        return list(self.splitter.special_ids)

    def prompt(self, rendered: str, contents: list[str]) -> list[int]:
        return _with_bos(self.splitter.tokenize(rendered, contents), self.bos)

    def plain(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def forced(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def pieces(self, ids: list[int]) -> list[bytes]:
        return [self.llm.detokenize([t], special=True) for t in ids]

    def forced_pieces(self, text: str) -> list[tuple[int, bytes]]:
        ids = self.forced(text)
        return list(zip(ids, self.pieces(ids)))

    def end_of_generation(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(self.llm.model),
                                                 token))

    def close(self) -> None:
        self.llm.close()


class ServerTokenizer:
    """llama.cpp llama-server's POST /tokenize (content, add_special, parse_special, with_pieces).

    The server has no endpoint listing its control tokens, so they are learned from the template's
    own parts: a token of a part tokenized with parse_special on is a control token when its text
    tokenizes to that one id with parsing on and to something else with parsing off. A server
    that ignores parse_special (builds before the option existed) shows no such token, and is
    refused rather than trusted. Results are cached, so after the first judgment only the message
    contents cost a request each.
    """

    def __init__(self, request: Callable[[str, dict], object], where: str):
        self._request, self.where = request, where
        self._lock = threading.Lock()
        self._specials: dict[str, int] = {}
        self._verdicts: dict[str, bool] = {}            # token text -> is a control token
        self._learned: set[str] = set()                 # template parts already examined
        self._splitter: SpecialSplitter | None = None
        self._bos: int | None | bool = False            # False: not asked yet
        self._call = functools.lru_cache(maxsize=1024)(self._tokenize)

    def _tokenize(self, text: str, parse_special: bool, with_pieces: bool = False,
                  add_special: bool = False) -> tuple:
        body = {"content": text, "add_special": add_special, "parse_special": parse_special,
                "with_pieces": with_pieces}
        try:
            data = self._request("/tokenize", body)
        except RaLiteError as e:
            if getattr(e, "status", None) in (404, 405, 501):
                raise RaLiteError(
                    f"{self.where}/tokenize is missing, so ra-lite cannot build a token-id prompt",
                    "point --remote at llama.cpp's llama-server, pass the model's GGUF as the "
                    "tokenizer (--remote-tokenizer), or opt into --remote-text-prompts") from None
            raise
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            raise RaLiteError(f"{self.where}/tokenize answered without a 'tokens' list",
                              "check --remote-kind: is this llama.cpp's llama-server?")
        if with_pieces:
            return tuple((t["id"], t["piece"]) if isinstance(t, dict) else (t, None)
                         for t in tokens)
        return tuple(tokens)

    def plain(self, text: str) -> list[int]:
        return list(self._call(text, False)) if text else []

    def forced(self, text: str) -> list[int]:
        return list(self._call(text, True)) if text else []

    def pieces(self, ids: list[int]) -> list[bytes]:
        """Token ids' bytes in one request: /tokenize passes ids in `content` through, and
        with_pieces gives each piece as text, or as a byte list where it is not valid UTF-8."""
        if not ids:
            return []
        data = self._request("/tokenize", {"content": list(ids), "with_pieces": True})
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or len(tokens) != len(ids) or \
                any(not isinstance(t, dict) or t.get("id") != i for t, i in zip(tokens, ids)):
            raise RaLiteError(f"{self.where}/tokenize did not give the pieces of token ids",
                              "update llama.cpp's llama-server (a build whose /tokenize takes "
                              "ids and with_pieces), or use --remote-route grammar")
        return [_piece_bytes(t["piece"]) for t in tokens]

    def forced_pieces(self, text: str) -> list[tuple[int, bytes]]:
        """forced(text) and each token's bytes, in one (cached) request."""
        if not text:
            return []
        return [(t, _piece_bytes(p)) for t, p in self._call(text, True, True)]

    def end_of_generation(self, token: int) -> None:
        return None          # the server says so itself when it stops at one

    def prompt(self, rendered: str, contents: list[str]) -> list[int]:
        with self._lock:
            for part in template_parts(rendered, contents):
                self._learn(part)
            if not self._specials:
                raise RaLiteError(
                    f"{self.where}/tokenize parses control tokens even with parse_special off "
                    "(or the chat template has none), so responses could not be kept plain text",
                    "update llama.cpp's llama-server to a build whose /tokenize honours "
                    "parse_special, or pass the model's GGUF as the tokenizer (--remote-tokenizer)")
            if self._splitter is None or self._splitter.special_ids != self._specials:
                self._splitter = SpecialSplitter(self._specials, self.plain)
            splitter, bos = self._splitter, self._bos_id()
        return _with_bos(splitter.tokenize(rendered, contents), bos)

    def _learn(self, part: str) -> None:
        if part in self._learned:
            return
        pieces = self._call(part, True, True)
        if [t for t, _ in pieces] != list(self._call(part, False)):
            for token, text in pieces:
                if isinstance(text, str) and text and text not in self._verdicts:
                    control = self._call(text, True) == (token,) and \
                        self._call(text, False) != (token,)
                    self._verdicts[text] = control
                    if control:
                        self._specials[text] = token
        if len(self._learned) > 4096:   # parts are the template's, so this only bounds oddities
            self._learned.clear()
        self._learned.add(part)

    def _bos_id(self) -> int | None:
        if self._bos is False:
            # The BOS the server would add to a text prompt: an id prompt gets none added.
            bare = self._call("a", True)
            full = self._call("a", True, False, True)
            extra = full[: len(full) - len(bare)] if full[len(full) - len(bare):] == bare else ()
            self._bos = extra[0] if extra else None
        return self._bos


class RemotePrompt:
    """One judgment's growing prompt: its text, and in token-id mode its ids."""

    def __init__(self, text: str, ids: list[int] | None = None, tokens: PromptIds | None = None):
        self.text, self.ids, self.tokens = text, ids, tokens

    def add(self, text: str, *, generated: bool = False) -> "RemotePrompt":
        """Append `text`: the server's own output (`generated`) is plain text, never control
        tokens; ra-lite's forced text has its special tokens parsed, as in the local decoder."""
        self.text += text
        if self.ids is not None and text:
            self.ids += self.tokens.plain(text) if generated else self.tokens.forced(text)
        return self

    def plus(self, text: str) -> "RemotePrompt":
        return RemotePrompt(self.text, None if self.ids is None else list(self.ids),
                            self.tokens).add(text)

    @property
    def payload(self) -> str | list[int]:
        return self.text if self.ids is None else self.ids


def _piece_bytes(piece) -> bytes:
    """A /tokenize with_pieces piece: text, or a byte list where it is not valid UTF-8."""
    if isinstance(piece, str):
        return piece.encode("utf-8")
    if isinstance(piece, list) and all(isinstance(b, int) and 0 <= b < 256 for b in piece):
        return bytes(piece)
    raise RaLiteError(f"llama-server's /tokenize gave a piece that is neither text nor bytes: "
                      f"{piece!r:.80}", "check --remote-kind: is this llama.cpp's llama-server?")


def refuse_control_text(chat, control: re.Pattern) -> None:
    """For text prompts: refuse a request whose messages contain control-token text, by name."""
    for message in chat.messages:
        found = control.search(message["content"])
        if found:
            token = found.group()
            raise RaLiteError(
                f"{_where(chat, message, token)} contains the control-token text {token!r}, which "
                "a text prompt would let the server parse as a control token",
                "drop --remote-text-prompts to send token ids (llama.cpp's llama-server, or vLLM "
                "with --remote-tokenizer MODEL.gguf), or remove that text")


def control_pattern(texts: list[str]) -> re.Pattern:
    """A pattern for these exact control-token texts (longest first)."""
    texts = sorted({t for t in texts if t}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, texts))) if texts else re.compile(r"(?!)")


def _where(chat, message, token: str) -> str:
    """Which part of the request holds `token`: a response by its caller's name, if it can tell."""
    if message["role"] != "user":
        return f"the {message['role']} message"
    try:
        fields = json.loads(message["content"])
    except ValueError:
        return "the user message"
    for masked, text in (fields.get("responses") or {}).items():
        if token in json.dumps(text, ensure_ascii=False):
            return f"response {chat.masked_to_real.get(masked, masked)!r}"
    for name in ("principle", "prompt"):
        if token in json.dumps(fields.get(name, ""), ensure_ascii=False):
            return f"the {name}"
    return "the user message"
