"""Ctrl-C during a sweep, then the same command again: it resumes into the same MLflow runs.

Before the resume, every pickle Ray Tune left in the sweep's storage is replaced by a payload
that would create a file when unpickled, and Tune's experiment state by garbage: the resume
reads none of them (it rebuilds the sweep from the searcher's JSON state, MLflow and the
safetensors checkpoints), the payload never runs, and the interrupted trial still continues
from its last epoch checkpoint.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep

EPOCHS = 12


def test_interrupt_then_resume(tmp_path):
    write_csv(tmp_path / "train.csv", review_rows(400, seed=10))
    write_csv(tmp_path / "dev.csv", review_rows(32, seed=11))
    # Enough epochs that Ctrl-C after the first one lands mid-run (a tiny model's epoch takes
    # a fraction of a second, and a run's end reaches Tune within a poll of 0.25 s)
    path = write_sweep(
        tmp_path,
        sweep_dict(
            name="resume", search__num_trials=2, search__scheduler={"type": "fifo"}, train__epochs=EPOCHS
        ),
    )
    workdir = tmp_path / "work"
    exe = str(Path(sys.executable).with_name("orchestrator"))
    log = tmp_path / "first.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [exe, "run", str(path), "--workdir", str(workdir)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.time() + 300
    while f"epoch 1/{EPOCHS}" not in log.read_text():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "no epoch reported"
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
    assert proc.wait(timeout=180) == 130, log.read_text()[-3000:]

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("resume").experiment_id
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp])}
    assert "RUNNING" not in statuses.values() and statuses["resume"] == "KILLED"

    marker = tmp_path / "payload-ran"
    planted = _plant(workdir / "runs" / "resume", marker)
    assert any(p.name == "tuner.pkl" for p in planted) and any("search" in p.name for p in planted)

    again = cli("run", str(path), "--workdir", str(workdir))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout
    assert not marker.exists()  # no pickle from the storage was loaded
    runs = client.search_runs([exp])
    parents = [r for r in runs if r.data.tags["orchestrator.role"] == "sweep"]
    children = [r for r in runs if r.data.tags["orchestrator.role"] == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in runs), [
        (
            r.info.run_name,
            r.info.status,
            r.data.tags.get("orchestrator.outcome"),
            r.data.tags.get("orchestrator.error"),
        )
        for r in runs
    ]
    assert not list(workdir.rglob("resume.pt"))  # both trials ended: their optimizer state is gone
    for child in children:  # every epoch recorded at most once, the last one present
        steps = [int(m.step) for m in client.get_metric_history(child.info.run_id, "epoch")]
        assert len(steps) == len(set(steps)) and max(steps) == EPOCHS
    resumed = [
        m.value for c in children for m in client.get_metric_history(c.info.run_id, "resumed_from_epoch")
    ]
    assert max(resumed) >= 1  # the trial that had reported epoch 1 went on from that checkpoint


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(experiment: Path, marker: Path) -> list[Path]:
    """A code-running pickle in tuner.pkl and in every other pickle Tune wrote; garbage in its JSON state."""
    payload = pickle.dumps(_Payload(marker))
    pickles = sorted(experiment.rglob("*.pkl"))  # what Tune wrote: tuner.pkl and its search state
    for p in pickles:
        p.write_bytes(payload)
    for p in experiment.glob("experiment_state*.json"):
        p.write_text('{"trial_data": "not what Tune wrote"')
    return pickles
