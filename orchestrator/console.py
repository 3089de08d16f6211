"""Terminal output: Rich consoles that never interpret user text as markup, and capped echoes.

Labels, keys, paths and ``--set`` values reach the terminal verbatim: the consoles have markup
off, and our own emphasis is added with :func:`styled` (Rich ``Text`` spans), so a value such as
``[/b]`` is printed as typed and can neither crash the CLI nor restyle the terminal.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

__all__ = ["make_console", "styled"]


def make_console(*, stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    # Wide enough for the leaderboard when output goes to a file or CI log (not a terminal).
    return Console(stderr=stderr, markup=False, width=None if probe.is_terminal else 160)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings stay verbatim; ``(text, style)`` pairs are styled, e.g. ``styled(("best", "bold"), " x")``."""
    return Text.assemble(*parts)
