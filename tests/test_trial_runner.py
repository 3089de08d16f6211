"""The trial runner's trainer: Ray Train's TorchTrainer, less the actors a trial does not use."""

from __future__ import annotations

import ray.train
from ray.train.torch import TorchTrainer

from orchestrator.trial import lean_trainer_class


def _noop(config: dict) -> None:
    pass


def _callback_names(trainer) -> list[str]:
    return [type(c).__name__ for c in trainer._create_default_callbacks()]


def _trainer(cls, **kwargs):
    return cls(_noop, scaling_config=ray.train.ScalingConfig(num_workers=1), **kwargs)


def test_lean_trainer_is_ray_trains_own_minus_the_dataset_actor_and_the_cleaner():
    lean = lean_trainer_class()
    assert issubclass(lean, TorchTrainer) and lean is not TorchTrainer  # the seam exists in this Ray
    plain, ours = _callback_names(_trainer(TorchTrainer)), _callback_names(_trainer(lean))
    assert "DatasetsCallback" in plain  # what Train V2 starts a DatasetManager actor for
    assert "PlacementGroupCleanerCallback" in plain  # ... and a PlacementGroupCleaner actor
    # everything else kept, in order (the sweep's driver reaps the groups: orchestrator.reaper)
    dropped = {"DatasetsCallback", "PlacementGroupCleanerCallback"}
    assert [n for n in plain if n not in dropped] == ours
    assert "BackendSetupCallback" in ours


def test_lean_trainer_keeps_the_dataset_actor_when_given_datasets():
    import ray.data

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        trainer = _trainer(lean_trainer_class(), datasets={"train": ray.data.range(4)})
        assert "DatasetsCallback" in _callback_names(trainer)
    finally:
        ray.shutdown()


def test_the_controller_seam_exists_in_this_ray():
    """``_initialize_and_run_controller`` gets the controller's constructor arguments; the
    controller's ``run`` is a coroutine and ``get_result`` a plain method (what the lean
    trainer calls in the trial's own process)."""
    import inspect

    from ray.train.v2._internal.execution.controller import TrainController

    assert (
        "controller_init_kwargs" in inspect.signature(TorchTrainer._initialize_and_run_controller).parameters
    )
    assert inspect.iscoroutinefunction(TrainController.run)
    assert not inspect.iscoroutinefunction(TrainController.get_result)


def _report_twice(config: dict) -> None:
    import os
    import tempfile

    import ray.train

    context = ray.train.get_context()
    if config["fail_marker"] == "oom":  # a real allocation failure, as the training loop wraps it
        import torch

        from trainables.device import out_of_memory_as_error

        with open(os.path.join(config["root"], f"oom-attempt-{context.get_world_rank()}"), "a") as f:
            f.write("x")
        with out_of_memory_as_error(torch.device("cpu"), batch_size=32, micro_batch_size=None):
            if context.get_world_rank() == 0:
                torch.empty(2**50, dtype=torch.uint8)
            ray.train.report({"epoch": 0, "rank": context.get_world_rank()})  # the other rank waits here
    if context.get_world_rank() == 0 and config["fail_marker"] and not os.path.exists(config["fail_marker"]):
        open(config["fail_marker"], "w").close()
        raise RuntimeError("first attempt fails")  # Train's FailureConfig restarts the worker group
    for epoch in range(2):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "x"), "w") as f:
                f.write(str(epoch))
            ray.train.report(
                {"epoch": epoch, "rank": context.get_world_rank()},
                checkpoint=ray.train.Checkpoint.from_directory(d) if context.get_world_rank() == 0 else None,
            )


def _lean_trial(config: dict, root: str) -> None:
    import os

    import ray.tune

    from orchestrator.trial import direct_tune_report, out_of_memory_once

    trial_id = ray.tune.get_context().get_trial_id()
    with open(os.path.join(root, f"entered-{config['fail_marker'] == 'oom'}"), "a") as f:
        f.write("x")
    trainer = lean_trainer_class()(
        _report_twice,
        train_loop_config={"fail_marker": config["fail_marker"], "root": root},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            name=ray.tune.get_context().get_trial_id(),
            storage_path=root,
            failure_config=ray.train.FailureConfig(max_failures=1),
            callbacks=[direct_tune_report()],
        ),
    )
    with out_of_memory_once(os.path.join(root, trial_id, "out-of-memory-run1.txt")):
        trainer.fit()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_lean_trial_reports_to_tune_retries_workers_and_starts_no_controller_or_queue_actor(tmp_path):
    """Real Tune + Train V2 with 2 workers: rank 0's reports and checkpoint paths reach Tune in
    order, a worker failure is retried by Train but running out of memory is not (the trial
    fails at once with one line, also when Tune retries it), and the only actors are Tune's
    trial actor, the workers and Train's synchronization actor: no controller actor, no queue
    actor, no dataset manager, no placement-group cleaner, and on the embedded one-machine Ray
    (as ``init_ray`` marks it) no autoscaling coordinator."""
    from ray import tune

    (tmp_path / "train").mkdir()
    from orchestrator.trial import EMBEDDED_RAY_ENV

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {EMBEDDED_RAY_ENV: "1"}},
    )
    try:
        results = tune.Tuner(
            tune.with_resources(
                tune.with_parameters(_lean_trial, root=str(tmp_path / "train")), {"cpu": 0.01}
            ),
            param_space={"fail_marker": tune.grid_search([str(tmp_path / "failed-once"), "", "oom"])},
            run_config=tune.RunConfig(
                storage_path=str(tmp_path / "tune"),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=1),
            ),
        ).fit()
        classes = [a["ActorClassName"] for a in ray._private.state.actors().values()]
    finally:
        ray.shutdown()
    by_marker = {r.config["fail_marker"]: r for r in results}
    oom = str(by_marker.pop("oom").error).strip().splitlines()
    assert oom[-1].startswith(
        "trainables.device.TrialOutOfMemory: out of memory on cpu with 32 rows per pass: "
    ), oom[-1]
    assert "set train.micro_batch_size to 16" in oom[-1]
    assert _read(tmp_path / "train" / "oom-attempt-0") == "x"  # not retried by Train (max_failures=1)
    assert _read(tmp_path / "train" / "entered-True") == "xx"  # Tune's retry (max_failures=1) failed at once
    for r in by_marker.values():
        assert r.error is None, r.error
        history = r.metrics_dataframe
        assert list(history["epoch"]) == [0, 1] and set(history["rank"]) == {0}
        assert all(_read(f"{p}/x") == str(e) for p, e in zip(history["checkpoint_path"], [0, 1], strict=True))
    assert (tmp_path / "failed-once").exists()
    assert classes.count("RayTrainWorker") == 3 * 2 + 2  # 3 trials x 2 workers, + the retried group
    helpers = {
        "TrainController",
        "_QueueActor",
        "DatasetManager",
        "_AutoscalingCoordinatorActor",
        "PlacementGroupCleaner",
    }
    assert not helpers & set(classes), classes


def test_a_trial_worker_raises_its_gil_switch_interval(monkeypatch):
    """Ray's worker main thread takes the GIL every 10 ms; the training loop runs with a longer
    switch interval so that it is not made to hand the GIL over mid-forward (BENCHMARKS.md)."""
    import sys
    from types import SimpleNamespace

    from trainables import loop

    seen = []
    monkeypatch.setattr(
        loop, "resolve_trial_config", lambda config: SimpleNamespace(batch_size=8, micro_batch_size=None)
    )
    monkeypatch.setattr(loop, "_train", lambda cfg, device, marks: seen.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    try:
        loop.train_loop_per_worker({})
    finally:
        sys.setswitchinterval(before)
    assert before < loop.GIL_SWITCH_INTERVAL_S
    assert len(seen) == 1 and abs(seen[0] - loop.GIL_SWITCH_INTERVAL_S) < 1e-9
