"""The header-only GGUF reader against gguf-py's GGUFReader (the reference), on a 49k and a
152k vocabulary, and its errors on damaged files."""

from __future__ import annotations

import pytest

from ra_lite.errors import RaLiteError
from ra_lite.runtime.gguf_info import read_gguf_info, read_header
from tests.support.random_gguf import write_random_gguf

QWEN_VOCAB = 151936


@pytest.fixture(scope="module")
def qwen_vocab_gguf(tmp_path_factory, embedded_path):
    """A tiny random model whose vocabulary is padded to Qwen's 151,936 tokens."""
    path = tmp_path_factory.mktemp("vocab152k") / "random-152k.gguf"
    return write_random_gguf(path, tokenizer_from=embedded_path, seed=7, n_embd=32, n_ff=64,
                             n_head=2, n_head_kv=1, pad_vocab_to=QWEN_VOCAB)


def reference_info(path) -> dict:
    """What read_gguf_info used to compute with gguf.GGUFReader (parses every token string)."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    arch = field("general.architecture") or ""
    ftype = gguf.LlamaFileType(field("general.file_type")).name
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return dict(
        architecture=arch, name=field("general.name") or path.stem, file_type=ftype,
        quant=ftype.removeprefix("MOSTLY_").replace("ALL_", ""),
        n_params=sum(int(t.n_elements) for t in reader.tensors),
        block_count=field(f"{arch}.block_count"),
        context_length=field(f"{arch}.context_length"),
        vocab_size=len(tokens.data) if tokens is not None else None,
        gguf_type=field("general.type") or "model",
        chat_template=field("tokenizer.chat_template"),
        pooling=field(f"{arch}.pooling_type") is not None,
        size_bytes=path.stat().st_size,
    ), reader


def check_against_reference(path):
    expected, reader = reference_info(path)
    info = read_gguf_info(path)
    for key, value in expected.items():
        assert getattr(info, key) == value, key
    # The raw header too: every scalar and string field, every array's length, every tensor.
    header = read_header(path)
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key in header.array_lengths:
            assert header.array_lengths[key] == len(f.data), key
        else:
            assert header.metadata[key] == f.contents(), key
    assert [(t.name, t.n_elements, t.n_bytes) for t in header.tensors] == \
        [(t.name, int(t.n_elements), int(t.n_bytes)) for t in reader.tensors]
    return info


def test_matches_gguf_reader_on_the_embedded_model(embedded_path):
    info = check_against_reference(embedded_path)
    assert info.vocab_size == 49152 and info.chat_template


def test_matches_gguf_reader_on_a_152k_vocabulary(qwen_vocab_gguf):
    info = check_against_reference(qwen_vocab_gguf)
    assert info.vocab_size == QWEN_VOCAB


def test_string_arrays_are_counted_not_kept(qwen_vocab_gguf):
    header = read_header(qwen_vocab_gguf)
    assert header.array_lengths["tokenizer.ggml.tokens"] == QWEN_VOCAB
    assert header.metadata["tokenizer.ggml.tokens"] is None
    assert header.metadata["tokenizer.ggml.merges"] is None


def test_picked_items_of_a_skipped_array_match_gguf_reader(embedded_path):
    import gguf

    tokens = gguf.GGUFReader(embedded_path).fields["tokenizer.ggml.tokens"].contents()
    wanted = {0, 1, 2, 1000, len(tokens) - 1}
    header = read_header(embedded_path, pick={"tokenizer.ggml.tokens": wanted})
    assert header.picked["tokenizer.ggml.tokens"] == {i: tokens[i] for i in wanted}
    assert header.metadata["tokenizer.ggml.tokens"] is None        # the rest still skipped

    from ra_lite.remote import template_from_gguf

    template, bos, eos = template_from_gguf(embedded_path)
    assert (bos, eos) == ("<|im_start|>", "<|im_end|>") and "im_start" in template


@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.3, 0.5, 0.99])
def test_truncated_file_is_a_clear_error(qwen_vocab_gguf, tmp_path, fraction):
    data = qwen_vocab_gguf.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: max(8, int(len(data) * fraction))])
    with pytest.raises(RaLiteError, match="damaged GGUF") as e:
        read_gguf_info(cut)
    assert "again" in e.value.one_line()


def test_garbage_after_the_magic_is_a_clear_error(tmp_path):
    import numpy as np

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(RaLiteError, match="damaged GGUF"):
        read_gguf_info(junk)


def test_not_a_gguf_and_missing_files(tmp_path):
    other = tmp_path / "model.bin"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(RaLiteError, match="not a GGUF file"):
        read_gguf_info(other)
    with pytest.raises(RaLiteError, match="does not exist"):
        read_gguf_info(tmp_path / "missing.gguf")
    with pytest.raises(RaLiteError, match="directory"):
        read_gguf_info(tmp_path)
