"""The sweep's Ray session: started in a background thread, alive after that thread's start, shut down at close."""

from __future__ import annotations

import subprocess
import time

import pytest
import ray

from orchestrator import ray_session
from orchestrator.ray_session import RaySession


def _gcs_pids() -> set[str]:
    return set(subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True, text=True).stdout.split())


def test_ray_started_in_the_background_outlives_the_start_and_is_shut_down_at_close(monkeypatch):
    """Ray's processes get the parent-death signal of the *thread* that started them: the
    session's thread must live on after ``ray.init``, or GCS and raylet are killed."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = _gcs_pids()
    session = RaySession(verbose=False).start()
    try:
        session.ready()
        time.sleep(3)  # the starting thread would have ended by now
        assert ray.is_initialized()
        assert ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60) == 42
        assert ray.cluster_resources().get("CPU", 0) >= 1
        mine = _gcs_pids() - before
        assert mine
    finally:
        session.release()  # in the background ...
        session.close()  # ... and waited for
    assert not ray.is_initialized()
    assert not mine & _gcs_pids()


def test_an_error_starting_ray_is_raised_where_ray_is_first_needed(monkeypatch):
    def fail(verbose: bool) -> bool:
        raise ConnectionError("no cluster at RAY_ADDRESS")

    monkeypatch.setattr(ray_session, "init_ray", fail)
    session = RaySession(verbose=False).start()
    with pytest.raises(ConnectionError, match="no cluster"):
        session.ready()
    session.close()  # nothing started: returns at once
