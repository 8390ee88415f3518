"""The one exception type users see.

Every failure that a user can cause (bad input, a missing file, a model that does not fit) is raised
as `RaLiteError(problem, fix)`. The CLI prints it as one line, `error: <problem> — <fix>`, and
exits non-zero; it never shows a traceback for these. Anything else is a bug in ra-lite.
"""

from __future__ import annotations


class RaLiteError(Exception):
    """A user-facing error: what is wrong, and how to fix it."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.problem} — {self.fix}" if self.fix else self.problem
