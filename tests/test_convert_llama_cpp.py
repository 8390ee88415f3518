"""Converted tiny checkpoints, loaded in real llama.cpp: logits, tokenization, chat template, every quant type.

llama_cpp is imported at module level on purpose: CI always has it, so a missing install must fail
these tests, not skip them.
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from ra_lite.convert.hf_to_gguf import convert
from ra_lite.convert.quantize import QUANT_TYPES, quantize
from tests.convert_support import oracle
from tests.convert_support.checkpoint import CHAT_TEMPLATE, TinySpec, build_checkpoint
from tests.convert_support.fixtures import gguf_fields, gguf_tensors
from tests.convert_support.hf_chat import render_hf

ARCHS = {"qwen3": "qwen2", "qwen2": "qwen2", "llama": "llama3"}  # arch -> tokenizer style
PROMPT = "Rate the answer: def f(x): return x * 2  # 我想 🚀 ok?"

# Relative error ||llama - oracle|| / ||oracle|| of all logits, per outtype. The oracle runs in float64 on
# the exact bf16 weights, so the error is what llama.cpp's arithmetic adds:
#  f32 : only f32 rounding (measured ~3e-7)                                   -> 1e-4
#  f16 : weights are exact in f16 (bf16 values fit), but llama.cpp rounds activations to f16 for
#        the matmuls: unit roundoff 2^-11 ~ 5e-4 (measured ~5e-4)             -> 5e-3
#  bf16: weights exact, activations rounded to bf16: 2^-8 ~ 4e-3 (measured ~4e-3) -> 2e-2
#  q8_0: weights and activations both in 8-bit blocks of 32 (measured ~2e-2)  -> 6e-2
LOGIT_TOLERANCE = {"f32": 1e-4, "f16": 5e-3, "bf16": 2e-2, "q8_0": 6e-2}
# llama.cpp K-quants on random Gaussian weights (a hard case for them), measured 0.02 / 0.05 / 0.10 /
# 0.18 / 0.32 / 0.60: bounds are ~2x that; the point is that each type loads, runs and tracks the model.
QUANT_TOLERANCE = {"Q8_0": 0.06, "Q6_K": 0.12, "Q5_K_M": 0.2, "Q4_K_M": 0.35, "Q3_K_M": 0.6, "Q2_K": 1.0}

TEXTS = [
    "Hello world",
    "def score(response, principle):\n    return model.evaluate(response)  # TODO\n\n\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}",
    "我想在apple工作1314151天～ 日本語のテキスト 한국어 문장",
    "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 🎉",
    "   leading   and trailing spaces   \t\t tabs \n\n\n newlines \r\n\r\n  ",
    "3 33 333 3333 33333 333333 3.3 3..3 3...3 $42.50 1,000,000",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "<|im_start|>system\nYou judge.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<think>\n\n</think>\n\nThe answer<|endoftext|>tail<|im_end|>",
    "Ünïcödé àccénts, naïve café, Ελληνικά, русский текст, עברית, العربية",
    "",
    " ",
    "\n",
    "'''\"\"\"```~~~!!!???...---===+++***///\\\\|||",
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama_ckpt")
    return {arch: build_checkpoint(root / arch, TinySpec(arch=arch, tokenizer_style=style), seed=10 + i)
            for i, (arch, style) in enumerate(ARCHS.items())}


def llama_logits(path, tokens, **kwargs) -> np.ndarray:
    # f32 K/V cache and no flash attention, so the f32 comparison measures the weights, not the cache.
    llm = Llama(str(path), n_ctx=64, n_threads=2, logits_all=True, verbose=False, type_k=0, type_v=0,
                flash_attn=False, **kwargs)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float64)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("outtype", list(LOGIT_TOLERANCE))
def test_logits_match_numpy_oracle(checkpoints, tmp_path, arch, outtype):
    ck = checkpoints[arch]
    out = tmp_path / f"{arch}-{outtype}.gguf"
    convert(ck.directory, out, outtype, progress=False, manifest=False)
    tokens = ck.tokenizer.encode(PROMPT, add_special_tokens=False).ids[:24]
    assert len(tokens) >= 16
    want = oracle.forward(ck.weights, ck.config, tokens)
    got = llama_logits(out, tokens)
    assert got.shape == want.shape == (len(tokens), ck.spec.vocab_size)
    assert relative_error(got, want) < LOGIT_TOLERANCE[outtype]
    if outtype == "f32":
        assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()


@pytest.mark.parametrize("style", ["qwen2", "llama3", "gpt2"])
def test_tokenization_matches_hf(tmp_path, style):
    ck = build_checkpoint(tmp_path / "ck", TinySpec(tokenizer_style=style), n_shards=1)
    out = tmp_path / "v.gguf"
    convert(ck.directory, out, "f16", progress=False, manifest=False)
    llm = Llama(str(out), vocab_only=True, verbose=False)
    for text in TEXTS:
        want = ck.tokenizer.encode(text, add_special_tokens=False).ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == want, repr(text)
        # Round trip through llama.cpp's detokenizer too.
        assert llm.detokenize(want, special=True).decode() == ck.tokenizer.decode(want, skip_special_tokens=False)
    # The BOS policy travels too: Llama-3 style prepends BOS, Qwen does not.
    with_bos = llm.tokenize(b"Hello", add_bos=True, special=True)
    assert with_bos == ck.tokenizer.encode("Hello", add_special_tokens=True).ids


def test_chat_template_renders_like_hf(checkpoints, tmp_path):
    ck = checkpoints["qwen3"]
    out = tmp_path / "c.gguf"
    convert(ck.directory, out, "f16", progress=False, manifest=False)
    llm = Llama(str(out), vocab_only=True, verbose=False)
    template = llama_cpp.llama_model_chat_template(llm.model, None).decode()
    assert template == llm.metadata["tokenizer.chat_template"] == CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Judge by the principle."},
                {"role": "user", "content": "Which answer is better? 我想 🚀\n\n  spaced  "},
                {"role": "assistant", "content": "B."}, {"role": "user", "content": "Why?"}]
    for add_generation_prompt in (True, False):
        want = render_hf(CHAT_TEMPLATE, messages, add_generation_prompt=add_generation_prompt)
        # llama.cpp's C++ renderer (llama_chat_apply_template with the template read from the GGUF)...
        chat = (llama_cpp.llama_chat_message * len(messages))(
            *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages])
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(messages), add_generation_prompt, buf, 4096)
        assert 0 < n <= 4096 and buf.raw[:n].decode() == want
        # ...and llama-cpp-python's Jinja renderer used by create_chat_completion.
        formatter = Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="",
                                        add_generation_prompt=add_generation_prompt)
        assert formatter(messages=messages).prompt == want
    assert render_hf(template, messages[:2], add_generation_prompt=True, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


@pytest.fixture(scope="module")
def quantized(checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    ck = checkpoints["qwen3"]
    convert(ck.directory, root / "tiny-F32.gguf", "f32", source_repo="Org/Tiny", source_revision="r1",
            progress=False, manifest=False)
    results = quantize(root / "tiny-F32.gguf", list(QUANT_TOLERANCE), progress=False)
    return ck, root, {r.quant_type: r for r in results}


def test_every_quant_type_loads_and_runs(quantized):
    ck, root, results = quantized
    tokens = ck.tokenizer.encode(PROMPT, add_special_tokens=False).ids[:16]
    want = oracle.forward(ck.weights, ck.config, tokens)
    errors = {}
    for quant_type, tolerance in QUANT_TOLERANCE.items():
        result = results[quant_type]
        assert result.output == root / f"tiny-{quant_type}.gguf" and result.output.is_file()
        fields = gguf_fields(result.output)
        assert fields["general.file_type"] == QUANT_TYPES[quant_type]
        # Provenance written by the converter survives llama.cpp's quantizer.
        assert (fields["general.source.repo_id"], fields["general.source.revision"]) == ("Org/Tiny", "r1")
        types = {t.tensor_type.name for t in gguf_tensors(result.output).values()}
        main_type = quant_type.split("_K")[0] + "_K" if "_K" in quant_type else quant_type
        assert main_type in types, (quant_type, types)  # hidden=256: K-quants apply, no fallback
        got = llama_logits(result.output, tokens)
        assert np.isfinite(got).all()
        errors[quant_type] = relative_error(got, want)
        assert errors[quant_type] < tolerance, errors
    ordered = [errors[q] for q in QUANT_TOLERANCE]
    assert ordered == sorted(ordered), f"fewer bits should never be more accurate here: {errors}"


def test_our_q8_0_is_bit_identical_to_llama_cpp_q8_0(quantized, tmp_path):
    ck, root, results = quantized
    ours = tmp_path / "ours-Q8_0.gguf"
    convert(ck.directory, ours, "q8_0", progress=False, manifest=False)
    mine, theirs = gguf_tensors(ours), gguf_tensors(results["Q8_0"].output)
    assert set(mine) == set(theirs)
    for name, tensor in mine.items():
        assert tensor.tensor_type == theirs[name].tensor_type, name
        assert np.array_equal(np.asarray(tensor.data), np.asarray(theirs[name].data)), name


def test_quant_manifest_links_parent(quantized):
    import json

    _, root, results = quantized
    data = json.loads((root / "manifest.json").read_text())
    entries = {a["file"]: a for a in data["artifacts"]}
    entry = entries["tiny-Q4_K_M.gguf"]
    assert entry["quant_type"] == "Q4_K_M" and entry["produced_by"] == "quantize"
    assert entry["sha256"] == results["Q4_K_M"].sha256 and entry["parent"]["file"] == "tiny-F32.gguf"
    assert entry["llama_cpp_python_version"] == llama_cpp.__version__
    assert (entry["source_repo"], entry["source_revision"]) == ("Org/Tiny", "r1")
    assert len(entry["sha256"]) == 64 and entry["size_bytes"] == results["Q4_K_M"].output.stat().st_size
