"""The same user path against an MLflow tracking server (a real `mlflow server` on 127.0.0.1).

A one-trial sweep records into the server; `best`, `promote` and `predict` then work from the
server URI alone (artifacts proxied by the server, registry in its backend store).
"""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep
from tests.test_promote import TEXTS


def test_sweep_best_promote_predict_via_server(mlflow_server, tmp_path):
    server = mlflow_server
    write_csv(tmp_path / "train.csv", review_rows(32, seed=4))
    write_csv(tmp_path / "dev.csv", review_rows(12, seed=5))
    spec = sweep_dict(name="srv", search__scheduler={"type": "fifo"})
    path = write_sweep(tmp_path, spec)
    run = cli(
        "run",
        str(path),
        "--workdir",
        str(tmp_path / "work"),
        "--set",
        f"tracking.uri={server}",
        "--set",
        "search.num_trials=1",
        "--set",
        "train.epochs=1",
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert not (tmp_path / "work" / "mlflow.db").exists()  # everything went to the server

    client = MlflowClient(server, registry_uri=server)
    runs = client.search_runs([client.get_experiment_by_name("srv").experiment_id])
    roles = sorted(r.data.tags["orchestrator.role"] for r in runs)
    assert roles == ["sweep", "trial"] and all(r.info.status == "FINISHED" for r in runs)
    parent = next(r for r in runs if r.data.tags["orchestrator.role"] == "sweep")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"spec", "leaderboard.csv"}

    best = cli("best", "--tracking-uri", server, "--sweep", "srv", "--json", timeout=120)
    assert best.returncode == 0, best.stderr
    promoted = cli(
        "promote", "--tracking-uri", server, "--sweep", "srv", "--name", "srv-clf", "--json", timeout=300
    )
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert json.loads(promoted.stdout)["checkpoint"] == json.loads(best.stdout)["checkpoint"]
    assert str(client.get_model_version_by_alias("srv-clf", "champion").version) == "1"

    pred = cli("predict", "--tracking-uri", server, "--model", "models:/srv-clf@champion", "--json", *TEXTS)
    assert pred.returncode == 0, pred.stderr[-2000:]
    assert [json.loads(line)["text"] for line in pred.stdout.splitlines()] == TEXTS
