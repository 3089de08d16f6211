"""Train workers that outlive their trial: the next trial of the same trial actor starts on them.

Ray Train V2 creates a new worker process (and placement group) for every ``fit()``: on a
2-core machine 5-8 s to start the actor and import Train's worker module, then the ML stack's
imports (transformers, the model code) again in the new process, before a trial's first line.
With Tune's ``reuse_actors`` a trial actor runs several trials one after the other, so here a
run that **finished cleanly** parks its workers and placement group in the trial actor
(``reusable_worker_group``), and the next run of that actor with the same worker count and
resources starts on them: same processes, imports done, a fresh train context, synchronization
actor and (for several ranks) process group per run, as Ray Train makes them.

A run "finishes cleanly" when its training threads ended without error: at its end, when
Tune stopped it at its last report (ASHA at ``max_t``), or when ASHA stopped it mid-run and the
training loop ended at its next batch (``trainables.stopping``; the ranks of a DDP group agree
on that batch). What is never reused: workers of a run that failed, workers that did not stop
within ``RELEASE_BUDGET_S`` or whose actors died; a parked group that does not match the next
run (it is released first). When the actor dies, its worker actors die with it (Ray fate-shares
actors with their owner) and the driver removes the placement group it created, parked or not
(``orchestrator.reaper``). Sweeps turn it on with Tune's ``reuse_actors``
(``TrialSetup.reuse_workers``); ``ORCHESTRATOR_REUSE_WORKERS=0`` turns both off (every trial a
new actor and new workers).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

__all__ = [
    "park_finished_runs",
    "release_parked",
    "release_stopped_run",
    "reusable_worker_group",
    "reuse_enabled",
]

REUSE_ENV = "ORCHESTRATOR_REUSE_WORKERS"
_ALIVE_TIMEOUT_S = 10.0
RELEASE_BUDGET_S = 30.0  # a stopped run's threads end (last report: at once; mid-run: next batch)


@dataclass
class _Parked:
    key: tuple
    pg_handle: Any
    workers: list  # ray.train.v2 Worker records, in world-rank order


_state: dict[str, Any] = {"park": False, "parked": None}  # per process: one trial actor


def reuse_enabled() -> bool:
    """In the driver: whether the sweep reuses trial actors and their workers (default on)."""
    return os.environ.get(REUSE_ENV, "1") != "0"


def park_finished_runs(enabled: bool) -> None:
    """In a trial actor: park the workers of runs that finish cleanly. Only where Tune reuses
    the actor (otherwise a parked group would wait for the actor to die)."""
    _state["park"] = enabled
    if not enabled:
        release_parked()


def release_parked() -> None:
    """Kill the parked workers and remove their placement group (nothing when none is parked)."""
    parked, _state["parked"] = _state["parked"], None
    if parked is not None:
        _release(parked)


def _release(parked: _Parked) -> None:
    _kill(parked.workers)
    with contextlib.suppress(Exception):
        parked.pg_handle.shutdown()


def _kill(workers: list) -> None:
    import ray

    for w in workers:
        with contextlib.suppress(Exception):  # already dead
            ray.kill(w.actor)


def _group_key(ctx: Any) -> tuple:
    return (
        ctx.num_workers,
        tuple(sorted(ctx.resources_per_worker.items())),
        ctx.placement_strategy,
        repr(ctx.label_selector),
    )


def _take_parked(key: tuple) -> _Parked | None:
    """The parked group when it matches ``key`` and all its workers answer; else release it."""
    import ray

    parked, _state["parked"] = _state["parked"], None
    if parked is None:
        return None
    if parked.key == key:
        try:
            ray.get([w.actor.get_metadata.remote() for w in parked.workers], timeout=_ALIVE_TIMEOUT_S)
            return parked
        except Exception:  # a worker died while parked (node loss, OOM killer): start new ones
            pass
    _release(parked)
    return None


def release_stopped_run(controller: Any, *, finishing: bool) -> None:
    """After Tune stopped a trial inside a report, park the run's workers once their training
    thread has ended, else abort them (killed with their placement group, as Train's own abort).

    ``finishing``: that was the run's last report, so the thread ends right after it. In the
    middle of a run, the workers are asked to stop at their next batch (``trainables.stopping``;
    the ranks of a DDP group stop at the same one). All of it within ``RELEASE_BUDGET_S``, well
    inside the time Tune waits before handing the actor to its next trial.
    """
    import ray

    from trainables.stopping import request_stop

    group = getattr(controller, "_worker_group", None)
    if group is None:
        return
    deadline = time.monotonic() + RELEASE_BUDGET_S
    parked = False
    with contextlib.suppress(Exception):  # a worker died, or did not answer: abort below
        if _state["park"]:
            if not finishing:
                ray.get(group.execute_async(request_stop), timeout=_ALIVE_TIMEOUT_S)
            if _wait_finished(group, deadline):
                controller._worker_group = None
                group.shutdown()  # parks: the poll said finished, without other errors
                parked = True
    if not parked:
        with contextlib.suppress(Exception):  # already shut down, or Ray is going away
            group.abort()


def _wait_finished(group: Any, deadline: float) -> bool:
    while True:
        status = _poll_quietly(group, max(deadline - time.monotonic(), 0.1))
        if status.finished:
            return _only_stopped(status.errors)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _poll_quietly(group: Any, timeout: float) -> Any:
    """The group's poll without its callbacks: a report the stopped run still made is dropped
    (the callbacks would hand it to Tune, which has stopped the trial), and so is its
    checkpoint, which no checkpoint manager will ever list or delete."""
    from ray.train.v2._internal.execution.worker_group.poll import WorkerGroupPollStatus

    statuses = group._poll_workers_and_collect_errors(timeout)
    for s in statuses:
        checkpoint = getattr(s.training_report, "checkpoint", None)
        if checkpoint is not None:
            with contextlib.suppress(Exception):
                checkpoint.filesystem.delete_dir(checkpoint.path)
    status = WorkerGroupPollStatus(
        worker_statuses=dict(enumerate(statuses)),
        worker_rank_to_replica_group_rank=group._worker_rank_to_replica_group_rank,
    )
    group._latest_poll_status = status  # what shutdown() decides parking on
    return status


def _only_stopped(errors: dict) -> bool:
    """No rank failed, apart from ending because its trial was stopped."""
    from trainables.stopping import TrialStopped

    return all(isinstance(e, TrialStopped) for e in errors.values())


def _reset_worker() -> None:
    """On a worker about to be parked: nothing of the last run carried over to the next one.

    No stop request, no process group (Ray destroys it only for groups of several ranks), and
    no train context: a run that ended with ``TrialStopped`` keeps its traceback there, and
    with it the model, optimizer and batch (memory, GPU memory too, until the next run).
    """
    import gc

    import torch
    import torch.distributed as dist
    from ray.train.v2._internal.execution.context import set_train_context

    from trainables.stopping import clear_stop

    clear_stop()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    set_train_context(None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@cache
def _park_on_shutdown() -> type:
    """``WorkerGroupState`` of a run that finished cleanly: shutting it down parks its workers."""
    import ray
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState

    @dataclass(frozen=True)
    class _ParkOnShutdown(WorkerGroupState):
        key: tuple = ()

        def shutdown(self) -> None:
            try:  # worker shutdown callbacks as Ray runs them, then a clean process group
                ray.get([w.actor.shutdown.remote() for w in self.workers], timeout=_ALIVE_TIMEOUT_S)
                ray.get([w.execute_async(_reset_worker) for w in self.workers], timeout=_ALIVE_TIMEOUT_S)
            except Exception:
                WorkerGroupState.shutdown(self)
                return
            with contextlib.suppress(Exception):
                ray.kill(self.sync_actor)
            release_parked()
            _state["parked"] = _Parked(self.key, self.placement_group_handle, list(self.workers))

    return _ParkOnShutdown


def _as_state(cls: type, state: Any, **extra: Any) -> Any:
    """``state`` (a ``WorkerGroupState``) as an instance of ``cls``, with the same fields."""
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState

    return cls(**{f.name: getattr(state, f.name) for f in fields(WorkerGroupState)}, **extra)


@cache
def reusable_worker_group() -> type:
    """``ReusableWorkerGroup``: Ray Train's worker group, starting on parked workers that match."""
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState
    from ray.train.v2._internal.execution.worker_group.worker import Worker
    from ray.train.v2._internal.execution.worker_group.worker_group import WorkerGroup

    park_on_shutdown = _park_on_shutdown()

    class ReusableWorkerGroup(WorkerGroup):
        _reusing: _Parked | None = None

        def _create_placement_group(self, scaling_config: Any, worker_group_context: Any) -> Any:
            parked = _take_parked(_group_key(worker_group_context)) if _state["park"] else None
            self._reusing = parked
            if parked is not None:
                return parked.pg_handle
            release_parked()
            return super()._create_placement_group(scaling_config, worker_group_context)

        def _create_workers(self, num_workers: int, placement_group: Any, resources_per_worker: dict,
                            placement_group_bundle_indices: Any = None, starting_world_rank: int = 0,
                            world_size: Any = None, replica_group_size: Any = None) -> list:  # fmt: skip
            parked, self._reusing = self._reusing, None
            if (
                parked is None
                or placement_group_bundle_indices is not None  # replacing a replica group
                or parked.pg_handle.placement_group != placement_group
                or len(parked.workers) != num_workers
            ):
                if parked is not None:  # free their bundles for the new workers
                    _kill(parked.workers)
                return super()._create_workers(
                    num_workers, placement_group, resources_per_worker, placement_group_bundle_indices,
                    starting_world_rank, world_size, replica_group_size,
                )  # fmt: skip
            workers = [
                Worker(w.actor, w.metadata, resources_per_worker, placement_group_bundle_index=w.placement_group_bundle_index)
                for w in parked.workers
            ]  # fmt: skip
            return WorkerGroup._assign_worker_ranks(
                workers, starting_world_rank, world_size, replica_group_size
            )

        def abort(self) -> None:
            if isinstance(self._worker_group_state, park_on_shutdown):  # a park failed half-way: kill
                self._worker_group_state = _as_state(WorkerGroupState, self._worker_group_state)
            super().abort()

        def shutdown(self) -> None:
            state, status = self._worker_group_state, self._latest_poll_status
            clean = status is not None and status.finished and _only_stopped(status.errors)
            if state is not None and clean and _state["park"]:
                key = _group_key(self._worker_group_context)
                self._worker_group_state = _as_state(park_on_shutdown, state, key=key)
            super().shutdown()

    return ReusableWorkerGroup
