"""`orchestrator report`: one self-contained HTML page per sweep, from what MLflow recorded."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from orchestrator.report import REPORT_ARTIFACT, report_html, sweep_space
from orchestrator.selection import Candidate
from search_spaces.domains import Choice, IntRange, LogUniform
from tests.conftest import cli


def _sweep_run(**params):
    return SimpleNamespace(
        data=SimpleNamespace(
            params={"metric": "eval_accuracy", "mode": "max", "model": "m", "planned_trials": "2", **params},
            tags={"orchestrator.sweep": "s<b>", "majority_rate": "0.5"},
        ),
        info=SimpleNamespace(
            experiment_id="7", run_name="s", status="FINISHED", start_time=0, end_time=60_000
        ),
    )


def test_space_is_read_back_from_the_parent_params():
    logged = {
        "space.learning_rate": json.dumps({"type": "loguniform", "low": 1e-4, "high": 1e-2}),
        "space.lora_r": json.dumps([{"type": "choice", "values": [4, 8], "when": {"strategy": "lora"}}]),
        "space.freeze_layers": json.dumps({"type": "int", "low": 0, "high": 6}),
        "metric": "eval_accuracy",
    }
    space = sweep_space(logged)
    assert space["learning_rate"] == [LogUniform(type="loguniform", low=1e-4, high=1e-2)]
    assert space["lora_r"] == [Choice(type="choice", values=[4, 8], when={"strategy": "lora"})]
    assert space["freeze_layers"] == [IntRange(type="int", low=0, high=6)] and len(space) == 3


def test_page_escapes_recorded_text_and_picks_the_best_checkpoint():
    evil = "<script>alert(1)</script>"
    ranked = [  # t1's best epoch has no checkpoint left: the card shows what `best` would pick
        Candidate("t1", "r1", "FINISHED", "completed", 1, {"eval_accuracy": 0.9}, {"template": evil}, None),
        Candidate(
            "t2", "r2", "FINISHED", "completed", 2, {"eval_accuracy": 0.8}, {"template": evil}, "/ck/t2"
        ),
        Candidate(
            "t1", "r1", "FINISHED", "completed", 2, {"eval_accuracy": 0.7}, {"template": evil}, "/ck/t1"
        ),
    ]
    page = report_html(_sweep_run(), ranked, {}, "http://ui:5000", {})
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Sweep s&lt;b&gt;" in page
    card = page[page.index("id='best'") : page.index("<h2>Leaderboard")]
    assert "/runs/r2'>t2</a> (epoch 2)" in card and "/ck/t2" in card
    assert "http://ui:5000/#/experiments/7/runs/r1'>t1</a>" in page  # leaderboard rows link their runs
    assert page.count("<tr class=best>") == 1


def test_report_command_writes_one_self_contained_page(sweep, tmp_path):
    _, workdir, run = sweep
    out = tmp_path / "r" / "e2e.html"
    proc = cli("report", "--workdir", str(workdir), "--sweep", "e2e", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"report {out} (" in proc.stdout and "report.html" in proc.stdout
    page = out.read_text()
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags["orchestrator.role"] == "trial"]
    for t in trials:
        assert f"/runs/{t.info.run_id}'>{t.data.tags['orchestrator.trial_id']}</a>" in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js is inlined: opens offline
    assert page.count("Plotly.newPlot") >= 3  # learning curves + the search's charts
    assert "Learning curves" in page and "Optimization History" in page
    parent = next(r for r in runs if r.data.tags["orchestrator.role"] == "sweep")
    logged = Path(client.download_artifacts(parent.info.run_id, REPORT_ARTIFACT, str(tmp_path)))
    assert logged.read_text() == page  # also on the parent run
    assert "report report.html on the parent run" in run.stdout  # written when the sweep finished


def test_report_of_an_unknown_sweep_is_one_line(sweep):
    _, workdir, _ = sweep
    proc = cli("report", "--workdir", str(workdir), "--sweep", "nope")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
