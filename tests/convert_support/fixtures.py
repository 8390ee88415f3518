"""Small helpers shared by the converter tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def gguf_fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}


def gguf_tensors(path: Path) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def expected_gguf_weight(hf_name: str, weight: np.ndarray, config: dict) -> np.ndarray:
    """What the GGUF must hold for an HF weight: Llama's q/k rows are permuted per head, nothing else changes."""
    if config["architectures"][0] == "LlamaForCausalLM" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        n_heads = weight.shape[0] // head_dim
        # Upstream convert_hf_to_gguf.py's LlamaModel.permute, written out independently of our code.
        return weight.reshape(n_heads, 2, head_dim // 2, -1).swapaxes(1, 2).reshape(weight.shape)
    return weight


def leftovers(directory: Path) -> list[str]:
    """Files a failed write must not leave behind: the output itself or a .partial temp."""
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".gguf", ".partial") or ".partial" in p.name)
