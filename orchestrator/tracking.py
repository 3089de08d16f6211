"""MLflow recording, driver side only: one parent run per sweep, one child run per trial.

Runs are found again by tags (the experiment path for the parent, the trial id for a child),
never by name or time, so a resumed sweep re-attaches to the same runs instead of duplicating
them. Everything goes through one ``MlflowClient``; worker code never imports mlflow.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import platform
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.plan import trial_key
from orchestrator.store import prepare_store
from search_spaces import objectives as M

__all__ = [
    "SweepRecorder",
    "TrialRecorderCallback",
    "TAGS",
    "artifact_root_for",
    "library_versions",
    "prepare_store",
]

LIBRARIES = ("ray", "torch", "transformers", "peft", "datasets", "optuna", "mlflow", "safetensors")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a result depends on (recorded with sweeps and models)."""
    out = {"python": platform.python_version()}
    for pkg in LIBRARIES:
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def error_summary(error: object) -> tuple[str, str]:
    """(kind, one line) of a trial's error: ``out_of_memory`` with its advice when any rank ran out
    of memory (the others then fail with a broken collective), else ``error`` and the error's
    last line (where Python names the exception)."""
    from trainables.device import OUT_OF_MEMORY, TrialOutOfMemory

    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    oom = f"{TrialOutOfMemory.__module__}.{TrialOutOfMemory.__name__}: "
    for line in lines:
        if line.startswith(oom + OUT_OF_MEMORY):
            return "out_of_memory", line.removeprefix(oom)
    return "error", lines[-1] if lines else "unknown error"


class TAGS:
    ROLE = "orchestrator.role"  # "sweep" | "trial"
    SWEEP = "orchestrator.sweep"
    EXPERIMENT_PATH = "orchestrator.experiment_path"
    TRIAL_ID = "orchestrator.trial_id"
    TRAIN_RUN = "orchestrator.train_run"  # Ray Train run directory holding the epoch checkpoints
    CHECKPOINT = "orchestrator.checkpoint"  # latest checkpoint of the trial
    OUTCOME = "orchestrator.outcome"  # completed | early_stopped | failed | interrupted
    ERROR = "orchestrator.error"  # the error's last line
    ERROR_KIND = "orchestrator.error_kind"  # out_of_memory | error
    CONFIG_ID = "config_id"  # the trial's config without its seed: the same for every repeat (UI group-by)
    PARENT = "mlflow.parentRunId"
    RUN_NAME = "mlflow.runName"


MAX_PARAM = 6000  # MLflow's param value limit (older servers: 500); longer values go to artifacts


def artifact_root_for(tracking_uri: str, workdir: Path) -> str | None:
    """Artifact location for a new experiment: beside a local store, server default otherwise."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (workdir / "mlartifacts").as_uri()
    return None


def _knobs(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config as params: its knobs, without the id of the trial it resumes."""
    from orchestrator.plan import RESUME_KEY

    return {k: v for k, v in config.items() if k != RESUME_KEY}


def _params(values: dict[str, Any]) -> list[Param]:
    return [Param(k, str(v)[:MAX_PARAM]) for k, v in sorted(values.items())]


class SweepRecorder:
    """The sweep's parent run: open (or re-attach), annotate, close."""

    def __init__(self, tracking_uri: str, experiment_name: str, *, artifact_root: str | None):
        prepare_store(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        exp = self.client.get_experiment_by_name(experiment_name)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(
                    experiment_name, artifact_location=artifact_root
                )
            except Exception:  # created concurrently by another process
                self.experiment_id = self.client.get_experiment_by_name(experiment_name).experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        self.run_id: str | None = None

    def find_parent(self, experiment_path: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAGS.ROLE}` = 'sweep' and tags.`{TAGS.EXPERIMENT_PATH}` = '{experiment_path}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def open_parent(
        self, *, sweep: str, experiment_path: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        run_id = self.find_parent(experiment_path)
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=sweep,
                tags={TAGS.ROLE: "sweep", TAGS.SWEEP: sweep, TAGS.EXPERIMENT_PATH: experiment_path, **tags},
            )
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=_params(params))
        else:
            self.client.update_run(run_id, status="RUNNING")
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.run_id = run_id
        return run_id

    def close(self, status: str) -> None:
        """End the parent and any child still RUNNING (e.g. after Ctrl-C), so nothing stays RUNNING."""
        if self.run_id is None:
            return
        for child in self.children(status="RUNNING"):
            self.client.set_tag(child.info.run_id, TAGS.OUTCOME, "interrupted")
            self.client.set_terminated(child.info.run_id, status="KILLED")
        self.client.set_terminated(self.run_id, status=status)

    def settle_ended(self, pending: set[str], epochs: int) -> int:
        """Close trial runs a crash left RUNNING after their trial ended; how many it closed.

        ``pending`` holds the trials the searcher will run again (unfinished or failed); any
        other trial run still RUNNING ended in the searcher's record, but ``kill -9`` came before
        its MLflow run was closed. It is closed as the recorder would have closed it.
        """
        closed = 0
        for child in self.children(status="RUNNING"):
            tags = child.data.tags
            if tags.get(TAGS.ROLE) != "trial" or tags.get(TAGS.TRIAL_ID) in pending:
                continue
            last = int(child.data.metrics.get(M.EPOCH, 0))
            early = last < int(float(child.data.params.get("epochs", epochs)))
            self.client.set_tag(child.info.run_id, TAGS.OUTCOME, "early_stopped" if early else "completed")
            self.client.set_terminated(child.info.run_id, status="KILLED" if early else "FINISHED")
            closed += 1
        return closed

    def children(self, status: str | None = None) -> list[Any]:
        query = f"tags.`{TAGS.PARENT}` = '{self.run_id}'"
        if status:
            query += f" and attributes.status = '{status}'"
        return self.client.search_runs([self.experiment_id], filter_string=query, max_results=10000)


class TrialRecorderCallback(tune.Callback):
    """Tune callback (runs in the driver process) writing each trial into its child run.

    Holds only ids and URIs, so Tune can pickle it with the experiment and bring it back on
    ``Tuner.restore``; the MLflow client is created lazily in whichever process uses it.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        *,
        sweep: str,
        train_root: str,
        metric: str = M.EVAL_ACCURACY,
        mode: str = "max",
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sweep = sweep
        self.train_root = train_root
        self.metric, self.mode = metric, mode  # best_<metric> per trial: what the UI sorts on
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._logged_epochs: dict[str, set[int]] = {}
        self._best: dict[str, float] = {}  # trial_id -> its best value of the metric so far

    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment_id", "parent_run_id", "sweep", "train_root", "metric", "mode")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"metric": M.EVAL_ACCURACY, "mode": "max", **state})
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _child(self, trial) -> str:
        from orchestrator.plan import config_id, trial_key
        from orchestrator.trial import train_run_name

        trial_id = trial_key(trial)  # a resumed trial is recorded in the run of the trial it continues
        if trial_id in self._runs:
            return self._runs[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAGS.PARENT}` = '{self.parent_run_id}' and tags.`{TAGS.TRIAL_ID}` = '{trial_id}'",
            max_results=1,
        )
        if found:  # re-attach after a resume or a trial retry
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            for tag in (TAGS.ERROR, TAGS.ERROR_KIND):  # a failed trial trained again
                if tag in found[0].data.tags:
                    self.client.delete_tag(run_id, tag)
            history = self.client.get_metric_history(run_id, M.EPOCH)
            self._logged_epochs[trial_id] = {int(m.step) for m in history}
            best = self.client.get_metric_history(run_id, f"best_{self.metric}")
            if best:
                self._best[trial_id] = max(best, key=lambda m: m.step).value
            self._log_knobs(run_id, trial, logged=found[0].data.params)
        else:
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=trial_id,
                tags={
                    TAGS.PARENT: self.parent_run_id,
                    TAGS.ROLE: "trial",
                    TAGS.SWEEP: self.sweep,
                    TAGS.TRIAL_ID: trial_id,
                    TAGS.TRAIN_RUN: f"{self.train_root}/{train_run_name(trial_id)}",
                    TAGS.CONFIG_ID: config_id(trial.config),
                },
            ).info.run_id
            self._log_knobs(run_id, trial, logged={})
            self._logged_epochs[trial_id] = set()
        self._runs[trial_id] = run_id
        return run_id

    def _log_knobs(self, run_id: str, trial: Any, *, logged: dict[str, str]) -> None:
        """The trial's knobs as params, those not ``logged`` yet: a driver killed between creating
        a child run and logging them leaves the run without params, and its resume re-attaches."""
        missing = [p for p in _params(_knobs(trial.config)) if p.key not in logged]
        if missing:
            self.client.log_batch(run_id, params=missing)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._child(trial)
        epoch = int(result.get(M.EPOCH, 0))
        key = trial_key(trial)
        if epoch in self._logged_epochs[key]:
            return  # re-reported after a resume: keep the history free of duplicates
        self._logged_epochs[key].add(epoch)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(result[k]), now, epoch) for k in M.REPORTED_METRICS if k in result]
        if self.metric in result:
            metrics.append(Metric(f"best_{self.metric}", self._improve(key, result[self.metric]), now, epoch))
        tags = (
            [RunTag(TAGS.CHECKPOINT, str(result["checkpoint_path"]))] if result.get("checkpoint_path") else []
        )
        self.client.log_batch(run_id, metrics=metrics, tags=tags)

    def _improve(self, trial_id: str, value: float) -> float:
        """The trial's best value of the metric, including this epoch's ``value``."""
        best = self._best.get(trial_id)
        better = best is None or (value > best if self.mode == "max" else value < best)
        self._best[trial_id] = float(value) if better else best
        return self._best[trial_id]

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._child(trial)
        last = (trial.last_result or {}).get(M.EPOCH, 0)
        early = last < int(trial.config.get("epochs", last))
        self.client.set_tag(run_id, TAGS.OUTCOME, "early_stopped" if early else "completed")
        self.client.set_terminated(run_id, status="KILLED" if early else "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._child(trial)
        error = trial.get_error() or "unknown error"
        kind, line = error_summary(error)
        self.client.set_tag(run_id, TAGS.OUTCOME, "failed")
        self.client.set_tag(run_id, TAGS.ERROR, line[:5000])
        self.client.set_tag(run_id, TAGS.ERROR_KIND, kind)
        self.client.log_text(run_id, str(error), "error.txt")
        self.client.set_terminated(run_id, status="FAILED")
