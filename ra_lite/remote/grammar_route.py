"""Remote judging by grammar: the answer decoded on the server under per-phase GBNF grammars.

The route for servers that return no probabilities (and for text prompts, where ra-lite cannot
extend a prompt by exact ids): free reasoning capped by the think budget, then the scores under
`scores_gbnf`, then the ranking under a grammar built from those scores (grammar.py). The server
decodes the answer's fixed JSON token by token and its sampler draws the digits, so the scores
come without probabilities (expected_scores is None) and a replay is impossible. The choice-point
route (choice_route.py) is preferred wherever the server can give probabilities.
"""

from __future__ import annotations

import time

from ra_lite.errors import RaLiteError
from ra_lite.grammar import THINK_CLOSE, THINK_OPEN, AnswerError, parse_answer
from ra_lite.judgment import ServerWork, Timings
from ra_lite.remote.grammar import (RANKING_END, choice_gbnf, forced_ranking, parse_ranking,
                                    parse_scores, ranking_fits_one_grammar, ranking_gbnf,
                                    ranking_text, scores_gbnf, scores_max_text, tie_groups)
from ra_lite.runtime.decode import AFTER_THINK, BUDGET_CLOSE, DecodeResult


class _Counted:
    """The backend's complete(), counting each request into a ServerWork."""

    def __init__(self, backend):
        self.backend = backend
        self.work = ServerWork(route="grammar")

    def __call__(self, prompt, **kwargs):
        completion = self.backend.complete(prompt, **kwargs)
        self.work.count(completion.completion_tokens, completion.prompt_tokens,
                        completion.cached_tokens)
        return completion


def judge_by_grammar(backend, chat, options, forcing=None, on_reasoning=None) -> DecodeResult:
    if forcing is not None:
        raise RaLiteError("replaying a judgment needs the model's probabilities, which this "
                          "server route does not read",
                          "judge on llama.cpp's llama-server or vLLM with token-id prompts "
                          "(--remote-route choices), or replay with a local GGUF")
    complete = _Counted(backend)
    names = chat.masked_names
    started = time.perf_counter()
    rendered = backend.render(chat, options.think_budget > 0)
    prompt, parts = backend.remote_prompt(chat, rendered), []
    reasoning, closing, closed, think_ids = "", "", False, []
    first = None
    if options.think_budget > 0:
        if not rendered.rstrip().endswith(THINK_OPEN):
            prompt.add(THINK_OPEN + "\n")
            parts.append(THINK_OPEN + "\n")
        first = complete(prompt, max_tokens=options.think_budget, options=options,
                         stop=[THINK_CLOSE])
        thought, closed = first.text, first.stop in ("word", "stop")
        if THINK_CLOSE in thought:      # a server that returns text past its stop string
            thought, closed = thought[: thought.index(THINK_CLOSE)], True
        # As locally: the model's own close gets "</think>\n\n"; a budget or end-of-generation
        # stop gets the block closed for it (BUDGET_CLOSE).
        closing = THINK_CLOSE + AFTER_THINK if closed else BUDGET_CLOSE
        reasoning = thought.strip()
        think_ids = list(first.token_ids or [])[: options.think_budget]
        parts += [thought, closing]
        prompt.add(thought, generated=True).add(closing)
    thought_at = time.perf_counter()

    scored = complete(prompt, max_tokens=len(scores_max_text(names)) + 8, options=options,
                      grammar=scores_gbnf(names))
    first = first or scored
    scores = parse_scores(scored.text, names)
    if scores is None:
        raise backend.outside_grammar("scores", scored.text)
    prompt.add(scored.text)         # grammar-checked: ra-lite's own answer text
    answer_tokens = scored.completion_tokens
    ranking = forced_ranking(scores)
    if ranking is not None:
        rank_text = ranking_text(ranking)
    elif ranking_fits_one_grammar(scores):
        ranked = complete(prompt, max_tokens=len(ranking_text(names)) + 8, options=options,
                          grammar=ranking_gbnf(scores))
        ranking, rank_text = parse_ranking(ranked.text, scores), ranked.text
        if ranking is None:
            raise backend.outside_grammar("ranking", ranked.text)
        answer_tokens += ranked.completion_tokens
    else:
        ranking, rank_text, used = _rank_step_by_step(backend, complete, prompt, scores, options)
        answer_tokens += used
    text = "".join(parts) + scored.text + rank_text
    try:
        parse_answer(text, names)
    except AnswerError as e:   # cannot happen if the phases did their job: say so loudly
        raise RaLiteError(f"the remote judgment is invalid ({e})", "report this bug") from e
    done = time.perf_counter()
    return DecodeResult(
        text=text, reasoning=reasoning, scores=scores, ranking=ranking, choices=[],
        think_tokens=think_ids, think_closing=closing,
        think_end=_think_end(closing, closed, first.stop if options.think_budget else ""),
        prompt_tokens=first.prompt_tokens,
        prompt_tokens_reused=min(first.cached_tokens or 0, first.prompt_tokens),
        answer_tokens=answer_tokens, answer_tokens_evaluated=answer_tokens,
        timings=Timings(think_s=thought_at - started, answer_s=done - thought_at,
                        total_s=done - started),
        server=complete.work)


def _rank_step_by_step(backend, complete, prompt, scores: dict[str, int], options):
    """One request per tied position: for tie groups too large for a permutation grammar."""
    ranking, text, used = [], "", 0
    for group in tie_groups(scores):
        remaining = list(group)
        while remaining:
            text += ", " if ranking else ""
            if len(remaining) == 1:
                pick, piece = remaining[0], f'"{remaining[0]}"'
            else:
                c = complete(prompt.plus(text), max_tokens=len(max(remaining, key=len)) + 8,
                             options=options, grammar=choice_gbnf(remaining))
                pick, piece, used = c.text.strip('"'), c.text, used + c.completion_tokens
                if piece != f'"{pick}"' or pick not in remaining:
                    raise backend.outside_grammar("ranking", c.text)
            ranking.append(pick)
            remaining.remove(pick)
            text += piece
    return ranking, text + RANKING_END, used


def _think_end(closing: str, closed: bool, stop: str) -> str:
    """Why the reasoning ended, in the local decoder's words: the model closed it, the budget
    cut it, or the server stopped at an end-of-generation token (and ra-lite closed it)."""
    if not closing:
        return "off"
    if closed:
        return "model"
    return "end_of_generation" if stop == "eos" else "budget"
