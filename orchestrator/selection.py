"""Pick the best checkpoint of a sweep from what MLflow recorded.

Every recorded epoch of every trial is a candidate (not only each trial's last epoch).
Ranking, best first:
  1. the sweep's metric, in its mode;
  2. a secondary metric (macro-F1 for accuracy, accuracy otherwise), better first;
  3. fewer trainable parameters (cheaper to fine-tune again);
  4. earlier epoch, then trial id (deterministic).
A candidate is selectable only if its checkpoint directory still exists. Trials that never
reported an epoch (failed early) are listed last with ``epoch == 0`` and no checkpoint.

With repeats (several trials, one per seed, share a ``config_id``), configs are ranked first:
by the mean over their seeds of each seed's best-epoch value, then the candidates of each
config in the order above. So the best checkpoint is the best one of the best config on
average, not the luckiest seed (:func:`config_stats`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAGS
from search_spaces import objectives as M
from search_spaces.errors import UserError

__all__ = [
    "Candidate",
    "ConfigStats",
    "SelectionError",
    "best_per_trial",
    "candidates",
    "config_stats",
    "find_sweep_run",
    "secondary_metric",
]


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
    config_id: str = ""  # the same for every seed of one config (the trial id where not recorded)


@dataclass(frozen=True)
class ConfigStats:
    """One config's seeds: mean and sample standard deviation of their best-epoch values."""

    config_id: str
    mean: float | None  # None: no seed reported an epoch
    std: float  # 0.0 for a single seed
    n: int  # seeds with a value
    trials: tuple[str, ...]


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
        filter_string=f"tags.`{TAGS.PARENT}` = '{sweep_run.info.run_id}' and tags.`{TAGS.ROLE}` = 'trial'",
        max_results=10000,
    )  # trials only: a promotion's run is a child of the sweep too
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
                    config_id=run.data.tags.get(TAGS.CONFIG_ID) or run.info.run_id,
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
    return _by_config(out, metric, mode)


def config_stats(ranked: list[Candidate], metric: str) -> dict[str, ConfigStats]:
    """Per config (in ranking order): its seeds' best-epoch values of ``metric``, summarised."""
    groups: dict[str, list[Candidate]] = {}
    for c in best_per_trial(ranked):
        groups.setdefault(c.config_id, []).append(c)
    out = {}
    for key, trials in groups.items():
        values = [c.metrics[metric] for c in trials if metric in c.metrics]
        out[key] = ConfigStats(
            config_id=key,
            mean=statistics.fmean(values) if values else None,
            std=statistics.stdev(values) if len(values) > 1 else 0.0,
            n=len(values),
            trials=tuple(c.trial_id for c in trials),
        )
    return out


def _by_config(ranked: list[Candidate], metric: str, mode: str) -> list[Candidate]:
    """Configs by their seeds' mean (best first), each config's candidates in ranking order."""
    stats = config_stats(ranked, metric)
    if all(len(s.trials) == 1 for s in stats.values()):
        return ranked  # no repeats: the plain ranking
    sign = -1.0 if mode == "max" else 1.0
    order = {
        key: (s.mean is None, sign * (s.mean or 0.0), -s.n, i) for i, (key, s) in enumerate(stats.items())
    }
    last = (True, 0.0, 0, len(order))
    return sorted(ranked, key=lambda c: order.get(c.config_id, last))  # stable: order within a config kept


def best_per_trial(ranked: list[Candidate]) -> list[Candidate]:
    """Each trial's best candidate, keeping the ranking order."""
    seen: set[str] = set()
    rows = []
    for c in ranked:
        if c.trial_id not in seen:
            seen.add(c.trial_id)
            rows.append(c)
    return rows
