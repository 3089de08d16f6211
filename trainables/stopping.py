"""A trial the scheduler stopped ends between two batches, so its worker process can serve the next.

When ASHA stops a trial in the middle of its run, the worker's training thread is still running.
The trial driver then asks that worker to stop (``request_stop``, run in the worker process by
Ray Train), and the training loop raises ``TrialStopped`` at its next training or evaluation
batch. The thread ends and the worker can be reused (``orchestrator.warm_workers``) instead
of killed. Only single-rank runs are stopped this way: ranks of a DDP group could stop at
different batches and leave a collective waiting.
"""

from __future__ import annotations

import threading

__all__ = ["TrialStopped", "clear_stop", "raise_if_stopped", "request_stop"]

_stop = threading.Event()


class TrialStopped(Exception):
    """The trial's driver no longer wants its results (the scheduler stopped it)."""


def request_stop() -> None:
    """In the worker process: make the running trial end at its next batch."""
    _stop.set()


def clear_stop() -> None:
    """Before the process serves another run: a stop requested for an earlier run does not apply."""
    _stop.clear()


def raise_if_stopped() -> None:
    if _stop.is_set():
        raise TrialStopped("stopped by the scheduler")
