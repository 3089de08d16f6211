"""Pick the best checkpoint of a sweep from what MLflow recorded.

Every recorded epoch of every trial is a candidate (not only each trial's last epoch).
Ranking, best first:
  1. the sweep's metric, in its mode;
  2. a secondary metric (macro-F1 for accuracy, accuracy otherwise), better first;
  3. fewer trainable parameters (cheaper to fine-tune again);
  4. earlier epoch, then trial id (deterministic).
A candidate is selectable only if its checkpoint directory still exists. Trials that never
reported an epoch (failed early) are listed last with ``epoch == 0`` and no checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAGS
from search_spaces import objectives as M
from search_spaces.errors import UserError

__all__ = ["Candidate", "SelectionError", "candidates", "find_sweep_run", "secondary_metric"]


class SelectionError(UserError):
    """Nothing to select (unknown sweep, no recorded epochs); the message says what to do."""


@dataclass
class Candidate:
    trial_id: str
    run_id: str
    status: str
    outcome: str
    epoch: int
    metrics: dict[str, float]
    params: dict[str, str]
    checkpoint: str | None  # directory path or URI; None if it no longer exists
    extra: dict[str, Any] = field(default_factory=dict)


def secondary_metric(metric: str) -> str:
    return M.EVAL_F1_MACRO if metric == M.EVAL_ACCURACY else M.EVAL_ACCURACY


def find_sweep_run(client: MlflowClient, sweep: str):
    """The most recent parent run of ``sweep`` (experiment = sweep name)."""
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise SelectionError(
            f"no sweep named '{sweep}' in this tracking store; known: {', '.join(names) or 'none'}"
        )
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{TAGS.ROLE}` = 'sweep'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SelectionError(f"experiment '{sweep}' has no sweep run; run `orchestrator run` first")
    return runs[0]


def _checkpoint_dir(train_run: str | None, epoch: int) -> str | None:
    if not train_run:
        return None
    path = f"{train_run.rstrip('/')}/epoch-{epoch:03d}"
    if "://" in path:
        return path  # remote storage: existence is checked when it is loaded
    return path if Path(path).is_dir() else None


def candidates(client: MlflowClient, sweep_run) -> list[Candidate]:
    """All (trial, epoch) candidates of a sweep, ranked best first by the sweep's metric."""
    metric = sweep_run.data.params.get("metric", M.EVAL_ACCURACY)
    mode = sweep_run.data.params.get("mode", M.SELECTABLE_METRICS.get(metric, "max"))
    second = secondary_metric(metric)
    children = client.search_runs(
        [sweep_run.info.experiment_id],
        filter_string=f"tags.`{TAGS.PARENT}` = '{sweep_run.info.run_id}'",
        max_results=10000,
    )
    out: list[Candidate] = []
    for run in children:
        by_epoch: dict[int, dict[str, float]] = {}
        for key in M.REPORTED_METRICS:
            if key == M.EPOCH:
                continue
            for m in client.get_metric_history(run.info.run_id, key):
                by_epoch.setdefault(int(m.step), {})[key] = m.value
        rows = [(e, m) for e, m in sorted(by_epoch.items()) if metric in m] or [
            (0, {})
        ]  # listed, not selectable
        for epoch, metrics in rows:
            out.append(
                Candidate(
                    trial_id=run.data.tags.get(TAGS.TRIAL_ID, run.info.run_name),
                    run_id=run.info.run_id,
                    status=run.info.status,
                    outcome=run.data.tags.get(TAGS.OUTCOME, ""),
                    epoch=epoch,
                    metrics=metrics,
                    params=dict(run.data.params),
                    checkpoint=_checkpoint_dir(run.data.tags.get(TAGS.TRAIN_RUN), epoch) if metrics else None,
                )
            )
    sign = -1.0 if mode == "max" else 1.0
    second_sign = -1.0 if M.SELECTABLE_METRICS[second] == "max" else 1.0
    out.sort(
        key=lambda c: (
            metric not in c.metrics,  # trials that never reported an epoch go last
            sign * c.metrics.get(metric, 0.0),
            second_sign * c.metrics.get(second, 0.0),
            c.metrics.get(M.TRAINABLE_PARAMS, 0.0),
            c.epoch,
            c.trial_id,
        )
    )
    return out


def best_per_trial(ranked: list[Candidate]) -> list[Candidate]:
    """Each trial's best candidate, keeping the ranking order."""
    seen: set[str] = set()
    rows = []
    for c in ranked:
        if c.trial_id not in seen:
            seen.add(c.trial_id)
            rows.append(c)
    return rows
