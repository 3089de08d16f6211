"""The same user path against an MLflow tracking server (a real `mlflow server` on 127.0.0.1).

A one-trial sweep records into the server; `best`, `promote` and `predict` then work from the
server URI alone (artifacts proxied by the server, registry in its backend store).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep
from tests.test_promote import TEXTS, _free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None, "mlflow server exited"
                assert time.time() < deadline, "mlflow server did not come up"
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_sweep_best_promote_predict_via_server(server, tmp_path):
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
