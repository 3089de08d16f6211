"""The MLflow UI in a real browser (headless Chromium via Playwright) on the session's finished sweep.

A first-time visitor follows the link `orchestrator ui` prints: the runs table (not MLflow 3's
GenAI overview) lists every trial with its metric value visible without a click, and the parent
run's chart artifacts render as images. Skipped, with the reason, only where no Chromium or
Playwright is installed (`make test` installs Chromium from Debian's packages when it runs as root).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.browse import artifact_url
from tests.browser_pages import look, serving, why_no_browser

pytestmark = pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser()))


def _shown_value(row: str, value: float) -> bool:
    """Whether the row shows ``value`` as MLflow renders it (rounded, or cut with an ellipsis)."""
    for cell in row.replace("…", "").split(" | "):
        try:
            if abs(float(cell) - value) < 5e-3:
                return True
        except ValueError:
            continue
    return False


def test_a_new_visitor_lands_on_the_trials_and_sees_the_charts(sweep, tmp_path):
    _, workdir, proc_run = sweep
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags["orchestrator.role"] == "sweep")
    trials = {
        r.data.tags["orchestrator.trial_id"]: r.data.metrics["best_eval_accuracy"]
        for r in runs
        if r.data.tags["orchestrator.role"] == "trial"
    }
    printed = tmp_path / "ui.log"
    with serving(workdir, printed) as base:
        charts = {
            path: artifact_url(base, exp.experiment_id, parent.info.run_id, path)
            for path in ("charts/optimization_history.png", "charts/slice.png")
        }
        lines = printed.read_text().splitlines()
        runs_link = next(line.split(": ", 1)[1] for line in lines if line.strip().startswith("e2e:"))
        seen = look(runs_link, charts, list(trials), tmp_path / "screenshots")
    assert not seen.genai_overview
    for trial_id, best in trials.items():
        assert _shown_value(seen.rows[trial_id], best), (trial_id, best, seen.rows[trial_id])
    assert all(width > 300 for width in seen.chart_sizes.values()), seen.chart_sizes
    assert all(shot.stat().st_size > 20_000 for shot in seen.screenshots)
    keep = os.environ.get("ORCHESTRATOR_SCREENSHOTS")  # e.g. to look at them after the run
    if keep:
        for shot in seen.screenshots:
            shutil.copy(shot, Path(keep) / shot.name)
