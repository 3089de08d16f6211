"""Real submission: a local Ray head (dashboard on 127.0.0.1, token auth on) + a real MLflow server.

`orchestrator submit` sends a tiny sweep as a Ray Job; it must reach SUCCEEDED and its runs
must be in that tracking server. The head is started with `ray start --block` in its own
process group and stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli, free_port, review_rows, stop_group, sweep_dict, write_csv, write_sweep


def _dashboard_up(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/api/version", timeout=2)
        return True
    except urllib.error.HTTPError:
        return True  # 401 without a token: it is up
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head():
    import time

    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard = free_port()
    venv_bin = str(Path(sys.executable).parent)
    proc = subprocess.Popen(
        [
            f"{venv_bin}/ray",
            "start",
            "--head",
            "--block",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            '--resources={"trial_driver": 100}',
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env={**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while not _dashboard_up(url):
            assert proc.poll() is None, "ray start exited"
            assert time.time() < deadline, "Ray head did not come up"
            time.sleep(1)
        yield url
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_runs_the_sweep_as_a_ray_job(ray_head, mlflow_server, tmp_path):
    write_csv(tmp_path / "train.csv", review_rows(32, seed=6))
    write_csv(tmp_path / "dev.csv", review_rows(12, seed=7))
    path = write_sweep(tmp_path, sweep_dict(name="submitted", search__scheduler={"type": "fifo"}))
    proc = cli(
        "submit",
        str(path),
        "--address",
        ray_head,
        "--set",
        f"tracking.uri={mlflow_server}",
        "--set",
        "search.num_trials=2",
        "--set",
        "train.epochs=1",
        "--remote-workdir",
        str(tmp_path / "remote"),
        "--follow",
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "submitted" in proc.stdout and "SUCCEEDED" in proc.stdout

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("submitted").experiment_id])
    assert sorted(r.data.tags["orchestrator.role"] for r in runs) == ["sweep", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)

    job_id = proc.stdout.split("submitted", 1)[1].split()[0]
    listed = cli("jobs", "list", "--address", ray_head, timeout=120)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    status = cli("jobs", "status", job_id, "--address", ray_head, timeout=120)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout


def test_unreachable_cluster_is_bad_input(tmp_path):
    write_csv(tmp_path / "train.csv", review_rows(16))
    write_csv(tmp_path / "dev.csv", review_rows(8))
    path = write_sweep(tmp_path, sweep_dict())
    proc = cli("submit", str(path), "--address", f"http://127.0.0.1:{free_port()}", timeout=120)
    assert (
        proc.returncode == 2
        and "cannot reach the Ray dashboard" in proc.stderr
        and "Traceback" not in proc.stderr
    )
