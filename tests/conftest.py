"""Shared fixtures: small generated data, sweep files, and the entry point as a user runs it."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def review_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    from orchestrator.demo_data import generate

    return generate(n, seed)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    write_csv(tmp_path / "train.csv", review_rows(48, seed=1))
    write_csv(tmp_path / "dev.csv", review_rows(16, seed=2))
    return tmp_path


def sweep_dict(**overrides) -> dict:
    spec = {
        "name": "t",
        "model": "builtin:tiny-random-bert",
        "data": {"train": "train.csv", "validation": "dev.csv", "max_length": 48},
        "templates": {"task": "Review: {text}", "shot": {"instruction": "Sentiment?", "shots": 1}},
        "search": {
            "num_trials": 3,
            "space": {
                "learning_rate": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3},
                "freeze_layers": {"type": "int", "low": 0, "high": "auto"},
                "context_template": {"type": "choice", "values": ["plain", "task", "shot"]},
            },
        },
        "train": {"epochs": 2, "batch_size": 16},
    }
    for dotted, value in overrides.items():
        node = spec
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return spec


def write_sweep(directory: Path, spec: dict, name: str = "sweep.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console entry point (a fresh process, as a user would)."""
    exe = Path(sys.executable).with_name("orchestrator")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


PLANTED_SECRET = "planted-s3cr3t-7f3a9c"


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """One real sweep for the session: tiny BERT, 3 trials x 2 DDP workers, 3 epochs, ASHA.

    Returns (sweep file, work directory, the finished `orchestrator run` process).
    """
    root = tmp_path_factory.mktemp("e2e")
    write_csv(root / "train.csv", review_rows(48, seed=1))
    write_csv(root / "dev.csv", review_rows(16, seed=2))
    write_csv(root / "test.csv", review_rows(12, seed=3))
    spec = sweep_dict(
        name="e2e",
        resources={"workers_per_trial": 2, "cpus_per_worker": 0.5},
        search__scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    spec["data"]["test"] = "test.csv"
    spec["train"]["epochs"] = 3
    path = write_sweep(root, spec)
    workdir = root / "work"
    # Credentials live in the environment, where MLflow and the object stores read them; none of
    # them may reach an output, artifact, tag or file of the sweep (tests/test_security.py).
    secrets = {k: PLANTED_SECRET for k in ("MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN")}
    proc = cli("run", str(path), "--workdir", str(workdir), env=secrets)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return path, workdir, proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            assert proc.poll() is None, f"{what} exited"
            assert time.time() < deadline, f"{what} did not come up"
            time.sleep(1)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and everything it spawned."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (own process group, stopped by PID at the end)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
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
        wait_for_http(f"{url}/health", proc, "mlflow server", timeout=120)
        yield url
    finally:
        stop_group(proc)
