"""Answers of slow, pure checks kept as JSON in the user's cache directory, by a hash of their inputs.

Validating a sweep asks the same questions of the same model files every time: how many blocks,
how many positions, do LoRA's target modules exist above the deepest frozen block... Answering
imports torch and transformers (5 s and more on 2 cores), yet the answer depends only on the
model's files, the library versions and this project's code. :func:`memoized` keeps it under
``$ORCHESTRATOR_CACHE/checks/<sha256 of all of those>.json`` (default ``~/.cache/orchestrator``),
so a second ``orchestrator validate`` of the same model answers without those imports.

Entries are only ever read as JSON: whoever can write that directory can make a check pass that
should have failed (the trial then fails on its own), never run code. Errors are not kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["cache_root", "code_digest", "memoized"]

LIBRARIES = ("torch", "transformers", "peft")
# what the kept answers are computed by: the training code, the knobs, and the driver's checks
# (``orchestrator.space`` builds the strategies' question), read as files, not imported
_PACKAGES = tuple(
    Path(__file__).resolve().parents[1] / p for p in ("trainables", "search_spaces", "orchestrator")
)


def cache_root() -> Path:
    """This user's cache directory for the project (``$ORCHESTRATOR_CACHE``)."""
    return Path(os.environ.get("ORCHESTRATOR_CACHE", Path.home() / ".cache" / "orchestrator"))


@cache
def code_digest() -> str:
    """sha256 over this project's code and the installed versions of the ML libraries."""
    h = hashlib.sha256()
    for package in _PACKAGES:
        for path in sorted(package.rglob("*.py")):
            h.update(str(path.relative_to(package.parent)).encode() + b"\0" + path.read_bytes())
    for name in LIBRARIES:
        try:
            h.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name} missing".encode())
    return h.hexdigest()


def memoized(kind: str, inputs: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """``compute()`` (a JSON value), or the value it gave before for the same ``kind`` and ``inputs``.

    ``inputs`` must name everything the answer depends on besides the code and library versions
    (:func:`code_digest`), e.g. the sha256 of the model's ``config.json``. A raised error is not kept.
    """
    key = json.dumps({"kind": kind, "inputs": inputs, "code": code_digest()}, sort_keys=True, default=str)
    path = cache_root() / "checks" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
    try:
        entry = json.loads(path.read_text())
        if entry.get("key") == key:
            return entry["value"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    value = compute()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, "value": value}, f)
        os.replace(tmp, path)
    except OSError:  # a read-only or full home: answer anyway, just not faster next time
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return value
