"""The one error type for user mistakes (a sweep file, data, a model source, a CLI flag).

Every package raises a subclass of :class:`UserError`; the CLI handles them all in one place:
exit code 2, one line per problem, printed verbatim (no markup) and capped in length. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["MAX_ECHO", "UserError", "cap"]

MAX_ECHO = 200  # characters of one user-supplied value we echo back


class UserError(ValueError):
    """Bad input. ``lines``: one or more problems, each naming the field (or flag) and the fix."""

    def __init__(self, lines: list[str] | str = ""):
        self.lines = [lines] if isinstance(lines, str) else [str(line) for line in lines]
        super().__init__("\n".join(self.lines))


def cap(text: object, limit: int = MAX_ECHO) -> str:
    """``str(text)`` cut to ``limit`` characters, saying how much was left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
