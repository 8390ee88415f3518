"""A judgment request, checked before any model time is spent on it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ra_lite.errors import RaLiteError


@dataclass(frozen=True)
class JudgeRequest:
    principle: str
    prompt: str
    responses: dict[str, str]   # caller's name -> response text, in the caller's order

    @classmethod
    def create(cls, principle: Any, prompt: Any, responses: Any) -> "JudgeRequest":
        for field, value in (("principle", principle), ("prompt", prompt)):
            if not isinstance(value, str):
                raise RaLiteError(f"the {field} must be a string, not {type(value).__name__}",
                                  f"pass the {field} as text")
            if not value.strip():
                raise RaLiteError(f"the {field} is empty",
                                  f"give a {field}: the judge scores responses against it")
            check_unicode(value, f"the {field}")
        return cls(principle, prompt, normalize_responses(responses))

    @classmethod
    def from_dict(cls, obj: Any) -> "JudgeRequest":
        """From a request object: {"principle", "prompt", "responses"} (extra keys allowed)."""
        if not isinstance(obj, dict):
            raise RaLiteError(f"a request must be a JSON object, not {type(obj).__name__}",
                              'write {"principle": ..., "prompt": ..., "responses": {...}}')
        missing = [k for k in ("principle", "prompt", "responses") if k not in obj]
        if missing:
            raise RaLiteError(f"the request has no {', '.join(missing)}",
                              'write {"principle": ..., "prompt": ..., "responses": {...}}')
        return cls.create(obj["principle"], obj["prompt"], obj["responses"])


def normalize_responses(responses: Any) -> dict[str, str]:
    """Accept {name: text}, [text, ...] (named response-1..N) or [{"name", "text"}, ...]."""
    if isinstance(responses, dict):
        pairs = list(responses.items())
    elif isinstance(responses, (list, tuple)):
        pairs = []
        for i, item in enumerate(responses, 1):
            if isinstance(item, dict) and "name" in item:
                pairs.append((item["name"], item.get("text", item.get("response"))))
            else:
                pairs.append((f"response-{i}", item))
    else:
        raise RaLiteError(f"responses must be an object or a list, not {type(responses).__name__}",
                          'write "responses": {"name": "text", ...}')
    if not pairs:
        raise RaLiteError("there are no responses to judge", "give at least one response")
    result: dict[str, str] = {}
    for name, text in pairs:
        if not isinstance(name, str) or not name:
            raise RaLiteError(f"response name {name!r} is not a non-empty string",
                              "name each response with text")
        if name in result:
            raise RaLiteError(f"two responses are named {name!r}", "give each response its own name")
        if not isinstance(text, str):
            raise RaLiteError(f"response {name!r} is a {type(text).__name__}, not a string",
                              "pass each response as text (serialize structured output first)")
        check_unicode(name, f"the response name {ascii(name)}")
        check_unicode(text, f"response {ascii(name)}")
        result[name] = text
    return result


def check_unicode(text: str, where: str) -> None:
    """Refuse text that cannot be UTF-8: an unpaired UTF-16 surrogate (JSON's "\\ud800" alone is
    valid JSON, and many tools emit it when they cut a string inside an emoji's pair)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        raise RaLiteError(
            f"{where} contains an unpaired UTF-16 surrogate (\\u{code:04x}) at character "
            f"{e.start}, which is not text",
            "fix the producer's escaping (a surrogate pair must be written whole), or replace "
            "it with U+FFFD") from None


# Keys of a request object (and of a batch line); any other repeated key is a response name.
REQUEST_KEYS = ("principle", "prompt", "responses", "id", "mask_responses")


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: a repeated key is an error, not a silent overwrite."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            fix = f"write {key!r} once" if key in REQUEST_KEYS else \
                "give each response its own name (each key of an object once)"
            raise RaLiteError(f"the JSON has the key {ascii(key)[1:-1]!r} twice", fix)
        seen[key] = value
    return seen


def loads_request_json(text: str | bytes, where: str) -> Any:
    """The one way ra-lite reads JSON it is given (request files, batch lines, HTTP bodies):
    duplicate keys refused, and every way json can fail told as one RaLiteError naming `where`:
    bad syntax, bytes that are not UTF-8, nesting too deep for the parser (CPython's json
    recurses once per level and raises RecursionError), an integer too long to convert."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RaLiteError(f"{where} is not valid JSON: not UTF-8 text (byte {e.start} is "
                              f"0x{text[e.start]:02x})", "save it as UTF-8") from None
    if text.startswith("\ufeff"):          # a byte-order mark some editors write: not content
        text = text[1:]
    try:
        return json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except json.JSONDecodeError as e:
        raise RaLiteError(f"{where} is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})",
                          "fix the JSON") from None
    except RecursionError:
        raise RaLiteError(f"{where} nests JSON arrays or objects too deeply to read",
                          "a request is an object of strings: send it flat") from None
    except ValueError as e:                  # e.g. an integer of more than 4300 digits
        raise RaLiteError(f"{where} cannot be read as JSON ({e})", "fix the JSON") from None
