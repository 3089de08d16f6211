"""Terminal output: Rich consoles that never interpret user text as markup, and capped echoes.

Labels, keys, paths and ``--set`` values reach the terminal verbatim: the consoles have markup
off, and our own emphasis is added with :func:`styled` (Rich ``Text`` spans), so a value such as
``[/b]`` is printed as typed and can neither crash the CLI nor restyle the terminal.

:func:`third_party_to` keeps the libraries' own output (Ray's notices, MLflow's migrations,
warnings, C++ logs of Ray's core) off the console while a sweep runs: it goes to a log file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.text import Text

__all__ = ["make_console", "styled", "third_party_to"]


def make_console(*, stderr: bool = False, file: IO[str] | None = None) -> Console:
    probe = Console(stderr=stderr, file=file)
    # Wide enough for the leaderboard when output goes to a file or CI log (not a terminal).
    return Console(stderr=stderr, file=file, markup=False, width=None if probe.is_terminal else 160)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings stay verbatim; ``(text, style)`` pairs are styled, e.g. ``styled(("best", "bold"), " x")``."""
    return Text.assemble(*parts)


@contextlib.contextmanager
def third_party_to(log_path: Path, header: str) -> Iterator[Console]:
    """Send everything written to this process's stdout and stderr to ``log_path`` (appended).

    The file descriptors themselves are redirected, so C++ logs of Ray's core worker, Python
    warnings and every library's logging handlers land in the file too. Yields a console on
    the real stdout (a terminal keeps its colours and live display) for our own output;
    restores both descriptors on the way out, Ctrl-C and errors included.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:  # before any dup: nothing to undo if it fails
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {header}\n")
        log.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        saved_out, saved_err = os.dup(1), os.dup(2)
        ours = os.fdopen(os.dup(saved_out), "w", buffering=1, encoding="utf-8", errors="replace")
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield make_console(file=ours)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            ours.close()
