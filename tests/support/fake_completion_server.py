"""A fake llama.cpp / vLLM / OpenAI-compatible completion server on 127.0.0.1.

It records every request (method, path, headers, JSON body) and answers from a script: a list of
completion texts (with how each stopped), consumed in order, in the response format of the
endpoint that was called.

POST /tokenize behaves as llama.cpp's llama-server (content, add_special default false,
parse_special default true, with_pieces) when a real llama.cpp vocabulary is attached
(`vocab`: a llama_cpp.Llama, vocab-only is enough): it calls the same llama_tokenize the server
calls. `tokenize_mode` "ignore-parse-special" imitates a build that predates that option;
"missing" answers 404, as servers without the endpoint do.
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
        self.tokenize_mode = "llama-server"
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.requests.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
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
                if not fake.script:
                    self._reply(500, {"error": "script exhausted"})
                    return
                step = fake.script.pop(0)
                if isinstance(step[0], int):
                    self._reply(*step)
                    return
                text, stop = step
                if self.path == "/completion":
                    self._reply(200, {"content": text, "stop": True, "stop_type": stop,
                                      "stopping_word": "</think>" if stop == "word" else "",
                                      "tokens_evaluated": 321, "tokens_cached": 300,
                                      "tokens_predicted": 7, "tokens": list(range(7))})
                else:
                    choice = {"index": 0, "text": text,
                              "finish_reason": "length" if stop == "limit" else "stop"}
                    if stop in ("word", "eos") and "vllm" in fake.flavour:
                        choice["stop_reason"] = "</think>" if stop == "word" else None
                    self._reply(200, {"object": "text_completion", "choices": [choice],
                                      "usage": {"prompt_tokens": 321, "completion_tokens": 7}})

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
        parse = body.get("parse_special", True) or self.tokenize_mode == "ignore-parse-special"
        ids = self.vocab.tokenize(body.get("content", "").encode("utf-8"),
                                  add_bos=bool(body.get("add_special", False)), special=bool(parse))
        if body.get("with_pieces"):
            pieces = [_piece(self.vocab, t) for t in ids]
            return 200, {"tokens": [{"id": t, "piece": p.decode("utf-8") if _utf8(p) else list(p)}
                                    for t, p in zip(ids, pieces)]}
        return 200, {"tokens": ids}

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
