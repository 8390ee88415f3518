"""False-positive scan for the repetition guard: RepetitionDetector over legitimate text.

Tokenizes (with the embedded model's tokenizer, vocab only: no inference) every response in
mini-RABench and every .py/.md file of this repository (code, markdown tables, lists, hex
strings), runs the detector over each text, and prints what fires: with the default thresholds,
and with looser ones to show the margin. Run from the repository root (~1 minute):

    python benchmarks/repetition_false_positives.py
"""

from __future__ import annotations

import glob


def first_loop(tokens, detokenize, **thresholds):
    from ra_lite.runtime.repetition import RepetitionDetector

    detector = RepetitionDetector(**thresholds)
    for i, token in enumerate(tokens):
        if detector.feed(token):
            span = detokenize(tokens[i + 1 - detector.found.span:i + 1])
            return detector.found.period, span.decode("utf-8", "replace")[:80]
    return None


def main() -> None:
    import llama_cpp

    from ra_lite.bench.dataset import load_items
    from ra_lite.embedded import embedded_model_path

    llm = llama_cpp.Llama(str(embedded_model_path()), vocab_only=True, verbose=False)
    texts = {f"{item.id}/{name}": text for item in load_items("full").items
             for name, text in item.responses.items()}
    for path in glob.glob("**/*.py", recursive=True) + glob.glob("**/*.md", recursive=True):
        if "/results/" not in path:
            texts[path] = open(path, encoding="utf-8").read()
    tokenized = {k: llm.tokenize(t.encode(), add_bos=False, special=False)
                 for k, t in texts.items()}
    print(f"{len(texts)} texts, {sum(map(len, tokenized.values()))} tokens")
    for thresholds in ({}, dict(min_repeats=3, min_span=32), dict(min_repeats=3, min_span=24),
                       dict(min_repeats=2, min_span=48), dict(min_repeats=2, min_span=24)):
        hits = {k: hit for k, toks in tokenized.items()
                if (hit := first_loop(toks, llm.detokenize, **thresholds))}
        print(f"{thresholds or 'defaults'}: {len(hits)} detections")
        for key, (period, span) in hits.items():
            print(f"  {key}: period {period}: {span!r}")


if __name__ == "__main__":
    main()
