"""`ra-lite doctor --remote URL`: is this server set up for cheap choice-point judging?

Three things decide what a remote judgment costs (client.py, choice_route.py):

    probabilities   the server returns next-token probabilities (llama-server's n_probs, vLLM's
                    logprob_token_ids): else every judgment takes the grammar route
    prefix kept     a judgment's follow-up request finds its prompt in the slot it was pinned
                    to, after another client used another slot. llama-server started with the
                    default -np (auto: 4 slots over one unified KV cache) and --cache-idle-slots
                    (default on) clears every idle slot when a new task starts, so each choice
                    request re-processes the whole prompt (seconds per choice on a long one)
    slots           how many judgments it runs at once (ra-lite sends that many)

The probe costs a few one-token requests on ~300-token prompts, pinned to slots 0 and 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ra_lite.errors import RaLiteError

PROBE_TEXT = ("ra-lite doctor checks whether this server keeps a judgment's prompt in its slot "
              "between two requests. ") * 12
SERVER_FLAGS = "-np K --no-cache-idle-slots"     # what the README says to start llama-server with


@dataclass
class ServerCheck:
    url: str
    kind: str
    ready: bool
    slots: int | None = None
    route: str = ""                       # what --remote-route auto will use
    probabilities: bool | None = None     # None: not probed
    prefix_kept: bool | None = None       # None: not probed (or the server does not say)
    problems: list[str] = field(default_factory=list)      # each with its fix

    def to_dict(self) -> dict:
        return asdict(self)


def check_server(backend) -> ServerCheck:
    """Probe one RemoteBackend's server (see the module docstring)."""
    check = ServerCheck(backend.base_url, backend.kind, ready=False)
    problem = backend.health()
    if problem is not None:
        check.problems.append(f"not ready: {problem} (start it, or wait until its model is "
                              "loaded)")
        return check
    check.ready, check.slots, check.route = True, backend.slots(), backend.route
    if backend.route != "choices":
        reason = "text prompts" if backend.tokens is None else f"kind {backend.kind}"
        check.problems.append(f"judgments take the grammar route ({reason}): integer scores "
                              "only; llama-server or vLLM with token ids read probabilities")
        return check
    try:
        if backend.kind == "llama.cpp":
            _probe_llama_server(backend, check)
        else:
            _probe_vllm(backend, check)
    except RaLiteError as e:
        check.problems.append(f"the probe failed: {e.one_line()}")
    return check


def _probe_llama_server(backend, check: ServerCheck) -> None:
    first = backend.tokens.plain(PROBE_TEXT)
    other = backend.tokens.plain(PROBE_TEXT.upper())
    asked = backend.choice_logprobs(first, first[:1], slot=0)
    check.probabilities = asked.logprobs is not None
    if not check.probabilities:
        check.problems.append("it returns no n_probs probabilities: judgments fall back to the "
                              "grammar route (update llama-server)")
        return
    if (check.slots or 1) > 1:
        backend.choice_logprobs(other, other[:1], slot=1)   # another client, another slot
    again = backend.choice_logprobs(first + first[:2], first[:1], slot=0)
    if again.cached_tokens is None:
        return
    check.prefix_kept = again.cached_tokens >= len(first) - 1
    if not check.prefix_kept:
        check.problems.append(
            f"a pinned slot lost its prompt when another slot was used (found "
            f"{again.cached_tokens} of {len(first)} tokens): every choice request would "
            f"re-process the whole prompt. Start llama-server with {SERVER_FLAGS} (K slots, each "
            "keeping its own cache)")


def _probe_vllm(backend, check: ServerCheck) -> None:
    ids = backend.tokens.plain(PROBE_TEXT)
    asked = backend.choice_logprobs(ids, ids[:2], slot=None)
    check.probabilities = bool(asked.logprobs) and all(t in asked.logprobs for t in ids[:2])
    if not check.probabilities:
        check.problems.append("it did not return logprob_token_ids' log-probabilities: "
                              "judgments fall back to the grammar route (update vLLM)")
        return
    again = backend.choice_logprobs(ids + ids[:2], ids[:2], slot=None)
    if again.cached_tokens is not None:      # vLLM says so with --enable-prompt-tokens-details
        check.prefix_kept = again.cached_tokens >= len(ids) - 16    # cached in blocks of 16
        if not check.prefix_kept:
            check.problems.append("its prefix cache did not serve a repeated prompt: start vLLM "
                                  "with prefix caching on (the default)")


def format_check(check: ServerCheck) -> list[str]:
    yes = {True: "yes", False: "NO", None: "not checked"}
    lines = [f"server          {check.url} ({check.kind}): "
             + ("ready" if check.ready else "not ready")]
    if check.ready:
        lines += [f"slots           {check.slots or 'not said'}",
                  f"route           {check.route}"
                  + (" (scores read from the server's probabilities)"
                     if check.route == "choices" else ""),
                  f"probabilities   {yes[check.probabilities]}",
                  f"prefix kept     {yes[check.prefix_kept]}"]
    lines += [f"problem         {p}" for p in check.problems]
    return lines
