"""In the driver: remove the placement groups of this sweep whose creating actor died.

A trial's Train worker group lives in a placement group created by the trial actor (where the
Train controller runs), and a finished run may leave it parked there for the actor's next
trial (``orchestrator.warm_workers``). Ray removes a placement group by itself only once its
creating actor *and* its job are dead: a trial actor that dies while the sweep goes on (killed,
out of memory, its node lost, or ended by Tune while it holds parked workers) would keep its
group's CPUs and GPUs reserved until the sweep ends. The workers themselves die with the
actor (Ray fate-shares actors with their owner); the reservation does not.

Ray Train starts a ``PlacementGroupCleaner`` actor per run for this, and this project kept one
standing per trial actor: a Python process per concurrent trial, whose core-worker loop
wakes a hundred times a second on the CPUs the trials train on. Instead, one thread of the
driver asks the GCS about the job's placement groups every ``interval_s`` and removes those
whose creator was an actor that is now dead (the GCS records both in its placement-group
table). Nothing else is touched: groups created by the driver (Tune's own), groups of live
actors, detached groups and other jobs' groups stay.

When the driver itself dies, the job is dead too, and Ray removes every group whose creating
actor is dead as well: nothing is left either way.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

__all__ = ["INTERVAL_S", "orphaned_groups", "reap_once", "reaping"]

INTERVAL_S = 1.0  # as Ray Train's cleaner checks its controller
_LIVE_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def orphaned_groups() -> list[str]:
    """Hex ids of this job's placement groups whose creating actor is dead and that still
    hold (or wait for) resources."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    job = ray.get_runtime_context().get_job_id()
    table = gcs_pb2.PlacementGroupTableData
    out = []
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        pg = table.FromString(raw)
        creator = ray.ActorID(pg.creator_actor_id) if pg.creator_actor_id else None
        if (
            creator is not None
            and not creator.is_nil()
            and pg.creator_actor_dead
            and not pg.is_detached
            and ray.JobID(pg.creator_job_id).hex() == job
            and table.PlacementGroupState.Name(pg.state) in _LIVE_STATES
        ):
            out.append(ray.PlacementGroupID(pg.placement_group_id).hex())
    return out


def reap_once() -> list[str]:
    """Remove the orphaned groups (see :func:`orphaned_groups`); their hex ids."""
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = []
    for hex_id in orphaned_groups():
        with contextlib.suppress(Exception):  # removed meanwhile
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(hex_id))))
            removed.append(hex_id)
    return removed


@contextlib.contextmanager
def reaping(interval_s: float = INTERVAL_S) -> Iterator[None]:
    """Around the sweep's ``Tuner.fit()``: a daemon thread reaping every ``interval_s``, and a
    last pass at the end (trial actors Tune ended last)."""
    stop = threading.Event()
    said: list[bool] = []

    def loop() -> None:
        while not stop.wait(interval_s):
            _quietly(said)

    thread = threading.Thread(target=loop, name="placement-group-reaper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s + 5.0)
        _quietly(said)


def _quietly(said: list[bool]) -> None:
    """One pass; a GCS that cannot be asked (Ray going away) is said once, then skipped."""
    try:
        reap_once()
    except Exception as exc:
        if not said:
            said.append(True)
            logging.getLogger(__name__).warning("cannot ask the GCS about placement groups: %s", exc)
