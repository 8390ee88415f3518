"""HF checkpoint -> GGUF conversion and llama.cpp quantization (installed as ra_lite.convert).

Library entry points: `hf_to_gguf.convert(...)` and `quantize.quantize(...)`; click commands in `cli`.
Nothing is imported here so that `import ra_lite.convert.cli` stays light.
"""
