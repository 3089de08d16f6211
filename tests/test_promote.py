"""Promotion of the session sweep's best checkpoint: registry, alias, export, predict, serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.selection import candidates, find_sweep_run
from tests.conftest import cli, free_port, stop_group, wait_for_http

TEXTS = [
    "The battery is excellent, but the screen is awful.",
    "Although the price is cheap, the motor is not slow.",
]


def _uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


def _promote(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("promote", "--workdir", str(workdir), "--sweep", "e2e", *args, timeout=300)


@pytest.fixture(scope="module")
def promoted(sweep, tmp_path_factory):
    _, workdir, _ = sweep
    export = tmp_path_factory.mktemp("export") / "e2e-clf"
    proc = _promote(workdir, "--name", "e2e-clf", "--export", str(export), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, export, json.loads(proc.stdout)


def test_promotes_the_best_checkpoint_with_faithful_metrics(promoted):
    workdir, export, result = promoted
    best = json.loads(cli("best", "--workdir", str(workdir), "--sweep", "e2e", "--json", timeout=120).stdout)
    assert (result["trial_id"], result["epoch"], result["checkpoint"]) == (
        best["trial_id"],
        best["epoch"],
        best["checkpoint"],
    )
    assert result["version"] == "1" and not result["reused"]
    assert result["model_uri"] == "models:/e2e-clf@champion"
    # re-evaluating the exported weights reproduces the logged validation metric exactly
    assert result["validation"]["eval_accuracy"] == best["value"]
    assert result["reproduced"] == (
        f"re-evaluated on cpu fp32: eval_accuracy={best['value']:.6f} reproduces the logged "
        f"{best['value']:.6f} exactly"
    )
    assert set(result["test"]) == {"test_accuracy", "test_f1_macro", "test_loss"}

    client = MlflowClient(_uri(workdir), registry_uri=_uri(workdir))
    version = client.get_model_version_by_alias("e2e-clf", "champion")
    assert str(version.version) == "1"
    assert version.tags["trial_run_id"] == best["mlflow_run_id"]
    assert version.tags["sweep_run_id"] == best["sweep_run_id"]
    assert float(version.tags["test.test_accuracy"]) == pytest.approx(
        result["test"]["test_accuracy"], abs=1e-6
    )
    trial_run = client.get_run(best["mlflow_run_id"])
    assert "test_accuracy" in trial_run.data.metrics  # the held-out score is on the trial's run too


def test_export_is_self_contained(promoted):
    _, export, result = promoted
    files = {p.name for p in export.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "trial.json", "README.md"} <= files
    assert "resume.pt" not in files  # no optimizer state, nothing pickled
    info = json.loads((export / "trial.json").read_text())
    assert info["label_names"] == ["negative", "positive"]
    assert info["evaluated_on"]["device"] == "cpu" and info["evaluated_on"]["precision"] == "fp32"
    assert ("demonstrations.parquet" in files) == bool(info["template"]["shots"])
    card = (export / "README.md").read_text()
    for needle in (
        "sweep `e2e`",
        result["trial_id"],
        "test_accuracy",
        "learning_rate",
        "sha256",
        "torch",
        result["reproduced"],
    ):
        assert needle in card or needle in card.replace("`", ""), needle


def test_predict_from_registry_equals_predict_from_export(promoted):
    workdir, export, _ = promoted
    from_registry = cli(
        "predict", "--workdir", str(workdir), "--model", "models:/e2e-clf@champion", "--json", *TEXTS
    )
    from_export = cli("predict", "--model", str(export), "--json", *TEXTS, timeout=120)
    assert from_registry.returncode == 0 and from_export.returncode == 0, (
        from_registry.stderr + from_export.stderr
    )
    a = [json.loads(line) for line in from_registry.stdout.splitlines()]
    b = [json.loads(line) for line in from_export.stdout.splitlines()]
    assert [r["label"] for r in a] == [r["label"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-6)
    assert all(r["label"] in {"negative", "positive"} for r in a)
    assert all(r["score_negative"] + r["score_positive"] == pytest.approx(1.0) for r in a)


def test_promote_is_idempotent_and_alias_moves(promoted):
    workdir, _, first = promoted
    again = json.loads(_promote(workdir, "--name", "e2e-clf", "--json").stdout)
    assert again["version"] == "1" and again["reused"]

    client = MlflowClient(_uri(workdir), registry_uri=_uri(workdir))
    ranked = candidates(client, find_sweep_run(client, "e2e"))
    other = next(c for c in ranked if c.checkpoint and c.trial_id != first["trial_id"])
    moved = json.loads(_promote(workdir, "--name", "e2e-clf", "--trial", other.trial_id, "--json").stdout)
    assert moved["version"] == "2" and moved["trial_id"] == other.trial_id
    assert str(client.get_model_version_by_alias("e2e-clf", "champion").version) == "2"
    back = json.loads(_promote(workdir, "--name", "e2e-clf", "--json").stdout)
    assert back["version"] == "1" and back["reused"]
    assert str(client.get_model_version_by_alias("e2e-clf", "champion").version) == "1"
    assert len(client.search_model_versions("name = 'e2e-clf'")) == 2


BAD = [
    (["--sweep", "nope"], "no sweep named 'nope'"),
    (["--trial", "nope"], "--trial nope: no such trial"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2(promoted, args, message):
    workdir, _, _ = promoted
    base = ["promote", "--workdir", str(workdir), "--name", "e2e-bad"]
    if "--sweep" not in args:
        base += ["--sweep", "e2e"]
    proc = cli(*base, *args, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert (
        MlflowClient(_uri(workdir), registry_uri=_uri(workdir)).search_model_versions("name = 'e2e-bad'")
        == []
    )


def test_name_owned_by_another_sweep_is_refused(promoted):
    workdir, _, _ = promoted
    client = MlflowClient(_uri(workdir), registry_uri=_uri(workdir))
    client.create_registered_model("someone-elses", tags={"orchestrator.sweep": "other-sweep"})
    proc = _promote(workdir, "--name", "someone-elses")
    assert proc.returncode == 2 and "holds sweep 'other-sweep'" in proc.stderr
    assert client.search_model_versions("name = 'someone-elses'") == []


def test_corrupt_checkpoint_is_refused_and_nothing_registered(promoted):
    workdir, _, first = promoted
    client = MlflowClient(_uri(workdir), registry_uri=_uri(workdir))
    ranked = candidates(client, find_sweep_run(client, "e2e"))
    victim = next(c for c in ranked if c.checkpoint and c.trial_id != first["trial_id"])
    weights = Path(victim.checkpoint, "model.safetensors")
    original = weights.read_bytes()
    try:
        weights.write_bytes(b"not a safetensors file")
        proc = _promote(workdir, "--name", "e2e-corrupt", "--trial", victim.trial_id)
    finally:
        weights.write_bytes(original)
    assert proc.returncode == 2 and "corrupt checkpoint" in proc.stderr, proc.stderr[-2000:]
    assert client.search_model_versions("name = 'e2e-corrupt'") == []


def test_mlflow_models_serve_answers_http(promoted):
    workdir, export, _ = promoted
    port = free_port()
    mlflow_exe = str(Path(sys.executable).with_name("mlflow"))
    server = subprocess.Popen(
        [
            mlflow_exe,
            "models",
            "serve",
            "-m",
            "models:/e2e-clf@champion",
            "--env-manager",
            "local",
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
        ],
        # mlflow execs `uvicorn` by name: the venv's bin must be on PATH, as in an activated venv
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": _uri(workdir),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: we stop exactly what we started
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, "mlflow models serve")
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            served = json.loads(r.read())["predictions"]
    finally:
        stop_group(server)
    local = [
        json.loads(line)
        for line in cli("predict", "--model", str(export), "--json", *TEXTS).stdout.splitlines()
    ]
    assert [p["label"] for p in served] == [p["label"] for p in local]
    assert [p["score"] for p in served] == pytest.approx([p["score"] for p in local], abs=1e-6)
