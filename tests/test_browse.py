"""The MLflow UI lands on a sweep's trials: experiment tags, best_<metric> per trial, `ui` links.

On the session's real sweep (tests/conftest.py `sweep`) and a real `orchestrator ui` server.
What a browser then shows for this view was checked in headless Chromium (MLFLOW_OPTUNA_NOTES.md);
the browser test itself is issue 10's next step.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.browse import EXPERIMENT_KIND, VIEW_KEY, runs_url, view_state
from tests.conftest import free_port, stop_group, wait_for_http


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def test_view_state_sorts_trials_by_their_best_value_and_shows_the_knobs():
    state = view_state("eval_loss", "min", ["learning_rate", "freeze_layers"], repeats=True)
    assert state["searchFilter"] == "tags.`orchestrator.role` = 'trial'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best_eval_loss`", True)
    assert state["selectedColumns"][:2] == ["metrics.`best_eval_loss`", "metrics.`eval_loss`"]
    assert (
        "params.`freeze_layers`" in state["selectedColumns"] and "params.`seed`" in state["selectedColumns"]
    )
    assert "tags.`config_id`" in state["selectedColumns"]
    assert (
        "params.`seed`"
        not in view_state("eval_accuracy", "max", ["learning_rate"], repeats=False)["selectedColumns"]
    )


def test_sweep_experiment_is_marked_and_trials_carry_their_best(sweep):
    _, workdir, _ = sweep
    client = _client(workdir)
    exp = client.get_experiment_by_name("e2e")
    assert exp.tags["mlflow.experimentKind"] == EXPERIMENT_KIND
    state = json.loads(exp.tags[f"mlflow.sharedViewState.{VIEW_KEY}"])
    assert state["orderByKey"] == "metrics.`best_eval_accuracy`"
    assert {"params.`learning_rate`", "params.`freeze_layers`", "params.`context_template`"} <= set(
        state["selectedColumns"]
    )
    trials = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags["orchestrator.role"] == "trial"
    ]
    for run in trials:
        values = [
            m.value
            for m in sorted(client.get_metric_history(run.info.run_id, "eval_accuracy"), key=lambda m: m.step)
        ]
        best = [
            m.value
            for m in sorted(
                client.get_metric_history(run.info.run_id, "best_eval_accuracy"), key=lambda m: m.step
            )
        ]
        assert best == [max(values[: i + 1]) for i in range(len(values))]


def test_ui_prints_a_link_to_each_sweeps_trials(sweep):
    _, workdir, _ = sweep
    port = free_port()
    exe = Path(sys.executable).with_name("orchestrator")
    proc = subprocess.Popen(
        [str(exe), "ui", "--workdir", str(workdir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", proc, "orchestrator ui")
        exp = _client(workdir).get_experiment_by_name("e2e")
        with urllib.request.urlopen(
            f"{base}/api/2.0/mlflow/experiments/get?experiment_id={exp.experiment_id}"
        ) as r:
            served = {t["key"]: t["value"] for t in json.load(r)["experiment"]["tags"]}
        assert served["mlflow.experimentKind"] == EXPERIMENT_KIND  # what the UI reads, through the server
    finally:
        stop_group(proc)
    printed = proc.stdout.read()
    assert f"e2e: {runs_url(base, exp.experiment_id)}" in printed, printed
    assert "workflowType=machine_learning&viewStateShareKey=sweep" in printed


def test_charts_are_drawn_from_recorded_trials(tmp_path):
    import random

    from orchestrator.charts import CHARTS, search_charts, study_from_board
    from orchestrator.selection import Candidate
    from search_spaces.domains import Choice, IntRange, LogUniform

    space = {
        "learning_rate": [LogUniform(type="loguniform", low=1e-4, high=1e-2)],
        "freeze_layers": [IntRange(type="int", low=0, high=6)],
        "strategy": [Choice(type="choice", values=["full", "lora"])],
        "lora_r": [Choice(type="choice", values=[4, 8], when={"strategy": "lora"})],
    }
    rng = random.Random(0)
    board = []
    for i in range(6):
        strategy = ["full", "lora"][i % 2]
        params = {
            "learning_rate": str(10 ** rng.uniform(-4, -2)),
            "freeze_layers": str(i),
            "strategy": strategy,
        }
        if strategy == "lora":
            params["lora_r"] = "8"
        metrics = {"eval_accuracy": 0.5 + i / 20}
        board.append(Candidate(f"t{i}", "r", "FINISHED", "completed", 1, metrics, params, None))
    board.append(Candidate("failed", "r", "FAILED", "failed", 0, {}, {"strategy": "full"}, None))
    study = study_from_board(board, space, "eval_accuracy", "max")
    assert len(study.trials) == 6  # the failed trial reported nothing
    assert study.trials[1].params == {
        "learning_rate": study.trials[1].params["learning_rate"],
        "freeze_layers": 1,
        "strategy": "lora",
        "lora_r": 8,
    }
    drawn = search_charts(study, tmp_path, "t: eval_accuracy")
    assert drawn == list(CHARTS)
    assert all((tmp_path / f"{name}.png").stat().st_size > 10_000 for name in drawn)
    html = (tmp_path / "search.html").read_text()
    assert html.count("plotly.js") >= 1 and html.count("<div") >= 4


def test_parent_run_holds_charts_and_a_leaderboard_table(sweep, tmp_path):
    _, workdir, _ = sweep
    client = _client(workdir)
    exp = client.get_experiment_by_name("e2e")
    parent = next(
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags["orchestrator.role"] == "sweep"
    )
    charts = {a.path for a in client.list_artifacts(parent.info.run_id, "charts")}
    assert "charts/search.html" in charts and "charts/optimization_history.png" in charts
    assert {"path": "leaderboard.json", "type": "table"} in json.loads(
        parent.data.tags["mlflow.loggedArtifacts"]
    )
    local = client.download_artifacts(parent.info.run_id, "leaderboard.json", str(tmp_path))
    table = json.loads(Path(local).read_text())
    assert len(table["data"]) == 3 and "config_id" in table["columns"]  # 3 trials, once each
