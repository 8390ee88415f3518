"""A fake llama.cpp / vLLM / OpenAI-compatible completion server on 127.0.0.1.

It records every request (method, path, headers, JSON body) and answers from a script: a list of
completion texts (with how each stopped), consumed in order, in the response format of the
endpoint that was called.

POST /tokenize behaves as llama.cpp's llama-server (content — text, or token ids passed
through —, add_special default false, parse_special default true, with_pieces) when a real
llama.cpp vocabulary is attached (`vocab`: a llama_cpp.Llama, vocab-only is enough): it calls the
same llama_tokenize the server calls; vLLM's form (`prompt`, always parsing special text) too.
`tokenize_mode` "ignore-parse-special" imitates a build that predates that option; "missing"
answers 404, as servers without the endpoint do; "other-vocabulary" shifts every id by one (a
server running another model).

Choice points (ra_lite.remote.choice_route) need a model: with `model` attached (a full
llama_cpp.Llama), a one-token request asking for probabilities is answered from the model's real
next-token distribution after the prompt ids — llama-server's form (`n_probs`: the top N of the
raw distribution, `completion_probabilities`) or vLLM's (`logprob_token_ids`: exactly those ids,
keyed "token_id:N"); every field the client must send is checked (a wrong one is answered 400,
so the test fails on it). `probabilities` "none" answers without them (an old server).
A script entry may give the reasoning as token ids instead of text: (ids, stop).
`cache_n` sets what llama-server reports as served from the slot's cache (None: the whole prompt
but its last token).
"""

from __future__ import annotations

import http.server
import json
import threading
import time


class FakeCompletionServer:
    def __init__(self, script: list = (), models: list[str] = ("served-model",)):
        self.script = list(script)        # (text, stop) with stop in word/eos/limit, or (status, body)
        self.models = list(models)
        self.requests: list[dict] = []
        self.delay = 0.0
        self.vocab = None
        self.model = None
        self.probabilities = "raw"
        self.cache_n = None
        self.total_slots = 2
        self.model_lock = threading.Lock()      # one llama.cpp context: one request at a time
        self.tokenize_mode = "llama-server"
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
                if self.path == "/props":
                    self._reply(200, {"total_slots": fake.total_slots})
                    return
                self._reply(200, {"object": "list", "data": [{"id": m} for m in fake.models]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                fake.requests.append({"method": "POST", "path": self.path,
                                      "headers": dict(self.headers), "body": body})
                if self.path == "/tokenize":
                    self._reply(*fake.tokenize(body))
                    return
                time.sleep(fake.delay)
                if fake.model is not None and fake.is_choice(self.path, body):
                    with fake.model_lock:
                        answer = fake.choice(self.path, body)
                    self._reply(*answer)
                    return
                if not fake.script:
                    self._reply(500, {"error": "script exhausted"})
                    return
                step = fake.script.pop(0)
                if isinstance(step[0], int):
                    self._reply(*step)
                    return
                text, stop = step
                ids = list(range(7))
                if isinstance(text, list):         # the reasoning as token ids
                    with fake.model_lock:
                        ids, text = text, b"".join(_piece(fake.vocab, t) for t in text).decode()
                    text = text.split("</think>")[0]
                if self.path == "/completion":
                    prompt = body.get("prompt")
                    cached = fake.cache_n if fake.cache_n is not None else \
                        (len(prompt) - 1 if isinstance(prompt, list) else 300)
                    self._reply(200, {"content": text, "stop": True, "stop_type": stop,
                                      "stopping_word": "</think>" if stop == "word" else "",
                                      "tokens_evaluated": 321, "tokens_cached": 300,
                                      "tokens_predicted": len(ids), "tokens": ids,
                                      "timings": {"cache_n": cached, "prompt_n": 21}})
                else:
                    choice = {"index": 0, "text": text,
                              "finish_reason": "length" if stop == "limit" else "stop"}
                    if stop in ("word", "eos") and "vllm" in fake.flavour:
                        choice["stop_reason"] = "</think>" if stop == "word" else None
                    if body.get("return_token_ids"):
                        choice["token_ids"] = ids
                    self._reply(200, {"object": "text_completion", "choices": [choice],
                                      "usage": {"prompt_tokens": 321, "completion_tokens": len(ids)}})

            def _reply(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.flavour = "vllm"
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tokenize(self, body: dict) -> tuple[int, dict]:
        if self.vocab is None or self.tokenize_mode == "missing":
            return 404, {"error": "File Not Found"}
        with self.model_lock:
            return self._tokenize(body)

    def _tokenize(self, body: dict) -> tuple[int, dict]:
        if "prompt" in body:                       # vLLM's /tokenize: special text always parsed
            ids = self.vocab.tokenize(body["prompt"].encode("utf-8"), add_bos=False, special=True)
            if self.tokenize_mode == "other-vocabulary":
                ids = [t + 1 for t in ids]
            return 200, {"count": len(ids), "tokens": ids}
        parse = body.get("parse_special", True) or self.tokenize_mode == "ignore-parse-special"
        content = body.get("content", "")
        if isinstance(content, list):              # token ids pass through (tokenize_mixed)
            ids = list(content)
        else:
            ids = self.vocab.tokenize(content.encode("utf-8"),
                                      add_bos=bool(body.get("add_special", False)),
                                      special=bool(parse))
        if self.tokenize_mode == "other-vocabulary":
            ids = [t + 1 for t in ids]
        if body.get("with_pieces"):
            pieces = [_piece(self.vocab, t) for t in ids]
            return 200, {"tokens": [{"id": t, "piece": p.decode("utf-8") if _utf8(p) else list(p)}
                                    for t, p in zip(ids, pieces)]}
        return 200, {"tokens": ids}

    # --- choice points, answered from the attached model -------------------------------------
    @staticmethod
    def is_choice(path: str, body: dict) -> bool:
        if path == "/completion":
            return body.get("n_predict") == 1 and "n_probs" in body
        return "logprob_token_ids" in body

    def choice(self, path: str, body: dict) -> tuple[int, dict]:
        import numpy as np

        prompt = body.get("prompt")
        if not isinstance(prompt, list) or not all(isinstance(t, int) for t in prompt):
            return 400, {"error": "choice points need a token-id prompt"}
        if "prompt_logprobs" in body or "echo" in body:
            return 400, {"error": "prompt_logprobs/echo would turn the prefix cache off"}
        import llama_cpp

        # As llama-server's prompt cache: a prompt that extends the last one evaluates only
        # its new ids (so batches split as on a real server); anything else starts over.
        done = self.model.n_tokens
        if not (0 < done < len(prompt) and list(self.model.input_ids[:done]) == prompt[:done]):
            self.model.reset()
            done = 0
        self.model.eval(prompt[done:])
        last = llama_cpp.llama_get_logits_ith(self.model.ctx, -1)
        logits = np.ctypeslib.as_array(last, shape=(self.model.n_vocab(),)).astype(np.float64)
        logprobs = logits - logits.max()
        logprobs -= np.log(np.exp(logprobs).sum())
        if path == "/completion":
            if not isinstance(body.get("n_probs"), int) or body["n_probs"] < 1 or \
                    body.get("post_sampling_probs") or not body.get("cache_prompt"):
                return 400, {"error": f"bad choice-point fields: {body}"}
            top = np.argsort(-logprobs)[: body["n_probs"]]
            entry = {"id": int(top[0]), "token": "", "bytes": [], "logprob": float(logprobs[top[0]]),
                     "top_logprobs": [{"id": int(t), "token": "", "bytes": [],
                                       "logprob": float(logprobs[t])} for t in top]}
            cached = self.cache_n if self.cache_n is not None else len(prompt) - 1
            answer = {"content": "", "stop": True, "stop_type": "limit", "tokens_evaluated": len(prompt),
                      "tokens_predicted": 1, "tokens": [],
                      "timings": {"cache_n": cached, "prompt_n": len(prompt) - cached}}
            if self.probabilities != "none":
                answer["completion_probabilities"] = [entry]
            return 200, answer
        wanted = body["logprob_token_ids"]
        if not (isinstance(wanted, list) and 0 < len(wanted) <= 128 and
                all(isinstance(t, int) for t in wanted)) or body.get("logprobs") is None or \
                body.get("allowed_token_ids") != wanted or \
                body.get("return_tokens_as_token_ids") is not True or body.get("max_tokens") != 1 \
                or body.get("model") is None:
            return 400, {"error": f"bad choice-point fields: {body}"}
        top = {f"token_id:{t}": max(float(logprobs[t]), -9999.0) for t in wanted}
        first = max(wanted, key=lambda t: logprobs[t])
        return 200, {"object": "text_completion", "choices": [{
            "index": 0, "text": "", "finish_reason": "length", "stop_reason": None,
            "logprobs": {"tokens": [f"token_id:{first}"], "token_logprobs": [float(logprobs[first])],
                         "top_logprobs": [top], "text_offset": [0]}}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1}}

    def posts(self) -> list[dict]:
        """The completion requests (POSTs other than /tokenize)."""
        return [r for r in self.requests if r["method"] == "POST" and r["path"] != "/tokenize"]

    def tokenize_requests(self) -> list[dict]:
        return [r["body"] for r in self.requests if r.get("path") == "/tokenize"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _piece(llm, token: int) -> bytes:
    """common_token_to_piece(vocab, token, special=true), as llama-server's with_pieces uses."""
    import ctypes

    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, 256, 0, True)
    return buf.raw[:max(n, 0)]
