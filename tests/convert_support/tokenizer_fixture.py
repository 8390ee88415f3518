"""Train tiny byte-level BPE tokenizers with `tokenizers`, shaped like the real ones llama.cpp supports.

Styles: "qwen2" (Qwen2/Qwen3: Split regex + ByteLevel, NFC), "llama3" (Llama-3 regex, ignore_merges,
BOS prepended by a TemplateProcessing post-processor), "gpt2" (bare ByteLevel with GPT-2's regex).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = [
    "The quick brown fox jumps over the lazy dog. I've been told he's there, you'll see; we'd like tea.",
    "Reward models judge responses against principles: be helpful, be honest, be harmless.",
    "def score(response, principle):\n    return model.evaluate(response, principle)  # TODO\n\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i] * y[i];\n}\n",
    "import numpy as np\nx = np.arange(12).reshape(3, 4)\nprint(x.sum(axis=0))\n",
    "我想在苹果公司工作。这是一个奖励模型，它根据原则评价回答。今天天气很好。",
    "日本語のテキストも少し含めます。ありがとうございます。",
    "한국어 문장도 조금 있습니다. 감사합니다.",
    "Emoji time 🚀🦙✅ 😶‍🌫️ and more 🎉🎉🎉 done.",
    "Numbers 3 33 333 3333 33333 3.14159 2024-06-01 1,000,000 $42.50 100%",
    "   leading spaces, trailing spaces   \n\n\n multiple\tnewlines\r\n and tabs\t\t\there",
    "Ünïcödé àccénts, naïve café, Ελληνικά, русский текст, עברית, العربية",
    "<html><body><p class=\"x\">Hello, world!</p></body></html>",
    "'''\"\"\"```~~~!!!???...---===+++***///\\\\|||",
] * 4

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3 declares <think> / </think> as added but *not* special tokens; keep that shape.
NON_SPECIAL_ADDED = ["<think>", "</think>"]


def train_tokenizer(style: str = "qwen2", vocab_size: int = 420) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        regex = QWEN2_REGEX if style == "qwen2" else LLAMA3_REGEX
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, min_frequency=2)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    specials = SPECIAL_TOKENS + (["<|begin_of_text|>"] if style == "llama3" else [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in NON_SPECIAL_ADDED])
    if style == "llama3":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def save_tokenizer(tok: Tokenizer, directory: Path, style: str) -> None:
    path = directory / "tokenizer.json"
    tok.save(str(path))
    if style == "llama3":
        # The Python binding cannot set ignore_merges; Llama-3's tokenizer.json has it true, and llama.cpp's
        # llama-bpe pre-tokenizer assumes it.
        data = json.loads(path.read_text(encoding="utf-8"))
        data["model"]["ignore_merges"] = True
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def tokenizer_config(style: str, chat_template: str | None) -> dict:
    cfg = {"model_max_length": 4096, "clean_up_tokenization_spaces": False, "tokenizer_class": "PreTrainedTokenizerFast"}
    if style == "llama3":
        cfg.update(bos_token="<|begin_of_text|>", eos_token="<|im_end|>")
    else:
        cfg.update(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", add_bos_token=False)
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    return cfg
