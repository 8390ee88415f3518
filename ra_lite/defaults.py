"""Defaults shared by the library and the CLI (a light module: the CLI imports it at start-up)."""

# Reasoning tokens before ra-lite closes <think>. The paper's runtime allowed 4096 new tokens in
# all; most of RewardAnything's reasoning is far shorter (its prompt asks for a concise one).
DEFAULT_THINK_BUDGET = 2048
# The official vLLM example serves with max-model-len 8192.
DEFAULT_N_CTX = 8192
# The official local runtime samples at temperature 0.1, top-p 0.9.
DEFAULT_TEMPERATURE = 0.1
DEFAULT_TOP_P = 0.9
