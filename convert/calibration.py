"""Calibration text for importance matrices: ra-lite's shipped set, or the user's own file.

The shipped set (convert/data/calibration.jsonl, data card in convert/data/README.md) is
judge-shaped: most of what RewardAnything reads in production is its system prompt followed by a
JSON user message and its own `<think>` reasoning and JSON answer, so that is what the statistics
should be collected on. Two record kinds:

    {"kind": "judge", "id", "principle", "prompt", "responses": {name: text}, "thinking", "scores"}
    {"kind": "text", "id", "genre": "prose"|"code", "text"}

A judge record is rendered exactly as ra-lite renders a request (official system prompt, masked
names, the model's own chat template) and followed by the reasoning and the canonical answer, so
the special tokens are the model's own. `--data` also accepts a plain .txt file, used as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ra_lite.errors import RaLiteError

SHIPPED_NAME = "ra-lite calibration v1"


@dataclass(frozen=True)
class ModelText:
    """What rendering needs from the model: its chat template and end-of-turn token text."""

    chat_template: str | None
    end_of_turn: str


@dataclass(frozen=True)
class CalibrationSet:
    name: str                # recorded in the imatrix (imatrix.datasets) and the manifest
    records: list[dict]

    def texts(self, model: ModelText) -> list[str]:
        return [render_record(r, model) for r in self.records]


def shipped_path() -> Path:
    return Path(str(resources.files("ra_lite.convert.data").joinpath("calibration.jsonl")))


def load_calibration(path: str | Path | None = None) -> CalibrationSet:
    """The shipped set (path None), a JSONL file of records, or a plain text file."""
    if path is None:
        return CalibrationSet(SHIPPED_NAME, _read_jsonl(shipped_path()))
    path = Path(path).expanduser()
    if not path.is_file():
        raise RaLiteError(f"calibration data {path} does not exist",
                          "pass a .jsonl of records or a .txt file, or leave out --data for ra-lite's own set")
    if path.suffix == ".jsonl":
        return CalibrationSet(path.name, _read_jsonl(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise RaLiteError(f"cannot read calibration text {path} ({err})", "pass a UTF-8 text file") from err
    if not text.strip():
        raise RaLiteError(f"calibration data {path} is empty", "give it some text")
    return CalibrationSet(path.name, [{"kind": "text", "id": path.name, "text": text}])


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RaLiteError(f"{path} line {number} is not JSON ({err.msg})", "fix or remove that line") from err
            _validate(record, f"{path} line {number}")
            records.append(record)
    if not records:
        raise RaLiteError(f"calibration data {path} is empty", "give it at least one record")
    return records


def _validate(record, where: str) -> None:
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind == "text":
        ok = isinstance(record.get("text"), str) and record["text"].strip()
    elif kind == "judge":
        responses, scores = record.get("responses"), record.get("scores")
        ok = (all(isinstance(record.get(k), str) and record[k] for k in ("principle", "prompt", "thinking"))
              and isinstance(responses, dict) and responses and isinstance(scores, dict)
              and set(scores) == set(responses) and all(s in (1, 2, 3, 4, 5) for s in scores.values()))
    else:
        ok = False
    if not ok:
        raise RaLiteError(f"{where} is not a calibration record",
                          'write {"kind": "text", "text": ...} or a judge record (see convert/data/README.md)')


def render_record(record: dict, model: ModelText) -> str:
    if record["kind"] == "text":
        return record["text"]
    from ra_lite.chat_template import CHATML_FALLBACK, render_chat
    from ra_lite.grammar import render_answer
    from ra_lite.prompt import build_chat_prompt

    chat = build_chat_prompt(record["principle"], record["prompt"], record["responses"])
    prompt = render_chat(model.chat_template or CHATML_FALLBACK, chat.messages, enable_thinking=True)
    real_to_masked = {real: masked for masked, real in chat.masked_to_real.items()}
    scores = {name: record["scores"][chat.masked_to_real[name]] for name in chat.masked_names}
    # best to worst: higher score first, ties in the order the model saw the responses
    ranking = sorted(chat.masked_names, key=lambda n: -scores[n])
    assert set(real_to_masked.values()) == set(scores)
    think = "" if prompt.rstrip().endswith("<think>") else "<think>\n"
    return f"{prompt}{think}{record['thinking']}\n</think>\n\n{render_answer(scores, ranking)}{model.end_of_turn}"
