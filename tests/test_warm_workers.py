"""Train workers parked by a finished trial and reused by the next trial of the same Tune actor."""

from __future__ import annotations

import itertools
import os
import time

import pytest
import ray
import ray.train

from orchestrator.trial import THREAD_TIMEOUT_S, direct_tune_report, lean_trainer_class
from orchestrator.warm_workers import actor_alive, start_cleaner
from trainables.stopping import raise_if_stopped

EPOCHS = 4


def _epochs(config: dict) -> None:
    """Reports ``quality`` per epoch; the ranks all-reduce first (the process group works)."""
    import torch
    import torch.distributed as dist

    context = ray.train.get_context()
    total = torch.tensor([1.0])
    dist.all_reduce(total)
    for epoch in range(1, config["epochs"] + 1):
        for _ in range(6):  # a "batch": where the training loop checks for a stop
            time.sleep(0.05)
            raise_if_stopped(ranks_in_step=True)
        ray.train.report(
            {
                "epoch": epoch,
                "quality": config["quality"],
                "ranks": float(total.item()),
                "worker_pid": os.getpid(),  # Tune's own "pid" is the trial actor's
                "t": time.time(),
                "rank": context.get_world_rank(),
            }
        )


def _trial(config: dict, root: str, workers: int) -> None:
    import ray.tune

    from orchestrator import warm_workers

    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(THREAD_TIMEOUT_S))  # as run_trial does
    warm_workers.park_finished_runs(True)
    trainer = lean_trainer_class()(
        _epochs,
        train_loop_config={"quality": config["quality"], "epochs": EPOCHS},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.45}),
        run_config=ray.train.RunConfig(
            name=ray.tune.get_context().get_trial_id(), storage_path=root, callbacks=[direct_tune_report()]
        ),
    )
    trainer.fit()


def _placement_groups_left() -> list[str]:
    table = ray.util.placement_group_table()
    return [pg_id for pg_id, pg in table.items() if pg["state"] != "REMOVED"]


@pytest.mark.parametrize(("workers", "max_t"), [(1, 2 * EPOCHS), (2, EPOCHS)])
def test_asha_stops_and_finished_trials_hand_their_workers_to_the_next_trial(tmp_path, workers, max_t):
    """Real Tune (reuse_actors, ASHA) over Train runs of 1 worker or 2 gloo ranks. ASHA stops
    trials while they train; the 2-rank trials that get to their last epoch are stopped there
    (max_t), the 1-worker ones finish on their own. The next trial of each actor runs on the
    previous trial's worker processes (with a working process group: the ranks all-reduce),
    whether that trial reached its last epoch or was stopped mid-run (its ranks end at the same
    next batch). Every trial reports its own config; no trial errors (Tune's reset waits for a
    stopped run to release its workers); after the sweep no placement group is left."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    qualities = [0.9, 0.1, 0.8, 0.2, 0.85, 0.15]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # as the embedded Ray runs
    try:
        results = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(_trial, root=str(tmp_path / "train"), workers=workers), {"cpu": 0.01}
            ),
            param_space={"quality": tune.grid_search(qualities)},
            tune_config=tune.TuneConfig(
                metric="quality",
                mode="max",
                max_concurrent_trials=2,
                reuse_actors=True,
                scheduler=ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=1, reduction_factor=2),
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
        ).fit()
        deadline = time.monotonic() + 30  # the standing cleaners remove parked groups of ended actors
        while _placement_groups_left() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _placement_groups_left()
    finally:
        ray.shutdown()
    assert not [r.error for r in results if r.error]
    for r in results:
        assert set(r.metrics_dataframe["quality"]) == {r.config["quality"]}
    runs = sorted((r.metrics_dataframe for r in results), key=lambda h: h["t"].iloc[0])
    for h in runs:
        assert set(h["ranks"]) == {float(workers)} and set(h["rank"]) == {0}
    by_actor: dict[int, list] = {}
    for h in runs:
        by_actor.setdefault(h["pid"].iloc[0], []).append(h)
    handed = [(len(prev) == EPOCHS, prev["worker_pid"].iloc[0] == nxt["worker_pid"].iloc[0])
              for trials in by_actor.values() for prev, nxt in itertools.pairwise(trials)]  # fmt: skip
    assert all(same for _, same in handed), handed  # handed over after every trial
    assert (False, True) in handed, handed  # ... stopped mid-run too
    if workers > 1:
        assert (True, True) in handed, handed  # ... and stopped at its last report
    assert not left, left


@ray.remote(num_cpus=0)
class _GroupOwner:
    """Holds a placement group, as a trial actor does; with ``watched``, under a cleaner."""

    def start(self, watched: bool) -> str:
        from ray.util.placement_group import placement_group

        group = placement_group([{"CPU": 0.5}])
        ray.get(group.ready())
        if watched:
            cleaner = start_cleaner(ray.get_runtime_context().get_actor_id(), 0.2, None)
            ray.get(cleaner.register_placement_group.remote(group))
        return group.id.hex()

    def actor_id(self) -> str:
        return ray.get_runtime_context().get_actor_id()


def test_cleaner_removes_the_group_of_a_dead_actor_on_a_ray_without_dashboard():
    """Without a dashboard there is no State API: the cleaner asks the GCS. The owners run in a
    placement group that captures their children, as Tune's trial actors do (the cleaner is
    not). While the owner lives its group stays; once the owner is killed the group is removed.
    The same kill of an owner with no cleaner leaves its group (Ray does not remove it)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        tune_groups = [placement_group([{"CPU": 0.01}]) for _ in range(2)]  # as Tune places trial actors
        watched, unwatched = (
            _GroupOwner.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    g, placement_group_capture_child_tasks=True
                )
            ).remote()
            for g in tune_groups
        )
        groups = {
            "watched": ray.get(watched.start.remote(True)),
            "unwatched": ray.get(unwatched.start.remote(False)),
        }
        watched_id = ray.get(watched.actor_id.remote())
        assert actor_alive(watched_id)
        time.sleep(1.0)  # five checks of a live owner
        for g in tune_groups:
            remove_placement_group(g)
        assert set(_placement_groups_left()) == set(groups.values())
        ray.kill(watched, no_restart=True)
        ray.kill(unwatched, no_restart=True)
        deadline = time.monotonic() + 20
        while groups["watched"] in _placement_groups_left() and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _placement_groups_left()
        dead = actor_alive(watched_id)
    finally:
        ray.shutdown()
    assert not dead
    assert left == [groups["unwatched"]]
