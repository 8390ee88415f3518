"""A Judge backend that runs on one existing serving engine instead of a local GGUF.

    from ra_lite.remote import load_remote
    judge = load_remote("http://127.0.0.1:8080", kind="llama.cpp")      # llama.cpp's llama-server
    judge = load_remote("http://gpu-box:8000", kind="vllm", model="RewardAnything-8B-v1")
    judge.judge(principle, prompt, responses)       # same Judgment as a local judge

Same prompt: the chat is rendered here (Qwen3's ChatML + <think> rules, or a template you pass)
and sent to a raw-completion endpoint as token ids built by the local rule (tokens.py): the
template's control tokens are control tokens, the messages (untrusted responses) are plain
text, so a response cannot close the user turn and answer for the judge. The ids come from
llama-server's /tokenize, or from the model's GGUF named as `tokenizer`. Text prompts, which the
server tokenizes with special-token parsing on, are sent only with text_prompts=True, and then a
request containing control-token text is refused. No server-side chat template in between. Same
grammar: generation runs in phases (grammar.py) — free reasoning capped by the think budget,
then the scores under a GBNF grammar, then the ranking under a grammar built from those scores —
so every answer obeys the rules the local decoder enforces, including "the ranking follows the
scores", which no single CFG can express. The joined output is checked with parse_answer before
it is returned.

kinds (which endpoint and grammar field; where the prompt's token ids come from):
    llama.cpp     POST /completion, "grammar" (llama.cpp's llama-server); ids from its /tokenize
    vllm          POST /v1/completions, "structured_outputs": {"grammar": ...} (vLLM >= 0.12);
                  ids from `tokenizer` (vLLM's /tokenize always parses special-token text)
    vllm-legacy   POST /v1/completions, "guided_grammar" (vLLM before 0.12); as vllm
    openai        POST /v1/completions, "grammar" (llama-cpp-python's server): text prompts only
                  (its /v1/completions takes no token ids), so it needs text_prompts=True

Differences from local decoding, by necessity: the server's sampler and RNG draw the tokens
(the settings — temperature, top-k 50, top-p, seed — are the same); scores come without per-digit
probabilities (expected_scores is None); and where the server does not say whether reasoning
stopped at `</think>` or at an end-of-generation token ("openai" kind), both count as closed by
the model. The backend keeps no per-request state, so one instance may serve many threads.

Failures say whose they are: a server that cannot be reached, drops the connection, times out
or answers 5xx raises ServerUnavailable (a pool of servers, pool.py, then retries the judgment
on another); a 4xx is the request's own problem (e.g. it does not fit the server's context).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ra_lite.chat_template import render_chat
from ra_lite.runtime.decode import AFTER_THINK, BUDGET_CLOSE, DecodeResult
from ra_lite.errors import RaLiteError
from ra_lite.judgment import Timings
from ra_lite.grammar import THINK_CLOSE, THINK_OPEN, AnswerError, parse_answer
from ra_lite.remote.grammar import (RANKING_END, choice_gbnf, forced_ranking, parse_ranking,
                                    parse_scores, ranking_fits_one_grammar, ranking_gbnf,
                                    ranking_text, scores_gbnf, scores_max_text, tie_groups)
from ra_lite.remote.tokens import (CONTROL_TEXT, GgufTokenizer, RemotePrompt, ServerTokenizer,
                                   control_pattern, refuse_control_text)

KINDS = ("llama.cpp", "vllm", "vllm-legacy", "openai")
ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama-server": "llama.cpp",
           "llama-cpp-python": "openai"}
TOP_K = 50            # the local sampler chain's top-k (the official runtime's HF default)
PROBE_TIMEOUT = 10.0  # seconds for /health and /props (a judgment's own requests get `timeout`)

# Qwen3's chat template, reduced to what a judgment uses (a system and a user message, no tools):
# ChatML, and with thinking off an empty think block after the assistant header.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)


class ServerUnavailable(RaLiteError):
    """The server, not the request, failed: unreachable, connection dropped, timed out, or
    5xx. Another server may judge the same request."""


@dataclass
class Completion:
    text: str
    stop: str                  # "word" (a stop string), "eos", "limit", or "stop" (eos or word)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] | None = None


def template_from_gguf(path: str | Path) -> tuple[str, str, str]:
    """(chat template, BOS text, EOS text) of a local GGUF, to render exactly as LocalBackend.

    Reads the header only (runtime.gguf_info.read_header): the vocabulary is skipped except the
    two tokens whose text is needed."""
    from ra_lite.runtime.gguf_info import read_header

    try:
        header = read_header(path)
        ids = {which: header.metadata.get(f"tokenizer.ggml.{which}_token_id")
               for which in ("bos", "eos")}
        wanted = {i for i in ids.values() if isinstance(i, int)}
        if wanted:
            header = read_header(path, pick={"tokenizer.ggml.tokens": wanted})
    except (OSError, ValueError) as e:
        raise RaLiteError(f"cannot read {path} as a GGUF: {e}",
                          "pass the served model's .gguf file (or the template text)") from None
    template = header.metadata.get("tokenizer.chat_template")
    if not template:
        raise RaLiteError(f"{path} has no chat template", "pass the template text instead")
    tokens = header.picked.get("tokenizer.ggml.tokens", {})
    text = {which: tokens.get(i, "") if isinstance(i, int) else "" for which, i in ids.items()}
    return template, text["bos"], text["eos"]


class RemoteBackend:
    """The Backend protocol (judge.py) over an OpenAI-compatible or llama.cpp server."""

    def __init__(self, base_url: str, kind: str = "llama.cpp", *, api_key: str | None = None,
                 model: str | None = None, template: str | Path | None = None,
                 timeout: float = 600.0, text_prompts: bool = False,
                 tokenizer: str | Path | None = None):
        kind = ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise RaLiteError(f"unknown remote kind {kind!r}", f"use one of {', '.join(KINDS)}")
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise RaLiteError(f"{base_url!r} is not an http(s) URL", "write http://host:port")
        self.base_url = base.removesuffix("/v1")
        self.kind, self.api_key, self.model, self.timeout = kind, api_key, model, timeout
        self.bos = self.eos = ""
        if template is None:
            self.template = QWEN3_TEMPLATE
        elif str(template).endswith(".gguf") and Path(template).is_file():
            self.template, self.bos, self.eos = template_from_gguf(template)
        else:
            self.template = str(template)
        self.description = f"{kind} server at {self.base_url}" + (f" ({model})" if model else "")
        self.text_prompts = text_prompts
        self.tokens = self._token_source(tokenizer)
        if text_prompts:
            # The screen for text prompts: the named GGUF's control tokens, else the Qwen3 family's.
            known = []
            if tokenizer is not None:
                vocabulary = GgufTokenizer(tokenizer)
                known = vocabulary.control_texts
                vocabulary.close()
            builtin = [] if known else [CONTROL_TEXT.pattern]
            self.control = re.compile("|".join(
                builtin + [control_pattern(known + [self.bos, self.eos]).pattern]))

    def _token_source(self, tokenizer):
        """Where token-id prompts get their ids; None for text prompts (see tokens.py)."""
        if self.text_prompts:
            return None
        if self.kind == "openai":
            raise RaLiteError(
                "llama-cpp-python's server (--remote-kind openai) takes prompts only as text, "
                "which it tokenizes with control-token parsing on, so a response could inject "
                "control tokens",
                "judge on llama.cpp's llama-server (--remote-kind llama.cpp) or vLLM, which take "
                "token ids; or pass --remote-text-prompts to send text and refuse requests that "
                "contain control-token text")
        if tokenizer is not None:
            return GgufTokenizer(tokenizer)
        if self.kind == "llama.cpp":
            return ServerTokenizer(self._request, self.base_url)
        raise RaLiteError(
            "vLLM's /tokenize always parses control-token text, so it cannot tokenize the "
            "responses as plain text for a token-id prompt",
            "pass the served model's GGUF as the tokenizer (--remote-tokenizer MODEL.gguf, same "
            "vocabulary), or --remote-text-prompts to send text and refuse requests that "
            "contain control-token text")

    def close(self) -> None:
        if isinstance(self.tokens, GgufTokenizer):
            self.tokens.close()

    # --- the Backend protocol ------------------------------------------------------------------
    def render(self, chat, thinking: bool) -> str:
        return render_chat(self.template, chat.messages, enable_thinking=thinking,
                           bos_token=self.bos, eos_token=self.eos)

    def generate(self, chat, options, forcing=None, on_reasoning=None) -> DecodeResult:
        if forcing is not None:
            raise RaLiteError("replaying a judgment needs the model's logits, which a remote "
                              "server does not expose", "replay with a local GGUF (ra_lite.load)")
        names = chat.masked_names
        started = time.perf_counter()
        rendered = self.render(chat, options.think_budget > 0)
        prompt, parts = self._prompt(chat, rendered), []
        reasoning, closing, closed, think_ids = "", "", False, []
        first = None
        if options.think_budget > 0:
            if not rendered.rstrip().endswith(THINK_OPEN):
                prompt.add(THINK_OPEN + "\n")
                parts.append(THINK_OPEN + "\n")
            first = self.complete(prompt, max_tokens=options.think_budget, options=options,
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

        scored = self.complete(prompt, max_tokens=len(scores_max_text(names)) + 8,
                               options=options, grammar=scores_gbnf(names))
        first = first or scored
        scores = parse_scores(scored.text, names)
        if scores is None:
            raise self._outside_grammar("scores", scored.text)
        prompt.add(scored.text)         # grammar-checked: ra-lite's own answer text
        answer_tokens = scored.completion_tokens
        ranking = forced_ranking(scores)
        if ranking is not None:
            rank_text = ranking_text(ranking)
        elif ranking_fits_one_grammar(scores):
            ranked = self.complete(prompt, max_tokens=len(ranking_text(names)) + 8,
                                   options=options, grammar=ranking_gbnf(scores))
            ranking, rank_text = parse_ranking(ranked.text, scores), ranked.text
            if ranking is None:
                raise self._outside_grammar("ranking", ranked.text)
            answer_tokens += ranked.completion_tokens
        else:
            ranking, rank_text, used = self._rank_step_by_step(prompt, scores, options)
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
            prompt_tokens_reused=min(first.cached_tokens, first.prompt_tokens),
            answer_tokens=answer_tokens, answer_tokens_evaluated=answer_tokens,
            timings=Timings(think_s=thought_at - started, answer_s=done - thought_at,
                            total_s=done - started))

    def _prompt(self, chat, rendered: str) -> RemotePrompt:
        if self.tokens is None:     # text prompts: only what cannot inject goes out
            refuse_control_text(chat, self.control)
            return RemotePrompt(rendered)
        ids = self.tokens.prompt(rendered, [m["content"] for m in chat.messages])
        return RemotePrompt(rendered, ids, self.tokens)

    def _rank_step_by_step(self, prompt: RemotePrompt, scores: dict[str, int], options):
        """One request per tied position: for tie groups too large for a permutation grammar."""
        ranking, text, used = [], "", 0
        for group in tie_groups(scores):
            remaining = list(group)
            while remaining:
                text += ", " if ranking else ""
                if len(remaining) == 1:
                    pick, piece = remaining[0], f'"{remaining[0]}"'
                else:
                    c = self.complete(prompt.plus(text), max_tokens=len(max(remaining, key=len)) + 8,
                                      options=options, grammar=choice_gbnf(remaining))
                    pick, piece, used = c.text.strip('"'), c.text, used + c.completion_tokens
                    if piece != f'"{pick}"' or pick not in remaining:
                        raise self._outside_grammar("ranking", c.text)
                ranking.append(pick)
                remaining.remove(pick)
                text += piece
        return ranking, text + RANKING_END, used

    def _outside_grammar(self, what: str, text: str) -> RaLiteError:
        field = {"llama.cpp": '"grammar"', "openai": '"grammar"',
                 "vllm": '"structured_outputs.grammar"', "vllm-legacy": '"guided_grammar"'}
        return RaLiteError(f"{self.base_url} returned {what} outside the grammar: {text[:200]!r}",
                           f"the server must honour the {field[self.kind]} field; check "
                           f"--remote-kind (llama.cpp, vllm, vllm-legacy, openai)")

    # --- one completion ------------------------------------------------------------------------
    def complete(self, prompt: RemotePrompt | str | list[int], *, max_tokens: int, options,
                 stop: list[str] | None = None, grammar: str | None = None) -> Completion:
        """One completion; `prompt` goes out as token ids (a list) or, opted into, as text."""
        if isinstance(prompt, RemotePrompt):
            prompt = prompt.payload
        sampling = {"temperature": options.temperature, "top_p": options.top_p, "top_k": TOP_K,
                    "seed": options.seed, "stream": False}
        if self.kind == "llama.cpp":
            body = {"prompt": prompt, "n_predict": max_tokens, **sampling, "min_p": 0.0,
                    "repeat_penalty": 1.0, "cache_prompt": True, "return_tokens": True,
                    # the local chain's order (temperature first, as in HF generate)
                    "samplers": ["temperature", "top_k", "top_p"]}
            body.update({"stop": stop} if stop else {})
            body.update({"grammar": grammar} if grammar else {})
            return _llama_cpp_completion(self._request("/completion", body))
        body = {"prompt": prompt, "max_tokens": max_tokens, **sampling}
        model = self.model or (self._served_model() if self.kind.startswith("vllm") else None)
        body.update({"model": model} if model else {})
        body.update({"stop": stop} if stop else {})
        if self.kind == "openai":
            body.update(min_p=0.0, repeat_penalty=1.0)   # llama-cpp-python defaults: 0.05, 1.1
        if grammar:
            if self.kind == "vllm":
                body["structured_outputs"] = {"grammar": grammar}
            elif self.kind == "vllm-legacy":
                body["guided_grammar"] = grammar
            else:
                body["grammar"] = grammar
        return _openai_completion(self._request("/v1/completions", body), stop)

    def health(self) -> str | None:
        """None when the server is ready to judge, else why not (llama-server answers 503 on
        /health while it loads; servers without /health are asked for their models)."""
        try:
            data = self._request("/health", None, timeout=PROBE_TIMEOUT)
        except ServerUnavailable as e:
            return e.problem
        except RaLiteError as e:
            if getattr(e, "status", None) != 404:
                return e.problem
            try:
                self._request("/v1/models", None, timeout=PROBE_TIMEOUT)
            except RaLiteError as e2:
                return e2.problem
            return None
        status = data.get("status") if isinstance(data, dict) else None
        return None if status in (None, "ok", "healthy") else f"status {status!r}"

    def slots(self) -> int | None:
        """How many judgments the server runs at once (llama-server's /props total_slots)."""
        if self.kind != "llama.cpp":
            return None
        try:
            data = self._request("/props", None, timeout=PROBE_TIMEOUT)
        except RaLiteError:
            return None
        slots = data.get("total_slots") if isinstance(data, dict) else None
        return slots if isinstance(slots, int) and slots > 0 else None

    def _served_model(self) -> str | None:
        """vLLM wants the served model's name; ask for it once when none was given."""
        data = self._request("/v1/models", None)
        models = data.get("data") or [] if isinstance(data, dict) else []
        self.model = models[0].get("id") if models and isinstance(models[0], dict) else None
        return self.model

    def _request(self, path: str, body: dict | None, timeout: float | None = None):
        url = self.base_url + path
        timeout = timeout or self.timeout
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=headers,
                                         method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode("utf-8", "replace").strip()
            kind = ServerUnavailable if e.code >= 500 else RaLiteError
            error = kind(f"{url} answered HTTP {e.code}: {detail or e.reason}", _http_fix(e.code))
            error.status = e.code        # lets the /tokenize probe say what is missing
            raise error from None
        except (socket.timeout, TimeoutError):
            raise ServerUnavailable(f"{url} did not answer within {timeout:.0f}s",
                                    "raise the timeout, or lower the think budget") from None
        except urllib.error.URLError as e:
            raise ServerUnavailable(f"cannot reach {url} ({e.reason})",
                                    "is the server running? check the URL and port") from None
        except (http.client.HTTPException, ConnectionError, OSError) as e:
            # e.g. the server was killed mid-judgment: the connection is reset or closed early.
            raise ServerUnavailable(f"{url} dropped the connection mid-request "
                                    f"({type(e).__name__}: {e or 'no answer'})",
                                    "is the server still running? see its log") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise RaLiteError(f"{url} did not answer with JSON ({raw[:100]!r})",
                              "check the URL and --remote-kind") from None


def _think_end(closing: str, closed: bool, stop: str) -> str:
    """Why the reasoning ended, in the local decoder's words: the model closed it, the budget
    cut it, or the server stopped at an end-of-generation token (and ra-lite closed it)."""
    if not closing:
        return "off"
    if closed:
        return "model"
    return "end_of_generation" if stop == "eos" else "budget"


def _http_fix(code: int) -> str:
    if code in (401, 403):
        return "check the API key"
    if code == 404:
        return "check the URL and --remote-kind (llama.cpp serves /completion, the others /v1/completions)"
    if code in (400, 422):
        return ("the server refused the request: a context too small for prompt + think budget, "
                "or a grammar field this server does not know (check --remote-kind)")
    return "the server failed; see its log"


def _llama_cpp_completion(data: dict) -> Completion:
    if not isinstance(data, dict) or not isinstance(data.get("content"), str):
        raise RaLiteError("a llama.cpp /completion answer has no 'content'",
                          "check --remote-kind: is this a llama.cpp server?")
    stop = data.get("stop_type")   # newer servers: "eos", "limit", "word"; older: booleans
    if stop not in ("eos", "limit", "word"):
        stop = ("word" if data.get("stopped_word") else "eos" if data.get("stopped_eos")
                else "limit" if data.get("stopped_limit") else "stop")
    tokens = data.get("tokens")
    return Completion(text=data["content"], stop=stop,
                      prompt_tokens=int(data.get("tokens_evaluated") or 0),
                      cached_tokens=int(data.get("tokens_cached") or 0),
                      completion_tokens=int(data.get("tokens_predicted") or 0),
                      token_ids=tokens if isinstance(tokens, list) else None)


def _openai_completion(data: dict, stop: list[str] | None) -> Completion:
    try:
        choice = data["choices"][0]
        text = choice["text"]
    except (KeyError, IndexError, TypeError):
        raise RaLiteError("a /v1/completions answer has no choices[0].text",
                          "check --remote-kind: is this an OpenAI-compatible server?") from None
    finish = choice.get("finish_reason")
    if finish == "length":
        kind = "limit"
    elif "stop_reason" in choice:    # vLLM: the stop string matched, or None for end-of-sequence
        kind = "word" if choice["stop_reason"] in (stop or []) else "eos"
    else:
        kind = "stop"
    usage = data.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Completion(text=text, stop=kind, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      cached_tokens=int(cached),
                      completion_tokens=int(usage.get("completion_tokens") or 0))
