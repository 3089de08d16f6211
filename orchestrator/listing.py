"""The sweeps a tracking store holds, one row each: what ``orchestrator ls`` prints.

A sweep is a parent run tagged ``orchestrator.role = sweep``; its trials are its child runs. A
row says the parent's status, how many trials ended (finished, stopped early or failed) out of
the planned ones, how many are still running, the best value of the sweep's metric and when it
started and for how long it ran. Read-only: nothing here writes to the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from orchestrator.tracking import TAGS

__all__ = ["SweepRow", "list_sweeps"]

ENDED = ("FINISHED", "KILLED", "FAILED")


@dataclass(frozen=True)
class SweepRow:
    sweep: str
    status: str  # the parent run's: RUNNING, FINISHED, KILLED (interrupted) or FAILED
    trials_ended: int
    trials_running: int
    trials_planned: int | None  # None for sweeps recorded before plans were logged
    metric: str
    best: float | None
    started_ms: int
    duration_s: float | None  # None while running
    run_id: str
    experiment_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _planned(params: dict[str, str]) -> int | None:
    for key in ("planned_trials", "num_trials"):
        if params.get(key, "").isdigit():
            return int(params[key])
    return None


def list_sweeps(client: Any) -> list[SweepRow]:
    """Every sweep run in the store, the most recently started first."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    parents = client.search_runs(
        experiments,
        filter_string=f"tags.`{TAGS.ROLE}` = 'sweep'",
        order_by=["start_time DESC"],
        max_results=1000,
    )
    rows = []
    for run in parents:
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.`{TAGS.PARENT}` = '{run.info.run_id}' and tags.`{TAGS.ROLE}` = 'trial'",
            max_results=10000,
        )  # a promotion's run is a child of the sweep too
        statuses = [c.info.status for c in children]
        metric = run.data.params.get("metric", "eval_accuracy")
        end = run.info.end_time
        rows.append(
            SweepRow(
                sweep=run.data.tags.get(TAGS.SWEEP, run.info.run_name),
                status=run.info.status,
                trials_ended=sum(s in ENDED for s in statuses),
                trials_running=statuses.count("RUNNING"),
                trials_planned=_planned(run.data.params),
                metric=metric,
                best=run.data.metrics.get(f"best_{metric}"),
                started_ms=run.info.start_time,
                duration_s=(end - run.info.start_time) / 1000
                if end and run.info.status != "RUNNING"
                else None,
                run_id=run.info.run_id,
                experiment_id=run.info.experiment_id,
            )
        )
    return rows
