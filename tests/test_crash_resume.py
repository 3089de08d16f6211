"""`kill -9` of the sweep's driver at three moments, the same command after each: one clean sweep.

One work directory, four `orchestrator run` of the same sweep (2 trials one at a time, 4 epochs):
killed (SIGKILL, no cleanup of any kind) before any epoch is reported, then once the first trial
has finished, then during the second trial (after its first epoch); the fourth run finishes it. The record
must then be what one uninterrupted run leaves: exactly 2 trial runs, none RUNNING, every epoch
recorded once, and the best checkpoint loads and predicts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep

EXE = str(Path(sys.executable).with_name("orchestrator"))
# A tiny model's epoch takes a fraction of a second and a run's end reaches Tune within a poll of
# 0.25 s: epochs enough that a kill after the first report of the second trial lands mid-run
EPOCHS = 4


def _run_until(path: Path, workdir: Path, log: Path, needle: str, count: int = 1) -> None:
    """Start `run`, SIGKILL its driver once ``needle`` was printed ``count`` times, reap what is left."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [EXE, "run", str(path), "--workdir", str(workdir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + 400
    while log.read_text().count(needle) < count:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"never printed {needle!r}: {log.read_text()[-2000:]}"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _reap(proc.pid)


def _reap(session: int, grace: float = 30.0) -> None:
    """Ray's own processes notice their driver died and exit; whatever has not after ``grace`` is killed."""
    deadline = time.time() + grace
    while time.time() < deadline:
        left = subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True).stdout.split()
        if not left:
            return
        time.sleep(1)
    os.killpg(session, signal.SIGKILL)
    time.sleep(2)


def test_kill_9_at_three_moments_then_resume(tmp_path):
    write_csv(tmp_path / "train.csv", review_rows(320, seed=20))
    write_csv(tmp_path / "dev.csv", review_rows(32, seed=21))
    spec = sweep_dict(
        name="crash",
        search__num_trials=2,
        search__max_concurrent_trials=1,
        search__scheduler={"type": "fifo"},
        train__epochs=EPOCHS,
    )
    path = write_sweep(tmp_path, spec)
    workdir = tmp_path / "work"

    _run_until(path, workdir, tmp_path / "1.log", " started ")  # before the first report
    _run_until(path, workdir, tmp_path / "2.log", f"finished at epoch {EPOCHS}")  # mid-sweep: trial 1 done
    _run_until(path, workdir, tmp_path / "3.log", f"epoch 1/{EPOCHS}")  # the second trial, mid-run
    last = cli("run", str(path), "--workdir", str(workdir))
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    assert "resuming" in last.stdout

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("crash").experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if r.data.tags["orchestrator.role"] == "sweep"]
    trials = [r for r in runs if r.data.tags["orchestrator.role"] == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials), [
        (t.info.run_name, t.info.status) for t in trials
    ]
    for t in trials:
        for key in ("epoch", "eval_accuracy", "train_loss"):
            steps = [int(m.step) for m in client.get_metric_history(t.info.run_id, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (t.info.run_name, key, steps)

    resumed = [
        m.value for t in trials for m in client.get_metric_history(t.info.run_id, "resumed_from_epoch")
    ]
    assert max(resumed) >= 1  # the trial killed mid-run went on from its latest checkpoint

    best = cli("best", "--workdir", str(workdir), "--sweep", "crash", "--json")
    assert best.returncode == 0, best.stderr
    checkpoint = json.loads(best.stdout)["checkpoint"]
    predicted = cli("predict", "--model", checkpoint, "--json", "A wonderful, reliable product.")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout.splitlines()[0])["label"] in {"negative", "positive"}
