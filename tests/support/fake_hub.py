"""A fake Hugging Face Hub on 127.0.0.1, enough for the real `hf_hub_download` to talk to.

It answers `HEAD/GET /{repo}/resolve/{revision}/{file}` with the headers huggingface_hub reads
(X-Repo-Commit, ETag = the content's sha256 as the Hub does for LFS files, Content-Length) and
honours `Range`, so resumed downloads can be observed. `drop_after` cuts the first full GET after
that many bytes, to simulate a dropped connection.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict[tuple[str, str], bytes], etags: dict | None = None):
        self.files = dict(files)              # (repo, path) -> content
        self.etags = dict(etags or {})        # (repo, path) -> a wrong ETag to announce
        self.log: list[tuple[str, str, str | None]] = []
        self.drop_after: int | None = None
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def _serve(self, body: bool):
                hub.log.append((self.command, self.path, self.headers.get("Range")))
                match = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                key = (match.group(1), match.group(3)) if match else None
                data = hub.files.get(key)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if body and rng:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                chunk = data[start:]
                etag = hub.etags.get(key) or hashlib.sha256(data).hexdigest()
                self.send_header("Content-Length", str(len(chunk)))
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{etag}"')
                self.end_headers()
                if not body:
                    return
                if hub.drop_after is not None and start == 0:
                    cut, hub.drop_after = hub.drop_after, None
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [entry for entry in self.log if entry[0] == "GET"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
