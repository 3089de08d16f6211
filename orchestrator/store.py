"""The MLflow tracking store, created (or migrated) once before anyone writes or reads it.

Every command that opens a tracking store goes through :func:`tracking_client` (or calls
:func:`prepare_store` first): ``run``, ``best``, ``promote``, ``predict``, ``ui``. So concurrent sweeps
in one work directory, and ``best``/``ui``/``promote`` beside a running sweep, never race on a
fresh SQLite file's schema creation.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

__all__ = ["prepare_store", "tracking_client"]


def prepare_store(tracking_uri: str) -> None:
    """Create (or migrate) a SQLite store once, under a file lock, and switch it to WAL.

    MLflow creates its schema on first use; several processes doing that on one fresh file
    race (``duplicate column name``) and most of them fail. Whoever holds the lock creates it;
    the others find it ready. WAL lets readers and one writer work at once (not on a network
    filesystem, where SQLite's WAL is unsafe), and SQLite's busy timeout (5 s in Python's driver)
    covers the writers' turns. Other stores: nothing to do.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    import fcntl
    import sqlite3

    from orchestrator.cluster import SHARED_FILESYSTEMS, filesystem_type

    db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()  # sqlite:////abs or sqlite:///relative
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri).search_experiments(max_results=1)  # creates / migrates the schema
            if filesystem_type(str(db.parent)) not in SHARED_FILESYSTEMS:  # WAL needs local shared memory
                with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
                    conn.execute("PRAGMA journal_mode=WAL")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tracking_client(tracking_uri: str, **kwargs: Any) -> Any:
    """An ``MlflowClient`` on a store that is ready (created and migrated once, under the lock)."""
    from mlflow.tracking import MlflowClient

    prepare_store(tracking_uri)
    return MlflowClient(tracking_uri, **kwargs)
