"""Baselines, repeats and small grids through the real entry point (tiny random BERT, 1 epoch).

* a fixed config (no ``search.space``) of 3 trials = 3 seeds of one config: mean, std and n on
  the parent run and in ``best --json``; running it again trains nothing new;
* a fixed config of 1 trial: the plain baseline, ``train.seed``;
* a finite space of 2 configs with ``num_trials: 4``: exactly 2 trials, the sweep says so.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep


def _trial_runs(workdir: Path, name: str) -> tuple[list, object]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get("orchestrator.role") == "trial"]
    parent = next(r for r in runs if r.data.tags.get("orchestrator.role") == "sweep")
    return trials, parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("repeats")
    write_csv(root / "train.csv", review_rows(32, seed=1))
    write_csv(root / "dev.csv", review_rows(16, seed=2))
    return root


def _run(data: Path, name: str, **overrides) -> tuple[Path, str]:
    spec = sweep_dict(name=name, train__epochs=1, search__max_concurrent_trials=2, **overrides)
    path = write_sweep(data, spec, name=f"{name}.yaml")
    workdir = data / name
    proc = cli("run", str(path), "--workdir", str(workdir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, proc.stdout


def test_fixed_config_of_three_trials_is_three_seeds_of_one_config(data):
    workdir, stdout = _run(data, "fixed3", search__space={}, search__num_trials=3, train__seed=5)
    assert "3 trials: a fixed config (no search.space) x 3 seeds" in stdout
    trials, parent = _trial_runs(workdir, "fixed3")
    assert len(trials) == 3 and all(t.info.status == "FINISHED" for t in trials)
    seeds = sorted(int(t.data.params["seed"]) for t in trials)
    assert len(set(seeds)) == 3 and 5 in seeds  # the first seed is train.seed
    assert len({t.data.tags["config_id"] for t in trials}) == 1

    values = [t.data.metrics["eval_accuracy"] for t in trials]
    assert parent.data.metrics["best_config_mean_eval_accuracy"] == pytest.approx(statistics.fmean(values))
    assert parent.data.metrics["best_config_std_eval_accuracy"] == pytest.approx(statistics.stdev(values))
    assert parent.data.metrics["best_config_n"] == 3

    best = cli("best", "--workdir", str(workdir), "--sweep", "fixed3", "--json")
    assert best.returncode == 0, best.stderr
    doc = json.loads(best.stdout)
    assert doc["selected_by"] == "config mean over seeds"
    assert doc["config"]["n"] == 3 and doc["config"]["mean"] == pytest.approx(statistics.fmean(values))
    assert doc["value"] == max(values)  # that config's best checkpoint

    again = cli("run", str(data / "fixed3.yaml"), "--workdir", str(workdir))  # finished: nothing to train
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials_after, _ = _trial_runs(workdir, "fixed3")
    assert sorted(t.info.run_id for t in trials_after) == sorted(t.info.run_id for t in trials)


def test_fixed_config_of_one_trial_is_the_baseline(data):
    workdir, stdout = _run(data, "fixed1", search__space={}, search__num_trials=1, train__seed=3)
    assert "1 trials: a fixed config (no search.space) x 1 seed" in stdout
    trials, _ = _trial_runs(workdir, "fixed1")
    assert len(trials) == 1 and trials[0].data.params["seed"] == "3"
    best = cli("best", "--workdir", str(workdir), "--sweep", "fixed1", "--json")
    assert best.returncode == 0 and json.loads(best.stdout)["selected_by"] == "best epoch"


def test_a_finite_space_smaller_than_the_budget_trains_each_config_once(data):
    space = {"freeze_layers": {"type": "choice", "values": [0, 1]}}
    workdir, stdout = _run(data, "grid", search__space=space, search__num_trials=4)
    assert "exhausted after 2" in stdout
    trials, _ = _trial_runs(workdir, "grid")
    assert sorted(t.data.params["freeze_layers"] for t in trials) == ["0", "1"]
