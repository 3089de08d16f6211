"""Train workers parked by a finished trial and reused by the next trial of the same Tune actor."""

from __future__ import annotations

import itertools
import os
import time

import pytest
import ray
import ray.train

from orchestrator.reaper import orphaned_groups, reaping
from orchestrator.trial import THREAD_TIMEOUT_S, direct_tune_report, lean_trainer_class, torch_config
from trainables.stopping import raise_if_stopped

EPOCHS = 4


def _epochs(config: dict) -> None:
    """Reports ``quality`` per epoch; several ranks all-reduce first (the process group works),
    a single rank has none."""
    import torch
    import torch.distributed as dist

    context = ray.train.get_context()
    total = torch.tensor([1.0])
    if dist.is_initialized():
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
                "process_group": dist.is_initialized(),
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
        torch_config=torch_config(),  # as run_trial does: no process group for one worker
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
    previous trial's worker processes (2 ranks with a working process group: they all-reduce;
    1 worker without one),
    whether that trial reached its last epoch or was stopped mid-run (its ranks end at the same
    next batch). Every trial reports its own config; no trial errors (Tune's reset waits for a
    stopped run to release its workers); after the sweep, with the driver reaping the groups of
    dead trial actors as the sweep's does, no placement group is left."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    qualities = [0.9, 0.1, 0.8, 0.2, 0.85, 0.15]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # as the embedded Ray runs
    try:
        with reaping(interval_s=0.2):
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
                    scheduler=ASHAScheduler(
                        time_attr="epoch", max_t=max_t, grace_period=1, reduction_factor=2
                    ),
                ),
                run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
            ).fit()
            deadline = time.monotonic() + 30  # Tune ended the trial actors; their groups go
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
        assert set(h["process_group"]) == {workers > 1}
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
    """Holds a placement group, as a trial actor holds its Train worker group."""

    def start(self) -> str:
        from ray.util.placement_group import placement_group

        group = placement_group([{"CPU": 0.25}])
        ray.get(group.ready())
        return group.id.hex()


_OTHER_JOB = """
import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False)
from ray.util.placement_group import placement_group
@ray.remote(num_cpus=0)
class Owner:
    def start(self):
        g = placement_group([{"CPU": 0.25}]); ray.get(g.ready()); return g.id.hex()
owner = Owner.remote()
print(ray.get(owner.start.remote()), flush=True)
ray.kill(owner, no_restart=True)
sys.stdin.read()  # this job lives (and its dead actor's group with it) until the test is done
"""


def _states() -> dict[str, str]:
    return {pg_id: pg["state"] for pg_id, pg in ray.util.placement_group_table().items()}


def test_the_driver_reaps_the_group_of_a_dead_trial_actor_and_nothing_else():
    """The owners run in a placement group that captures their children, as Tune's trial actors
    do. Killing one leaves its group reserved (Ray removes it only when the job ends too); the
    reaper removes it, on a Ray without a dashboard. It leaves the group of the living owner,
    the driver's own groups (Tune's), and the group of another job's dead actor."""
    import subprocess
    import sys

    info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    other = None
    try:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        tune_groups = [placement_group([{"CPU": 0.01}]) for _ in range(2)]  # as Tune places trial actors
        dying, living = (
            _GroupOwner.options(
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    g, placement_group_capture_child_tasks=True
                )
            ).remote()
            for g in tune_groups
        )
        groups = {"dying": ray.get(dying.start.remote()), "living": ray.get(living.start.remote())}
        other = subprocess.Popen(
            [sys.executable, "-c", _OTHER_JOB, info.address_info["address"]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        groups["other job"] = other.stdout.readline().strip()
        assert orphaned_groups() == []
        ray.kill(dying, no_restart=True)
        deadline = time.monotonic() + 20
        while not orphaned_groups() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orphaned_groups() == [groups["dying"]]
        time.sleep(1.0)
        assert _states()[groups["dying"]] == "CREATED"  # Ray keeps it while the job lives
        with reaping(interval_s=0.2):
            while _states()[groups["dying"]] != "REMOVED" and time.monotonic() < deadline:
                time.sleep(0.1)
        states = _states()
    finally:
        if other is not None:
            other.stdin.close()
            other.wait(timeout=30)
        ray.shutdown()
    assert states[groups["dying"]] == "REMOVED"
    assert states[groups["living"]] == states[groups["other job"]] == "CREATED"
    assert all(states[g.id.hex()] == "CREATED" for g in tune_groups)
