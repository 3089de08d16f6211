"""The sweep's Ray: started while the driver prepares, shut down while it reports.

``init_ray`` connects to ``RAY_ADDRESS`` (inside a Ray Job) or starts the embedded local Ray on
127.0.0.1 with token authentication. Starting it takes 3-5 s, most of it waiting for Ray's own
processes (GCS, raylet), and shutting it down 1-2 s of waiting for them to exit.
``RaySession`` overlaps both with driver work that does not need Ray: the MLflow store's
creation at the start, the charts and report at the end (``orchestrator run`` is 3-4 s shorter).
Errors of the start are raised where the driver first needs Ray, and an embedded Ray is always
shut down, whatever happened in between.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import Any

from orchestrator.cluster import LOCAL_DRIVER_SLOTS, private_token
from orchestrator.trial import DRIVER_RESOURCE, EMBEDDED_RAY_ENV

__all__ = ["DASHBOARD_ENV", "RaySession", "init_ray"]

DASHBOARD_ENV = "ORCHESTRATOR_RAY_DASHBOARD"  # "1": the embedded Ray starts its dashboard


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_ray(verbose: bool) -> bool:
    """Connect to RAY_ADDRESS if set (e.g. inside a Ray Job), else start Ray on 127.0.0.1.

    Returns whether this call started Ray (and so must shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # explicit for ray 2.51+ (default there anyway)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our ProgressCallback prints instead of Tune's tables
    env = {"env_vars": {"RAY_TRAIN_V2_ENABLED": "1", "TOKENIZERS_PARALLELISM": "false"}}
    if os.environ.get("RAY_ADDRESS"):
        # Inside a Ray Job (or attached to a cluster): the job's runtime_env already applies;
        # passing another one would conflict with it.
        ray.init(log_to_driver=verbose, logging_level=logging.WARNING)
        return True
    # Ray's gRPC servers listen on every interface whatever _node_ip_address says, so the
    # embedded instance is protected by its token, with a token file only this user can read.
    # Token mode is forced on: a RAY_AUTH_MODE other than `token` is dropped, and ray.init()'s
    # default for a new local cluster (2.59+) turns token mode on and refreshes Ray's config.
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        os.environ.pop("RAY_AUTH_MODE", None)
    private_token()
    # One machine is never preempted: no watcher process per trial (Train V2 starts one).
    env["env_vars"]["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    # Nor autoscaled: trials make no requests to Ray's autoscaling coordinator (trial.py).
    env["env_vars"][EMBEDDED_RAY_ENV] = "1"
    # No dashboard unless asked for: its 10 processes hold about 1 GB and a few % of a core
    # (the driver asks the GCS about placement groups, not the State API: orchestrator.reaper).
    dashboard = os.environ.get(DASHBOARD_ENV) == "1"
    ray.init(
        address="local",  # the embedded default: never attach to some other `ray start` cluster
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        dashboard_port=_free_port() if dashboard else None,
        _node_ip_address="127.0.0.1",
        resources={DRIVER_RESOURCE: LOCAL_DRIVER_SLOTS},
        runtime_env=env,
        log_to_driver=verbose,
        logging_level=logging.WARNING,
    )
    return True


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(signum)


class _SigtermSetHere(logging.Filter):
    """Drops Ray's warning that ``init`` outside the main thread set no SIGTERM handler: we did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


_SIGTERM_SET_HERE = _SigtermSetHere()  # one instance: addFilter skips a filter already there


class RaySession:
    """``start()`` Ray in a background thread, ``ready()`` where it is needed, ``release()`` when
    the trials are over (shutdown in the background), ``close()`` at the end (waits for it).

    One thread both starts and shuts down Ray and lives in between: Ray's processes are started
    with the parent-death signal (``PR_SET_PDEATHSIG``), which Linux sends when the *thread* that
    started them ends. ``ray.init`` sets its SIGTERM handler (exit, so ``finally`` blocks run)
    only from the main thread; the session sets the same one there.
    """

    def __init__(self, verbose: bool):
        self._verbose = verbose
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-session", daemon=True)

    def start(self) -> RaySession:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
            logging.getLogger("ray._private.worker").addFilter(_SIGTERM_SET_HERE)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = init_ray(self._verbose)
        except BaseException as exc:  # raised in the main thread by ready()
            self._error = exc
            return
        finally:
            self._ready.set()
        self._release.wait()
        if started:
            import ray

            ray.shutdown()

    def ready(self) -> None:
        """Wait for Ray; raise what its start raised."""
        self._ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def release(self) -> None:
        """Shut an embedded Ray down in the background (nothing after this may use Ray)."""
        self._release.set()

    def close(self) -> None:
        """Shut down (if not yet) and wait for it."""
        self._release.set()
        if self._thread.is_alive():
            self._thread.join()
