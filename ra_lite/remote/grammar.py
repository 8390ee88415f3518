"""The per-phase GBNF grammars a remote engine gets, so its output follows the same rules as the
local decoder's (ra_lite/grammar.py).

A context-free grammar cannot make the ranking follow scores it has not seen yet, so a remote
judgment is split where the local decoder narrows its choices:

    phase 1   reasoning: free text (no grammar), capped by the think budget, stopped at </think>
    phase 2   scores:    `scores_gbnf`  — exactly the request's keys in order, one digit 1-5 each,
                          ending right after `"best-to-worst": [`
    phase 3   ranking:   `ranking_gbnf` — built from the now-known scores: groups of equal score
                          in descending order, any order inside a group (only needed when some
                          scores tie; otherwise the ranking is forced text, as locally)

Each phase continues the previous text, so the server's prompt cache makes phases 2 and 3 cheap.
The text these grammars allow is exactly what AnswerGrammar allows; `parse_answer` checks the
joined result all the same.
"""

from __future__ import annotations

import re
from itertools import groupby

from ra_lite.grammar import GBNF_MAX_PERMUTATION, permutation_rules, render_answer

SCORES_END = '},\n  "best-to-worst": ['
RANKING_END = "]\n}"


def gbnf_literal(text: str) -> str:
    """A GBNF string literal for `text`."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def scores_gbnf(masked_names: list[str]) -> str:
    parts = []
    for i, name in enumerate(masked_names):
        lead = '{\n  "scores": {' if i == 0 else ", "
        key = lead + '"' + name + '":'
        parts.append(gbnf_literal(key) + " score")
    return ("root ::= " + " ".join(parts) + " " + gbnf_literal(SCORES_END) + "\n"
            'score ::= " " [1-5]\n')


def scores_max_text(masked_names: list[str]) -> str:
    """The longest phase-2 output (to size its token limit)."""
    return render_answer({n: 5 for n in masked_names}, []).split(SCORES_END)[0] + SCORES_END


def parse_scores(text: str, masked_names: list[str]) -> dict[str, int] | None:
    """The scores in a phase-2 output, or None when it is not exactly the grammar's language."""
    pattern = ""
    for i, name in enumerate(masked_names):
        lead = '{\n  "scores": {' if i == 0 else ", "
        pattern += re.escape(f'{lead}"{name}":') + " ([1-5])"
    match = re.fullmatch(pattern + re.escape(SCORES_END), text)
    if not match:
        return None
    return {name: int(d) for name, d in zip(masked_names, match.groups())}


def tie_groups(scores: dict[str, int]) -> list[list[str]]:
    """Names grouped by score, best group first; inside a group in the masked order."""
    ordered = sorted(scores, key=lambda n: -scores[n])
    return [list(group) for _, group in groupby(ordered, key=lambda n: scores[n])]


def forced_ranking(scores: dict[str, int]) -> list[str] | None:
    """The ranking when no two scores tie (the model then has no choice), else None."""
    groups = tie_groups(scores)
    return [g[0] for g in groups] if all(len(g) == 1 for g in groups) else None


def ranking_fits_one_grammar(scores: dict[str, int]) -> bool:
    """Each tie group needs 2^k rules; past GBNF_MAX_PERMUTATION the ranking goes step by step."""
    return all(len(g) <= GBNF_MAX_PERMUTATION for g in tie_groups(scores))


def ranking_gbnf(scores: dict[str, int]) -> str:
    """Every ranking consistent with the scores: the rest of the answer after `[`."""
    rules, parts = [], []
    for g, group in enumerate(tie_groups(scores)):
        quoted = [gbnf_literal(f'"{n}"') for n in group]
        if len(group) == 1:
            parts.append(quoted[0])
            continue
        parts.append(f"g{g}-0")
        rules.extend(permutation_rules(quoted, f"g{g}"))
    root = "root ::= " + ' ", " '.join(parts) + " " + gbnf_literal(RANKING_END)
    return "\n".join([root, *rules]) + "\n"


def ranking_text(ranking: list[str]) -> str:
    return ", ".join(f'"{n}"' for n in ranking) + RANKING_END


def parse_ranking(text: str, scores: dict[str, int]) -> list[str] | None:
    """The ranking in a phase-3 output, or None unless it is consistent with the scores."""
    if not text.endswith(RANKING_END):
        return None
    names = re.findall(r'"([^"]*)"', text[: -len(RANKING_END)])
    if ranking_text(names) != text or sorted(names) != sorted(scores):
        return None
    if any(scores[a] < scores[b] for a, b in zip(names, names[1:])):
        return None
    return names


def choice_gbnf(candidates: list[str]) -> str:
    """One pick among tied names (the step-by-step fallback for very large tie groups)."""
    return "root ::= " + " | ".join(gbnf_literal(f'"{n}"') for n in candidates) + "\n"
