"""Read a HF byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json) into GGUF tokenizer metadata.

No transformers: tokenizer.json already holds the vocabulary, the merges and the added tokens, and
tokenizer_config.json the special-token names and the chat template.

The pre-tokenizer is the one part llama.cpp does not read from the file: it has a fixed set of
regexes selected by `tokenizer.ggml.pre`. Upstream picks the name by hashing the token ids of a test
string, which needs the real vocabulary it has seen before. We look at the pre-tokenizer definition
itself instead and accept only the exact regexes llama.cpp implements; anything else is an error,
because a wrong pre-tokenizer silently changes every tokenization.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf

from ra_lite.errors import RaLiteError

# tokenizer.json Split regex -> (llama.cpp pre-tokenizer name, the BPE `ignore_merges` llama.cpp uses for it)
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_REGEX_PRE = {QWEN2_REGEX: ("qwen2", False), LLAMA3_REGEX: ("llama-bpe", True)}
# A bare ByteLevel pre-tokenizer with use_regex=true applies GPT-2's regex.
GPT2_PRE = ("gpt-2", False)
SUPPORTED_PRE = ("qwen2", "llama-bpe", "gpt-2")

SPECIAL_TYPES = ("bos", "eos", "unk", "pad")


@dataclass
class VocabInfo:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]
    add_bos: bool
    add_eos: bool
    chat_template: str | list | None
    chat_template_source: str | None
    warnings: list[str] = field(default_factory=list)

    def write_to(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for kind, token_id in self.special_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        # Written explicitly: llama.cpp's defaults for a missing key differ between versions.
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RaLiteError(f"cannot read {path.name}: {err}", "re-download the tokenizer files") from err


def detect_pre_tokenizer(tok: dict) -> str:
    """Map tokenizer.json's pre_tokenizer (and BPE settings) to a llama.cpp pre-tokenizer name, or raise."""
    pre = tok.get("pre_tokenizer") or {}
    model = tok.get("model") or {}
    found: tuple[str, bool] | None = None
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (len(steps) == 2 and steps[0].get("type") == "Split" and steps[0].get("behavior") == "Isolated"
                and not steps[0].get("invert") and steps[1].get("type") == "ByteLevel"
                and not steps[1].get("add_prefix_space") and steps[1].get("use_regex") is False):
            found = SPLIT_REGEX_PRE.get((steps[0].get("pattern") or {}).get("Regex"))
    elif pre.get("type") == "ByteLevel" and not pre.get("add_prefix_space") and pre.get("use_regex", True):
        found = GPT2_PRE
    if found is None:
        raise RaLiteError("the tokenizer's pre-tokenizer is not one llama.cpp implements "
                          f"({json.dumps(pre)[:200]})",
                          f"supported: byte-level BPE with the {', '.join(SUPPORTED_PRE)} pre-tokenizers")
    name, ignore_merges = found
    if bool(model.get("ignore_merges", False)) != ignore_merges:
        raise RaLiteError(f"tokenizer.json has ignore_merges={model.get('ignore_merges')} but llama.cpp's {name!r} "
                          f"pre-tokenizer assumes {ignore_merges}", "this tokenizer would not tokenize the same")
    return name


def _check_bpe_model(tok: dict) -> None:
    model = tok.get("model") or {}
    if model.get("type") != "BPE":
        raise RaLiteError(f"tokenizer model {model.get('type')!r} is not supported (only byte-level BPE)",
                          "use a model with a byte-level BPE tokenizer.json")
    if model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise RaLiteError("BPE tokenizers with byte_fallback or subword prefixes/suffixes are not supported",
                          "use a model with a byte-level BPE tokenizer.json")
    normalizer = tok.get("normalizer")
    # Qwen2/3 declare NFC; llama.cpp does not normalize, which only matters for text that is not already
    # NFC (decomposed accents). Upstream converters accept the same difference.
    if normalizer is not None and normalizer.get("type") != "NFC":
        raise RaLiteError(f"tokenizer normalizer {normalizer.get('type')!r} is not supported", "use a supported model")


def _merges(model: dict) -> list[str]:
    merges = model.get("merges") or []
    if merges and isinstance(merges[0], list):
        # Newer tokenizers store pairs; GGUF stores "a b". A literal space inside a part would be
        # ambiguous, so gguf-py's convention shifts it to U+0120+... (never happens for byte-level BPE).
        return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
                for pair in merges]
    return list(merges)


def _token_content(entry) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def _add_special(post_processor: dict | None, bos_text: str | None) -> bool:
    """Does the HF post-processor prepend the BOS token (Llama-3 style TemplateProcessing)?"""
    for proc in (post_processor or {}).get("processors", [post_processor] if post_processor else []):
        if proc.get("type") == "TemplateProcessing":
            single = proc.get("single") or []
            if single and single[0].get("SpecialToken", {}).get("id") == bos_text and bos_text is not None:
                return True
    return False


def read_chat_template(directory: Path, tok_config: dict) -> tuple[str | list | None, str | None, list[str]]:
    """The chat template as transformers would load it: chat_template.jinja wins over tokenizer_config.json."""
    warnings = []
    from_config = tok_config.get("chat_template")
    jinja_file, json_file = directory / "chat_template.jinja", directory / "chat_template.json"
    if jinja_file.is_file():
        template = jinja_file.read_text(encoding="utf-8")
        if from_config is not None and from_config != template:
            warnings.append("chat_template.jinja differs from tokenizer_config.json's chat_template; used the .jinja")
        return template, "chat_template.jinja", warnings
    if json_file.is_file():
        return _load_json(json_file).get("chat_template"), "chat_template.json", warnings
    if from_config is not None:
        return from_config, "tokenizer_config.json", warnings
    warnings.append("no chat template found (tokenizer_config.json, chat_template.jinja)")
    return None, None, warnings


def read_vocab(directory: Path, config: dict, vocab_size: int, pre_override: str | None = None) -> VocabInfo:
    tok_path = directory / "tokenizer.json"
    if not tok_path.is_file():
        raise RaLiteError(f"no tokenizer.json in {directory}",
                          "download tokenizer.json with the weights (slow-tokenizer-only models are not supported)")
    tok = _load_json(tok_path)
    tok_config = _load_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    _check_bpe_model(tok)
    if pre_override is not None:
        if pre_override not in SUPPORTED_PRE:
            raise RaLiteError(f"unknown pre-tokenizer {pre_override!r}", f"choose one of {', '.join(SUPPORTED_PRE)}")
        pre = pre_override
    else:
        pre = detect_pre_tokenizer(tok)

    model = tok["model"]
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in model["vocab"].items()}
    added_ids: dict[str, int] = {}
    warnings: list[str] = []
    for added in tok.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
        added_ids[added["content"]] = added["id"]
        if added.get("lstrip") or added.get("rstrip") or added.get("single_word"):
            warnings.append(f"added token {added['content']!r} has lstrip/rstrip/single_word, which llama.cpp "
                            "may not honour")
    if max(by_id) >= vocab_size:
        raise RaLiteError(f"tokenizer has token id {max(by_id)} but config.json vocab_size is {vocab_size}",
                          "the tokenizer does not belong to these weights")
    # The embedding matrix is usually padded past the tokenizer (151936 rows vs 151669 tokens for Qwen3):
    # llama.cpp needs one entry per row, so the gaps become unused placeholders, as upstream does.
    tokens, types = [], []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))

    # Special ids: tokenizer_config.json names them; config.json's *_token_id fills what is left.
    special_ids: dict[str, int] = {}
    vocab = model["vocab"]
    for kind in SPECIAL_TYPES:
        text = _token_content(tok_config.get(f"{kind}_token"))
        if text is not None:
            token_id = added_ids.get(text, vocab.get(text))
            if token_id is None:
                raise RaLiteError(f"tokenizer_config.json {kind}_token {text!r} is not in the vocabulary",
                                  "the tokenizer files are inconsistent")
            special_ids[kind] = token_id
    for kind in SPECIAL_TYPES:
        token_id = config.get(f"{kind}_token_id")
        if kind not in special_ids and isinstance(token_id, int) and not isinstance(token_id, bool):
            if not 0 <= token_id < vocab_size:
                raise RaLiteError(f"config.json {kind}_token_id={token_id} is outside the vocabulary", "check config.json")
            special_ids[kind] = token_id

    bos_text = by_id[special_ids["bos"]][0] if "bos" in special_ids else None
    add_bos = tok_config.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = _add_special(tok.get("post_processor"), bos_text)
    add_eos = tok_config.get("add_eos_token")
    add_eos = add_eos if isinstance(add_eos, bool) else False

    template, source, template_warnings = read_chat_template(directory, tok_config)
    return VocabInfo(tokens, types, _merges(model), pre, special_ids, add_bos, add_eos, template, source,
                     warnings + template_warnings)
