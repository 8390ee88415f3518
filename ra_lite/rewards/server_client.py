"""A running `ra-lite serve` as the judge of rewards: its official RewardAnything API.

RL trainers often keep the policy on the GPUs and the judge elsewhere; `ra-lite serve` on that
box (with --parallel for continuous batching) answers POST /api/rewardanything. This client
makes such a server usable wherever a ra-lite Judge is (judge_request), so the reward adapters
work the same with a local model and with a server; judgments are sent concurrently.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ra_lite.errors import RaLiteError


@dataclass
class ServedJudgment:
    """The parts of a server's answer a reward needs."""

    scores: dict[str, int]
    ranking: list[str]
    expected_scores: dict[str, float] | None
    think_tokens: int = 0
    raw: dict = field(default_factory=dict, repr=False)
    reasoning: str = ""
    think_end: str = ""
    consistency: None = None             # the server's own consistency stays in raw


class RewardServerClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 900.0):
        if not url.startswith(("http://", "https://")):
            raise RaLiteError(f"{url!r} is not an http(s) URL", "write http://host:port")
        self.url = url.rstrip("/")
        self.api_key, self.timeout = api_key, timeout
        self.options = None                  # the server applies its own settings
        # The judge queue's view: this client is also its own backend (a RequestBackend that
        # judges whole requests; slots() below sizes `auto`).
        self.backend = self
        self.model_name = f"ra-lite server at {self.url}"

    def _call(self, method: str, path: str, body=None) -> dict:
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace")
            raise RaLiteError(f"{self.url}{path} answered HTTP {e.code}: {detail}",
                              "see the server's log") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RaLiteError(f"the ra-lite server at {self.url} failed ({e})",
                              "is `ra-lite serve` running there?") from None

    def say_once(self, key: str, message: str) -> None:
        """The judge queue's notices: nothing to say for a server that judges by itself."""

    def judge_request(self, request, options=None, **_) -> ServedJudgment:
        data = self._call("POST", "/api/rewardanything",
                          {"principle": request.principle, "prompt": request.prompt,
                           "responses": request.responses})
        details = data.get("ra_lite") or {}
        return ServedJudgment(scores=data["results"]["scores"],
                              ranking=data["results"]["best-to-worst"],
                              expected_scores=details.get("expected_scores"),
                              think_tokens=int((details.get("tokens") or {}).get("think") or 0),
                              raw=data, reasoning=str(data.get("thoughts") or ""),
                              think_end=str(details.get("think_end") or ""))

    def slots(self) -> int | None:
        """How many judgments the server runs at once (its /health says)."""
        try:
            queue = self._call("GET", "/health").get("queue") or {}
        except RaLiteError:
            return None
        return max(int(queue.get("parallel") or 1), int(queue.get("workers") or 1))

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
