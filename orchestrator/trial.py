"""One Tune trial = one Ray Train run (Train V2: a Tune function trainable fits a TorchTrainer).

The Train run is named ``train-<trial_id>`` under a fixed storage root, so a retried or
restored trial resumes from its own latest checkpoint. The Train controller runs inside the
Tune trial actor (``lean_trainer_class``) and hands every ``ray.train.report`` straight to Tune
(``direct_tune_report``), where ASHA, Optuna and the MLflow callback see it. Tune reuses trial
actors, and a trial actor's next run starts on the Train workers its last run left parked
(``orchestrator.warm_workers``).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

__all__ = [
    "DRIVER_RESOURCE",
    "EMBEDDED_RAY_ENV",
    "TrialSetup",
    "checkpoint_config",
    "driver_resources",
    "direct_tune_report",
    "lean_trainer_class",
    "out_of_memory_once",
    "run_trial",
    "train_run_name",
    "without_autoscaling_requests",
]

# Custom resource that trial drivers (Tune trial actors) are scheduled on. A driver only
# orchestrates its Train run, so it must not hold a CPU a worker needs: with 2 CPUs and two
# 1-CPU trials, even 0.01 CPU per driver leaves a worker group waiting forever. Local Ray gets
# plenty of it; on a cluster, give it to non-GPU (ideally non-spot) nodes only.
DRIVER_RESOURCE = "trial_driver"
EMBEDDED_RAY_ENV = "ORCHESTRATOR_EMBEDDED_RAY"  # "1" in trial actors on the embedded one-machine Ray
THREAD_TIMEOUT_S = 120  # > warm_workers.RELEASE_BUDGET_S plus a worker group's shutdown
# How often the Train controller polls its workers (Ray's default: 2 s). Reports and the end of a
# run only reach Tune at a poll, so each finished trial held its resources ~2 s longer; a poll
# is one small actor call per worker, and a slow one is waited for, not counted as a failure.
POLL_INTERVAL_S = 0.25
FALLBACK_DRIVER_CPU = 0.01


def driver_resources(cluster: dict[str, float]) -> dict[str, float]:
    """Tune resources of one trial driver on a cluster with ``cluster`` total resources."""
    if cluster.get(DRIVER_RESOURCE, 0) >= 1:
        return {"cpu": 0, DRIVER_RESOURCE: 1}
    return {"cpu": FALLBACK_DRIVER_CPU}  # Tune rejects an empty request


def train_run_name(trial_id: str) -> str:
    return f"train-{trial_id}"


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a sweep shares (the searched knobs come in ``config``)."""

    task: dict[str, Any]  # trainables.config.TaskConfig, dumped
    train_root: str  # storage_path of the Train runs
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    metric: str = "eval_accuracy"  # the sweep's metric and mode: which epochs retention keeps
    mode: str = "max"
    worker_max_failures: int = 1
    worker_resources: dict[str, float] = field(default_factory=dict)  # extra custom resources
    invocation: str = ""  # this `run` of the sweep: Tune's retry of a trial out of memory fails at once
    reuse_workers: bool = False  # Tune reuses trial actors: park a finished run's workers for the next


def checkpoint_config(keep: int | str, metric: str, mode: str) -> Any:
    """Ray Train's retention: the best ``keep`` epochs by ``metric``; Ray always keeps the latest too."""
    import ray.train

    return ray.train.CheckpointConfig(
        num_to_keep=None if keep == "all" else int(keep),
        checkpoint_score_attribute=metric,
        checkpoint_score_order=mode,
    )


def lean_trainer_class() -> type:
    """``TorchTrainer`` that runs its Train controller in the trial's own process, without Ray Data.

    Train V2 starts, for every run, a controller actor (a new process that imports Train and
    torch) and a ``DatasetManager`` actor (Ray Data: pandas, pyarrow), and Tune's report
    callback adds a queue actor between them: three processes per trial (the controller alone
    took 3.5 s to start on a 2-core machine) before the worker group exists. Here:

    - the controller (an asyncio loop that only calls the workers) runs in the Tune trial
      actor, which already imported all it needs (killing the trial still ends the workers,
      which Ray fate-shares with it);
    - no placement-group cleaner actor per run (a process per concurrent trial, waking a
      hundred times a second): the sweep's driver removes the groups of dead trial actors
      (``orchestrator.reaper``), so a trainer of this class needs a driver that reaps;
    - reports go straight to Tune from that loop (``DirectTuneReport``), with no queue actor;
    - the Ray Data callback is dropped when a run is given no Ray Dataset (ours never is).

    What this gives up: ``ray.train.get_all_reported_checkpoints()`` inside a worker asks the
    controller actor, which is now the trial actor, so it is not available to the training
    function (ours reads its checkpoint with ``ray.train.get_checkpoint()``, which still works).

    ``_initialize_and_run_controller`` and ``_create_default_callbacks`` are Ray's own seams
    (a contract test pins them against the installed Ray); where a Ray version lacks them, the
    plain trainer is used.
    """
    from ray.train.torch import TorchTrainer

    seams = ("_create_default_callbacks", "_initialize_and_run_controller")
    if not all(callable(getattr(TorchTrainer, s, None)) for s in seams):
        return TorchTrainer

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list:
            # no cleaner process per run: the sweep's driver reaps the groups of dead trial actors
            dropped = {"PlacementGroupCleanerCallback"}
            if not getattr(self, "datasets", None):
                dropped.add("DatasetsCallback")
            return [c for c in super()._create_default_callbacks() if type(c).__name__ not in dropped]

        def _initialize_and_run_controller(self, **controller_init_kwargs: Any) -> Any:
            import asyncio

            import ray
            from ray.train.v2._internal.execution.controller import TrainController

            policy = controller_init_kwargs["failure_policy"]
            controller_init_kwargs["failure_policy"] = no_retry_on_out_of_memory(policy)
            if os.environ.get(EMBEDDED_RAY_ENV) == "1":
                scaling = controller_init_kwargs["scaling_policy"]
                controller_init_kwargs["scaling_policy"] = without_autoscaling_requests(scaling)
            if ray.get_runtime_context().get_actor_id() is None:  # not in a trial actor: Ray's own way
                return super()._initialize_and_run_controller(**controller_init_kwargs)
            from orchestrator.warm_workers import release_stopped_run, reusable_worker_group

            controller = TrainController(**controller_init_kwargs)
            controller.worker_group_cls = reusable_worker_group()  # starts on this actor's parked workers
            try:
                asyncio.run(controller.run())
            except BaseException:
                # Tune stopping the trial (ASHA) ends this thread with SystemExit inside a report:
                # release the workers and their placement group now rather than when the actor
                # dies; a run stopped at its last report parks them for the actor's next trial
                release_stopped_run(controller, finishing=self._reported_last_epoch())
                raise
            return controller.get_result()

        def _reported_last_epoch(self) -> bool:
            from search_spaces.objectives import EPOCH

            with contextlib.suppress(Exception):  # never in the way of releasing the workers
                reports = [c for c in self.run_config.callbacks or [] if hasattr(c, "last_metrics")]
                epochs = (self.train_loop_config or {}).get("epochs")
                return bool(reports and epochs) and reports[0].last_metrics.get(EPOCH) == epochs
            return False

    return LeanTorchTrainer


@cache
def _single_rank_backend() -> type:
    from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

    class SingleRankTorchBackend(_TorchBackend):
        def on_start(self, worker_group: Any, backend_config: Any) -> None:
            if len(worker_group) > 1:
                super().on_start(worker_group, backend_config)
                return
            worker_group.execute(_set_torch_distributed_env_vars)  # RANK, LOCAL_RANK... as Ray sets them

    return SingleRankTorchBackend


def torch_config() -> Any:
    """Ray Train's ``TorchConfig``, except that a run of one worker gets no process group.

    Ray sets up a gloo (NCCL on GPU) group of world size 1 for a single worker: nothing is ever
    exchanged in it, but its TCP loop thread wakes a hundred times a second on the CPU the
    trial trains on. The training loop asks ``torch.distributed.is_initialized()`` before any
    collective, and ``prepare_model`` / ``prepare_data_loader`` wrap nothing for one worker.
    Groups of several ranks are set up exactly as Ray does.
    """
    from ray.train.torch import TorchConfig

    backend = _single_rank_backend()

    @dataclass
    class SingleRankTorchConfig(TorchConfig):
        @property
        def backend_cls(self) -> type:
            return backend

    return SingleRankTorchConfig()


def without_autoscaling_requests(policy: Any) -> Any:
    """Train's fixed scaling policy without its requests to Ray's ``AutoscalingCoordinator``.

    Train V2 registers every run's resources with a cluster-wide coordinator actor (for the
    autoscaler and Ray Data), blocking up to 5 s at the run's start, every 20 s, and at its end;
    the first run of a sweep also waits for that actor's process to start. The embedded
    one-machine Ray has no autoscaler, so there it is left out. Other policies are kept.
    """
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy

    if type(policy) is not FixedScalingPolicy:
        return policy

    class OneMachineScalingPolicy(FixedScalingPolicy):
        def _maybe_send_resource_request(self) -> None:
            pass

        def _send_resource_request(self) -> None:
            pass

        def _cancel_resource_request(self) -> None:
            pass

    return OneMachineScalingPolicy(policy.scaling_config)


def no_retry_on_out_of_memory(policy: Any) -> Any:
    """Train's failure policy, except that a worker out of memory ends the run at once.

    Retrying would run the same step into the same wall; other ranks of the group fail with
    it (a broken collective), so one rank's ``TrialOutOfMemory`` decides.
    """
    from ray.train.v2._internal.execution.failure_handling import FailureDecision, FailurePolicy
    from ray.train.v2.api.exceptions import WorkerGroupError

    from trainables.device import TrialOutOfMemory

    class NoRetryOnOutOfMemory(FailurePolicy):
        def __init__(self, inner: FailurePolicy):
            super().__init__(inner.failure_config)
            self.inner = inner

        def make_decision(self, training_failed_error: Any) -> FailureDecision:
            failures = getattr(training_failed_error, "worker_failures", {})
            if isinstance(training_failed_error, WorkerGroupError) and any(
                isinstance(e, TrialOutOfMemory) for e in failures.values()
            ):
                return FailureDecision.RAISE
            return self.inner.make_decision(training_failed_error)

    return NoRetryOnOutOfMemory(policy)


def direct_tune_report() -> Any:
    """Ray Train report callback that hands each report to Tune in this process (see above)."""
    import ray.tune
    from ray.train.v2.api.callback import UserCallback
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

    class DirectTuneReport(UserCallback):
        last_metrics: dict = {}  # noqa: RUF012 (replaced, never mutated)

        def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Any) -> None:
            result = dict(metrics[0])  # rank 0's metrics, as Ray's TuneReportCallback does
            self.last_metrics = result
            if checkpoint:
                result[CHECKPOINT_PATH_KEY] = checkpoint.path
            ray.tune.report(result)

    return DirectTuneReport()


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    import ray.train
    import ray.tune

    from orchestrator import warm_workers
    from orchestrator.plan import RESUME_KEY
    from trainables.loop import train_loop_per_worker

    # A resumed trial continues the Train run (checkpoints) of the trial it resumes. The id is
    # not available inside workers: pass it down.
    trial_id = config.get(RESUME_KEY) or ray.tune.get_context().get_trial_id()
    # With actor reuse, Tune waits this long for a stopped trial's thread before handing the
    # actor to the next trial (Ray's default, 2 s, is shorter than releasing a worker group)
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(THREAD_TIMEOUT_S))
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(POLL_INTERVAL_S))
    warm_workers.park_finished_runs(setup.reuse_workers)
    config = {k: v for k, v in config.items() if k != RESUME_KEY}
    resources = {"CPU": setup.cpus_per_worker, **setup.worker_resources}
    if setup.gpus_per_worker:
        resources["GPU"] = setup.gpus_per_worker
    trainer = lean_trainer_class()(
        train_loop_per_worker,
        train_loop_config={
            **config,
            "task": setup.task,
            "trial_id": trial_id,
            "trial_started_at": time.time(),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=setup.workers,
            use_gpu=setup.gpus_per_worker > 0,  # NCCL backend on GPU, gloo on CPU
            resources_per_worker=resources,
        ),
        torch_config=torch_config(),
        run_config=ray.train.RunConfig(
            name=train_run_name(trial_id),
            storage_path=setup.train_root,
            checkpoint_config=checkpoint_config(config.get("keep_checkpoints", 1), setup.metric, setup.mode),
            failure_config=ray.train.FailureConfig(max_failures=setup.worker_max_failures),
            callbacks=[direct_tune_report()],
        ),
    )
    with out_of_memory_once(
        f"{setup.train_root}/{train_run_name(trial_id)}/out-of-memory-{setup.invocation}.txt"
    ):
        trainer.fit()  # raises TrainingFailedError once worker retries are exhausted -> trial ERROR


@contextlib.contextmanager
def out_of_memory_once(marker: str):
    """Around a trial's ``fit()``: Tune retries a failed trial (``FailureConfig``) in a new actor;
    when the failure was running out of memory, the retry fails at once with the same line
    instead of repeating the same step. ``marker`` is per run of the sweep: a later ``run``
    (after the memory was fixed) trains the trial again."""
    _raise_if_out_of_memory_before(marker)
    try:
        yield
    except Exception as exc:
        _mark_out_of_memory(exc, marker)
        raise


def _out_of_memory(exc: BaseException) -> BaseException | None:
    """A rank's ``TrialOutOfMemory`` inside Train's failure, if it was one."""
    from trainables.device import TrialOutOfMemory

    failures = getattr(exc, "worker_failures", None) or {}
    return next((e for e in failures.values() if isinstance(e, TrialOutOfMemory)), None)


def _mark_out_of_memory(exc: BaseException, marker: str) -> None:
    """Leave the retry a note with the out-of-memory line (nothing for other failures)."""
    from trainables.data import filesystem

    oom = _out_of_memory(exc)
    if oom is None:
        return
    with contextlib.suppress(Exception):  # best effort: without the note Tune merely retries it
        fs, path = filesystem(marker)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(str(oom).encode())


def _raise_if_out_of_memory_before(marker: str) -> None:
    import pyarrow.fs as pafs

    from trainables.data import filesystem
    from trainables.device import TrialOutOfMemory

    fs, path = filesystem(marker)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return
    with fs.open_input_stream(path) as f:
        raise TrialOutOfMemory(f.read().decode())
