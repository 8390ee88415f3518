"""The local runtime: everything that loads a GGUF and runs it on llama.cpp.

Modules, in import order (each imports only those above it, never the reverse):

    gguf_info       what a GGUF file is, from its header (no vocabulary, no weights)
    devices         CPU features, GPUs and their free memory; default thread count
    offload         how many layers fit the GPU, the offload decision, retry on OOM
    prompt_tokens   prompt tokenization that keeps message contents out of control tokens
    repetition      detects reasoning that loops (a span repeated back to back)
    drafts          n-gram drafts for speculative reasoning
    decode          the constrained judgment decoder (a step generator, engine-agnostic)
    prefix_state    the shared prompt prefix's KV state saved across processes (prompt cache)
    scheduler       continuous batching of judgments' step generators in slots (pure logic):
                    the one driver of every local judgment, speculative verification included
    multi_sequence_context    the multi-sequence llama.cpp context the scheduler drives
    engine          one loaded model + its one multi-sequence context and scheduler

Nothing here runs on import; llama_cpp is imported only when a model is loaded.
"""
