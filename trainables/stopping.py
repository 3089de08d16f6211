"""A trial the scheduler stopped ends between two batches, so its worker processes can serve the next.

When ASHA stops a trial in the middle of its run, the workers' training threads are still
running. The trial driver then asks the workers to stop (``request_stop``, run in each worker
process by Ray Train), and the training loop raises ``TrialStopped`` at its next training batch
(or, for a single rank, evaluation batch). The threads end and the workers can be reused
(``orchestrator.warm_workers``) instead of killed.

The ranks of a DDP group must stop together, or one would wait forever in a collective the
others left: they check only where all of them pass in step (the same training batch; the
checkpoint after an epoch's evaluation), and agree there (one all-reduce of a flag): all stop
when any was asked to. On an evaluation shard (uneven across ranks) a rank never stops alone.
"""

from __future__ import annotations

import threading
from typing import Any

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


def raise_if_stopped(*, ranks_in_step: bool = False, device: Any = None) -> None:
    """Raise ``TrialStopped`` when the trial was asked to stop.

    ``ranks_in_step``: every rank of the group passes this point at the same step, so the
    ranks of a DDP group can agree (on ``device``: the process group's, e.g. CUDA for NCCL).
    Elsewhere only a single rank checks.
    """
    stopped = _stop.is_set()
    if _group_size() > 1:
        if not ranks_in_step:
            return
        stopped = _any_rank(stopped, device)
    if stopped:
        raise TrialStopped("stopped by the scheduler")


def _group_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _any_rank(stopped: bool, device: Any) -> bool:
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stopped else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
