"""Where every benchmark's JSON goes: written whole or not at all.

A benchmark runs for minutes to an hour; killed halfway through writing, it must leave the
previous results file as it was, not a torn one (ra_lite.file_hash.write_atomic).
"""

from __future__ import annotations

import json
from pathlib import Path


def save_result(path: Path | None, result, **json_options) -> None:
    """Write `result` as indented JSON at `path` (nothing when path is None, i.e. no -o)."""
    if path is None:
        return
    from ra_lite.atomic_files import write_atomic

    text = json.dumps(result, indent=2, **json_options) + "\n"
    write_atomic(Path(path), text.encode("utf-8"))
