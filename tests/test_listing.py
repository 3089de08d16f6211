"""`orchestrator ls`: the sweeps of a work directory, from what MLflow recorded (a real SQLite store)."""

from __future__ import annotations

import json

from orchestrator.tracking import SweepRecorder, TrialRecorderCallback
from tests.conftest import cli
from tests.test_selection import TrialStandIn


def _sweep(workdir, name: str, trials: list[float], *, planned: int, close: str | None) -> None:
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    rec = SweepRecorder(uri, name, artifact_root=(workdir / "mlartifacts").as_uri())
    parent = rec.open_parent(
        sweep=name,
        experiment_path=str(workdir / "runs" / name),
        params={"metric": "eval_accuracy", "mode": "max", "planned_trials": planned},
        tags={},
    )
    cb = TrialRecorderCallback(uri, rec.experiment_id, parent, sweep=name, train_root=str(workdir / "runs"))
    for i, value in enumerate(trials):
        trial = TrialStandIn(f"{name}-{i}", config={"epochs": 1, "seed": i})
        cb.on_trial_start(0, [], trial)
        cb.on_trial_result(0, [], trial, {"epoch": 1, "eval_accuracy": value})
        trial.last_result = {"epoch": 1}
        cb.on_trial_complete(0, [], trial)
    running = TrialStandIn(f"{name}-running")
    cb.on_trial_start(0, [], running)
    promotion = {
        "mlflow.parentRunId": parent,
        "orchestrator.role": "promotion",
        "orchestrator.trial_id": f"{name}-0",
    }
    rec.client.set_terminated(
        rec.client.create_run(rec.experiment_id, tags=promotion).info.run_id
    )  # not a trial
    if close:
        rec.client.log_metric(parent, "best_eval_accuracy", max(trials))
        rec.close(close)


def test_ls_lists_every_sweep_with_status_trials_and_best(tmp_path):
    _sweep(tmp_path, "alpha", [0.7, 0.8], planned=3, close="FINISHED")
    _sweep(tmp_path, "beta", [0.6], planned=4, close=None)  # still running

    done = cli("ls", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "alpha" in text and "finished" in text and "3/3" in text and "eval_accuracy=0.8000" in text
    assert "beta" in text and "running" in text and "1/4 (1 running)" in text

    rows = [json.loads(line) for line in cli("ls", "--workdir", str(tmp_path), "--json").stdout.splitlines()]
    by_name = {r["sweep"]: r for r in rows}
    assert (
        by_name["alpha"]["trials_ended"] == 3 and by_name["alpha"]["best"] == 0.8
    )  # interrupted child counted
    assert by_name["alpha"]["duration_s"] is not None and by_name["beta"]["duration_s"] is None
    assert [r["sweep"] for r in rows] == ["beta", "alpha"]  # most recent first


def test_ls_on_a_directory_without_a_store_says_what_to_do(tmp_path):
    done = cli("ls", "--workdir", str(tmp_path))
    assert done.returncode == 2
    assert "no mlflow.db" in done.stderr and "run a sweep there first" in done.stderr
