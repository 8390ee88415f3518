"""A Judge backend that runs on one existing serving engine instead of a local GGUF.

    from ra_lite.remote import load_remote
    judge = load_remote("http://127.0.0.1:8080", kind="llama.cpp")      # llama.cpp's llama-server
    judge = load_remote("http://gpu-box:8000", kind="vllm", model="RewardAnything-8B-v1",
                        tokenizer="RewardAnything-8B-v1-Q8_0.gguf")
    judge.judge(principle, prompt, responses)       # same Judgment as a local judge

Same prompt: the chat is rendered here (Qwen3's ChatML + <think> rules, or a template you pass)
and sent to a raw-completion endpoint as token ids built by the local rule (tokens.py): the
template's control tokens are control tokens, the messages (untrusted responses) are plain
text, so a response cannot close the user turn and answer for the judge. The ids come from
llama-server's /tokenize, or from the model's GGUF named as `tokenizer` (compared with the
server's tokenizer once per connection). Text prompts, which the server tokenizes with
special-token parsing on, are sent only with text_prompts=True, and then a request containing
control-token text is refused. No server-side chat template in between.

Two routes to the answer (route="auto" picks the first wherever it works):
    choices   choice_route.py: the local decoder's own steps; the server runs the reasoning and
              answers one one-token request per choice point with its raw probabilities; ra-lite
              samples the choice with its own sampler and seed. Expected scores, probability-
              averaged --orders and replays work as locally. Needs token ids (llama.cpp, vllm).
    grammar   grammar_route.py: the answer decoded on the server under per-phase GBNF grammars;
              integer scores only. For servers that give no probabilities (chosen automatically,
              with a notice) and for text prompts.

kinds (which endpoint and fields; where the prompt's token ids come from):
    llama.cpp     POST /completion, "n_probs", "grammar", "id_slot" (llama.cpp's llama-server);
                  ids from its /tokenize
    vllm          POST /v1/completions, "logprob_token_ids", "structured_outputs": {"grammar"}
                  (vLLM >= 0.12); ids from `tokenizer` (vLLM's /tokenize parses special text)
    vllm-legacy   POST /v1/completions, "guided_grammar" (vLLM before 0.12): grammar route
    openai        POST /v1/completions, "grammar" (llama-cpp-python's server): text prompts only
                  (its /v1/completions takes no token ids), so it needs text_prompts=True

The server's sampler and RNG draw the reasoning (the settings — temperature, top-k 50, top-p,
seed — are the same); where the server does not say whether reasoning stopped at `</think>` or
at an end-of-generation token ("openai" kind), both count as closed by the model. One instance
may serve many threads (each judgment keeps its own state; slots are handed out under a lock).

Failures say whose they are: a server that cannot be reached, drops the connection, times out
or answers 5xx raises ServerUnavailable (a pool of servers, pool.py, then retries the judgment
on another); a 4xx is the request's own problem (e.g. it does not fit the server's context).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ra_lite.chat_template import render_chat
from ra_lite.errors import RaLiteError
from ra_lite.grammar import THINK_CLOSE
from ra_lite.remote.choice_route import ServerVocabulary, judge_at_choices
from ra_lite.remote.grammar import gbnf_literal
from ra_lite.remote.grammar_route import judge_by_grammar
from ra_lite.remote.tokens import (CONTROL_TEXT, GgufTokenizer, RemotePrompt, ServerTokenizer,
                                   control_pattern, refuse_control_text)
from ra_lite.runtime.decode import DecodeResult

KINDS = ("llama.cpp", "vllm", "vllm-legacy", "openai")
ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "llama-server": "llama.cpp",
           "llama-cpp-python": "openai"}
TOP_K = 50            # the local sampler chain's top-k (the official runtime's HF default)
PROBE_TIMEOUT = 10.0  # seconds for /health and /props (a judgment's own requests get `timeout`)
ROUTES = ("auto", "choices", "grammar")
# llama-server's top-N at a choice point: the allowed ids (5 digits, a tie's names) must be in it.
CHOICE_PROBS = 100

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
    cached_tokens: int | None = None   # prompt tokens served from the server's cache (None: unsaid)
    completion_tokens: int = 0
    token_ids: list[int] | None = None
    logprobs: dict[int, float] | None = None   # next-token raw log-probabilities (choice points)


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
                 tokenizer: str | Path | None = None, route: str = "auto",
                 n_probs: int = CHOICE_PROBS, notify=None):
        kind = ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise RaLiteError(f"unknown remote kind {kind!r}", f"use one of {', '.join(KINDS)}")
        if route not in ROUTES:
            raise RaLiteError(f"unknown remote route {route!r}", f"use one of {', '.join(ROUTES)}")
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
        self.route_asked, self.route = route, self._route(route)
        self.n_probs = n_probs
        self.notify = notify or (lambda message: None)
        self._lock = threading.Lock()
        self._said: set[str] = set()
        self._vocabulary: ServerVocabulary | None = None
        self._free_slots: list[int] | None = None
        self._tokenizer_checked = False

    def _route(self, route: str) -> str:
        """auto: choice points wherever the server takes token ids and gives probabilities."""
        able = self.tokens is not None and self.kind in ("llama.cpp", "vllm")
        if route == "choices" and not able:
            raise RaLiteError(
                f"the choice-point route needs token-id prompts on llama.cpp's llama-server or "
                f"vLLM (this is {self.kind}" + (", with text prompts" if self.tokens is None
                                                 else "") + ")",
                "use --remote-route grammar (or auto), or judge on llama-server / vLLM with "
                "token ids")
        if route == "auto":
            return "choices" if able else "grammar"
        return route

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

    def generate(self, chat, options, forcing=None, on_reasoning=None,
                 cancelled=None) -> DecodeResult:
        if self.route == "choices":
            return judge_at_choices(self, chat, options, forcing, on_reasoning, cancelled)
        return judge_by_grammar(self, chat, options, forcing, on_reasoning)

    def remote_prompt(self, chat, rendered: str) -> RemotePrompt:
        if self.tokens is None:     # text prompts: only what cannot inject goes out
            refuse_control_text(chat, self.control)
            return RemotePrompt(rendered)
        return RemotePrompt(rendered, self.prompt_ids(chat, rendered), self.tokens)

    def prompt_ids(self, chat, rendered: str) -> list[int]:
        """The prompt as token ids, built by the local rule (tokens.py)."""
        self._check_tokenizer()
        return self.tokens.prompt(rendered, [m["content"] for m in chat.messages])

    def outside_grammar(self, what: str, text: str) -> RaLiteError:
        field = {"llama.cpp": '"grammar"', "openai": '"grammar"',
                 "vllm": '"structured_outputs.grammar"', "vllm-legacy": '"guided_grammar"'}
        return RaLiteError(f"{self.base_url} returned {what} outside the grammar: {text[:200]!r}",
                           f"the server must honour the {field[self.kind]} field; check "
                           f"--remote-kind (llama.cpp, vllm, vllm-legacy, openai)")

    # --- the choice-point route's requests (choice_route.py) -----------------------------------
    def vocabulary(self) -> ServerVocabulary:
        with self._lock:
            if self._vocabulary is None:
                self._vocabulary = ServerVocabulary(self.tokens)
            return self._vocabulary

    @contextlib.contextmanager
    def pinned_slot(self):
        """A server slot this judgment keeps to itself, so each request extends the prompt the
        slot already holds (llama-server's id_slot); None where slots are unknown or all taken
        (the server then picks the slot holding the longest common prefix)."""
        with self._lock:
            if self._free_slots is None:
                self._free_slots = list(range(self.slots() or 0)) if self.kind == "llama.cpp" \
                    else []
            slot = self._free_slots.pop(0) if self._free_slots else None
        try:
            yield slot
        finally:
            if slot is not None:
                with self._lock:
                    self._free_slots.append(slot)
                    self._free_slots.sort()

    def reason(self, ids: list[int], max_tokens: int, options, slot: int | None) -> Completion:
        """The think block's tokens: stop at </think>, the sampled ids returned (the last one
        the token that stopped it)."""
        fields = {"return_token_ids": True, "skip_special_tokens": False} \
            if self.kind.startswith("vllm") else {}
        return self.complete(ids, max_tokens=max_tokens, options=options, stop=[THINK_CLOSE],
                             slot=slot, fields=fields)

    def choice_logprobs(self, ids: list[int], allowed: list[int], slot: int | None) -> Completion:
        """One request whose answer is the raw next-token log-probabilities after `ids`:
        llama-server's top-N (n_probs), vLLM's for exactly the allowed ids."""
        if self.kind == "llama.cpp":
            body = {"prompt": ids, "n_predict": 1, "n_probs": self.n_probs, "cache_prompt": True,
                    "temperature": 0.0, "samplers": ["top_k"], "top_k": 1,
                    "post_sampling_probs": False}
            if slot is not None:
                body["id_slot"] = slot
            completion = _llama_cpp_completion(self._request("/completion", body))
        else:
            body = {"prompt": ids, "max_tokens": 1, "temperature": 0.0,
                    "logprobs": len(allowed), "logprob_token_ids": list(allowed),
                    "allowed_token_ids": list(allowed), "return_tokens_as_token_ids": True}
            model = self.model or self._served_model()
            body.update({"model": model} if model else {})
            completion = _openai_completion(self._request("/v1/completions", body), None)
        if completion.logprobs is None:
            self._no_probabilities()
        return completion

    def choose_by_grammar(self, ids: list[int], texts: list[str], options,
                          slot: int | None) -> Completion:
        """One pick among `texts` under a grammar (when the server gave no usable
        probabilities): the server's sampler draws it."""
        grammar = "root ::= " + " | ".join(gbnf_literal(t) for t in dict.fromkeys(texts)) + "\n"
        return self.complete(ids, max_tokens=max(len(t) for t in texts) + 2, options=options,
                             grammar=grammar, slot=slot)

    def _no_probabilities(self) -> None:
        if self.route_asked == "auto":
            self.route = "grammar"
        self._say_once("no-probabilities",
                       f"{self.base_url} returned no token probabilities, so scores come "
                       "without them" + (": this and later judgments use the grammar route"
                                         if self.route_asked == "auto" else "") +
                       " (llama-server: any recent build returns n_probs; vLLM: >= the release "
                       "with logprob_token_ids)")

    def cache_was_lost(self, expected: int, cached: int) -> None:
        self._say_once("cache-lost",
                       f"{self.base_url} re-processed a judgment's prompt between two of its "
                       f"requests (found {cached} of {expected} tokens in its cache): its slots "
                       "lose their cache between requests, which costs a full prefill per choice. "
                       "Start llama-server with -np K and --no-cache-idle-slots (see the README); "
                       "the judgments are still correct")

    def _say_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._said:
                return
            self._said.add(key)
        self.notify(message)

    def _check_tokenizer(self) -> None:
        """A local GGUF's vocabulary must be the served model's: compared once per connection on
        a probe with control tokens, accents, CJK and JSON."""
        if self._tokenizer_checked or not isinstance(self.tokens, GgufTokenizer):
            return
        probe = '<|im_start|>user\nNaïve 東京 judge: {"scores": {"model-1": 5}}<|im_end|>\n'
        if self.kind == "llama.cpp":
            data = self._request("/tokenize", {"content": probe, "add_special": False,
                                               "parse_special": True})
        else:
            body = {"prompt": probe, "add_special_tokens": False}
            model = self.model or self._served_model()
            data = self._request("/tokenize", {**body, **({"model": model} if model else {})})
        served = data.get("tokens") if isinstance(data, dict) else None
        local = self.tokens.forced(probe)
        if isinstance(served, list) and served != local:
            raise RaLiteError(
                f"{self.base_url} tokenizes text differently from the tokenizer GGUF "
                f"({self.tokens.path.name}): {served[:12]} vs {local[:12]}",
                "pass the GGUF of the model the server runs (--remote-tokenizer), same vocabulary")
        self._tokenizer_checked = True

    # --- one completion ------------------------------------------------------------------------
    def complete(self, prompt: RemotePrompt | str | list[int], *, max_tokens: int, options,
                 stop: list[str] | None = None, grammar: str | None = None,
                 slot: int | None = None, fields: dict | None = None) -> Completion:
        """One completion; `prompt` goes out as token ids (a list) or, opted into, as text.
        slot: llama-server's id_slot; fields: more body fields."""
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
            body.update({"id_slot": slot} if slot is not None else {})
            body.update(fields or {})
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
        body.update(fields or {})
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
    timings = data.get("timings") if isinstance(data.get("timings"), dict) else {}
    cached = timings.get("cache_n")      # the prompt tokens this request found in the slot
    logprobs = None
    probabilities = data.get("completion_probabilities")
    if isinstance(probabilities, list) and probabilities and isinstance(probabilities[0], dict):
        top = probabilities[0].get("top_logprobs")
        if isinstance(top, list):
            logprobs = {e["id"]: float(e["logprob"]) for e in top
                        if isinstance(e, dict) and isinstance(e.get("id"), int)
                        and isinstance(e.get("logprob"), (int, float))}
    return Completion(text=data["content"], stop=stop,
                      prompt_tokens=int(data.get("tokens_evaluated") or 0),
                      cached_tokens=int(cached) if isinstance(cached, int) else None,
                      completion_tokens=int(data.get("tokens_predicted") or 0),
                      token_ids=tokens if isinstance(tokens, list) else None, logprobs=logprobs)


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
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    token_ids = choice.get("token_ids")      # vLLM's return_token_ids
    return Completion(text=text, stop=kind, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                      cached_tokens=int(cached) if isinstance(cached, int) else None,
                      completion_tokens=int(usage.get("completion_tokens") or 0),
                      token_ids=token_ids if isinstance(token_ids, list) else None,
                      logprobs=_token_id_logprobs(choice.get("logprobs")))


def _token_id_logprobs(logprobs) -> dict[int, float] | None:
    """vLLM's top_logprobs of the first position, keyed "token_id:N" (return_tokens_as_token_ids)."""
    top = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(top, list) or not top or not isinstance(top[0], dict):
        return None
    out = {}
    for key, value in top[0].items():
        if isinstance(key, str) and key.startswith("token_id:") and \
                isinstance(value, (int, float)):
            try:
                out[int(key.removeprefix("token_id:"))] = float(value)
            except ValueError:
                continue
    return out
