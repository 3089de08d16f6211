"""Where the MLflow UI opens a sweep: the trial runs, sorted by the metric, its knobs as columns.

MLflow 3.17's UI picks its landing page from a ``workflowType`` (URL, then the browser's
storage, default ``genai``: the GenAI overview), not from the experiment's kind, and the runs
table's columns are no URL parameter: they come from a *shared view*, an experiment tag
``mlflow.sharedViewState.<key>`` named by ``viewStateShareKey=<key>`` in the URL (verified in
headless Chromium, see ``MLFLOW_OPTUNA_NOTES.md``). So every sweep experiment gets:

* ``mlflow.experimentKind = custom_model_development`` (model training; newer UIs read it);
* the shared view :data:`VIEW_KEY`: trial runs only (flat rows, no collapsed parent), sorted by
  each trial's best value of the metric (``best_<metric>``, logged per epoch by the recorder:
  the table shows a metric's latest value), with the metric, the loss and every searched knob
  (plus ``seed`` and ``config_id`` with repeats) as columns;

and :func:`runs_url` is the link ``orchestrator ui`` prints.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.tracking import TAGS
from search_spaces import objectives as M

__all__ = ["EXPERIMENT_KIND", "VIEW_KEY", "artifact_url", "mark_experiment", "runs_url", "view_state"]

EXPERIMENT_KIND = "custom_model_development"
VIEW_KEY = "sweep"


def view_state(metric: str, mode: str, searched: list[str], *, repeats: bool) -> dict[str, Any]:
    """The shared view's JSON: trial runs sorted by their best ``metric``, with the knobs shown."""
    params = [*searched, *(["seed"] if repeats and "seed" not in searched else [])]
    columns = [f"metrics.`best_{metric}`", f"metrics.`{metric}`", f"metrics.`{M.EVAL_LOSS}`"]
    columns += [f"params.`{p}`" for p in params]
    if repeats:
        columns.append(f"tags.`{TAGS.CONFIG_ID}`")
    return {
        "searchFilter": f"tags.`{TAGS.ROLE}` = 'trial'",
        "orderByKey": f"metrics.`best_{metric}`",
        "orderByAsc": mode == "min",
        "selectedColumns": list(dict.fromkeys(columns)),
    }


def mark_experiment(client: Any, experiment_id: str, state: dict[str, Any]) -> None:
    """Tag the experiment as model training and (re)write its shared runs view."""
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND)
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(state))


def runs_url(base: str, experiment_id: str) -> str:
    """The UI link that lands on the sweep's trial runs (Model training mode, the shared view)."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    )


def artifact_url(base: str, experiment_id: str, run_id: str, path: str) -> str:
    """The UI link to one artifact of a run (e.g. the parent's ``charts/search.html``), in Model training mode."""
    return (
        f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
        "?workflowType=machine_learning"
    )
