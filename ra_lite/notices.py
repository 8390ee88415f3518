"""One way to tell the user something: a `ra-lite: ` line on stderr (stdout stays the output)."""

from __future__ import annotations

import sys


def print_notice(message: str) -> None:
    print(f"ra-lite: {message}", file=sys.stderr)
