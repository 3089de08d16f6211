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
import uuid
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Head:
    url: str  # dashboard / Jobs API
    gcs: str  # host:port for ray.init(address=...)
    token_env: dict[str, str]  # what an authorised client sets


@pytest.fixture(scope="module")
def ray_head():
    """A head started the way cluster.yaml starts one: RAY_AUTH_MODE=token and one generated token."""
    import time

    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard, gcs = free_port(), free_port()
    venv_bin = str(Path(sys.executable).parent)
    token_path = Path(temp) / "auth_token"
    token_path.write_text(uuid.uuid4().hex)
    token_path.chmod(0o600)
    token_env = {"RAY_AUTH_TOKEN_PATH": str(token_path)}
    proc = subprocess.Popen(
        [
            f"{venv_bin}/ray",
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            '--resources={"trial_driver": 100}',
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env={
            **os.environ,
            **token_env,
            "RAY_AUTH_MODE": "token",
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        },
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
        yield Head(url, f"127.0.0.1:{gcs}", token_env)
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _status(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_cluster_refuses_clients_without_its_token(ray_head):
    """Jobs API and ray.init(address=...) without the token, or with a wrong one: refused."""
    jobs = f"{ray_head.url}/api/jobs/"
    token = Path(ray_head.token_env["RAY_AUTH_TOKEN_PATH"]).read_text()
    assert _status(jobs, None) == 401
    assert _status(jobs, "not-the-token") == 403
    assert _status(jobs, token) == 200
    connect = f"import ray; ray.init(address={ray_head.gcs!r}); print('CONNECTED')"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    for extra in (
        {"RAY_AUTH_MODE": "disabled"},
        {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"},
    ):
        try:
            proc = subprocess.run(
                [sys.executable, "-c", connect],
                env={**bare, **extra},
                capture_output=True,
                text=True,
                timeout=90,
            )
            refused = proc.returncode != 0 and "CONNECTED" not in proc.stdout
        except subprocess.TimeoutExpired:
            refused = True  # never got in
        assert refused, (extra, proc.stdout[-500:], proc.stderr[-1500:])
    ok = subprocess.run(
        [sys.executable, "-c", connect + "; ray.shutdown()"],
        env={**bare, **ray_head.token_env, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "CONNECTED" in ok.stdout, ok.stderr[-2000:]


def test_wrong_or_missing_token_is_one_line(ray_head, tmp_path):
    bare = {k: "" for k in os.environ if k.startswith("RAY_AUTH")}
    wrong = cli(
        "jobs",
        "list",
        "--address",
        ray_head.url,
        env={**bare, "RAY_AUTH_TOKEN": "not-the-token"},
        timeout=120,
    )
    assert wrong.returncode == 2 and "the cluster refused the token from RAY_AUTH_TOKEN" in wrong.stderr, (
        wrong.stderr
    )
    assert len(wrong.stderr.strip().splitlines()) == 1 and "not-the-token" not in wrong.stderr
    missing = cli("jobs", "list", "--address", ray_head.url, env={**bare, "HOME": str(tmp_path)}, timeout=120)
    assert missing.returncode == 2 and "requires a token" in missing.stderr, missing.stderr


def test_submit_runs_the_sweep_as_a_ray_job(ray_head, mlflow_server, tmp_path):
    write_csv(tmp_path / "train.csv", review_rows(32, seed=6))
    write_csv(tmp_path / "dev.csv", review_rows(12, seed=7))
    path = write_sweep(tmp_path, sweep_dict(name="submitted", search__scheduler={"type": "fifo"}))
    proc = cli(
        "submit",
        str(path),
        "--address",
        ray_head.url,
        "--set",
        f"tracking.uri={mlflow_server}",
        "--set",
        "search.num_trials=2",
        "--set",
        "train.epochs=1",
        "--remote-workdir",
        str(tmp_path / "remote"),
        "--follow",
        env=ray_head.token_env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "submitted" in proc.stdout and "SUCCEEDED" in proc.stdout

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("submitted").experiment_id])
    assert sorted(r.data.tags["orchestrator.role"] for r in runs) == ["sweep", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)

    job_id = proc.stdout.split("submitted", 1)[1].split()[0]
    listed = cli("jobs", "list", "--address", ray_head.url, timeout=120, env=ray_head.token_env)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    status = cli("jobs", "status", job_id, "--address", ray_head.url, timeout=120, env=ray_head.token_env)
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
