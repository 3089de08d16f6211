"""A real conditional sweep (strategy x pooling, sub-knobs under `when`), then promotion and
serving of a LoRA trial and a mean-pooled trial.

Tiny random BERT, 48 training rows, 4 trials of 1 worker, 1 epoch, FIFO: about a minute of Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAGS
from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep

SPACE = {
    "strategy": {"type": "choice", "values": ["full", "lora", "prompt"]},
    "pooling": {"type": "choice", "values": ["cls", "mean"]},
    "freeze_layers": {"type": "int", "low": 0, "high": 1, "when": {"strategy": ["full", "lora"]}},
    "lora_r": {"type": "int", "low": 2, "high": 8, "when": {"strategy": "lora"}},
    "prompt_tokens": {"type": "choice", "values": [4, 8], "when": {"strategy": "prompt"}},
    "learning_rate": [
        {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3, "when": {"strategy": "full"}},
        {"type": "loguniform", "low": 3.0e-3, "high": 3.0e-2, "when": {"strategy": ["lora", "prompt"]}},
    ],
}
TEXTS = ["The battery is excellent, but the screen is awful.", "The motor is not slow."]


@pytest.fixture(scope="module")
def strategy_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    write_csv(root / "train.csv", review_rows(48, seed=1))
    write_csv(root / "dev.csv", review_rows(16, seed=2))
    spec = sweep_dict(name="strat", search__scheduler={"type": "fifo"})
    spec["search"]["num_trials"] = 4
    spec["search"]["space"] = SPACE
    spec["train"] = {"epochs": 1, "batch_size": 16, "freeze_layers": "auto", "lora_alpha": 8}
    path = write_sweep(root, spec)
    workdir = root / "work"
    proc = cli("run", str(path), "--workdir", str(workdir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("strat")
    trials = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAGS.ROLE) == "trial"]
    return workdir, client, trials


def test_sub_knobs_exist_only_where_their_condition_holds(strategy_sweep):
    _, client, trials = strategy_sweep
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    strategies = {t.data.params["strategy"] for t in trials}
    assert {"lora", "full"} <= strategies, strategies  # seed 0 samples these; the checks below need them
    for t in trials:
        params, strategy = t.data.params, t.data.params["strategy"]
        assert ("lora_r" in params) == ("lora_alpha" in params) == (strategy == "lora"), params
        assert ("prompt_tokens" in params) == (strategy == "prompt"), params
        assert params["pooling"] in {"cls", "mean"}  # resolved, never auto
        lr = float(params["learning_rate"])
        assert (1e-4 <= lr <= 1e-3) if strategy == "full" else (3e-3 <= lr <= 3e-2)
        if strategy == "lora":
            assert params["lora_alpha"] == "8.0" and 2 <= int(params["lora_r"]) <= 8
        if strategy == "prompt":
            assert params["freeze_layers"] == "2"  # train.freeze_layers: auto, resolved
        ckpt = json.loads((Path(t.data.tags[TAGS.CHECKPOINT]) / "trial.json").read_text())
        assert ckpt["hyperparameters"]["strategy"] == strategy
        assert ("lora_r" in ckpt["hyperparameters"]) == (strategy == "lora")
    counts = {t.data.params["strategy"]: t.data.metrics["trainable_params"] for t in trials}
    assert counts["lora"] < counts["full"] or "full" not in counts


def _promote_trial(workdir: Path, trial_id: str, name: str, export: Path) -> dict:
    proc = cli(
        "promote", "--workdir", str(workdir), "--sweep", "strat", "--trial", trial_id, "--name", name,
        "--export", str(export), "--json", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("kind", ["lora", "mean"])
def test_promote_and_serve_lora_and_mean_pooled_trials(strategy_sweep, tmp_path, kind):
    import mlflow
    import pandas as pd

    workdir, _, trials = strategy_sweep
    pick = [
        t
        for t in trials
        if (t.data.params["strategy"] == "lora" if kind == "lora" else t.data.params["pooling"] == "mean")
    ]
    assert pick, f"no {kind} trial in this sweep"
    trial = pick[0]
    export = tmp_path / "export"
    result = _promote_trial(workdir, trial.data.tags[TAGS.TRIAL_ID], f"strat-{kind}", export)
    # the exported weights reproduce the logged validation metric exactly
    assert result["validation"]["eval_accuracy"] == trial.data.metrics["eval_accuracy"]
    info = json.loads((export / "trial.json").read_text())
    assert info["merged"] == (trial.data.params["strategy"] == "lora")
    card = (export / "README.md").read_text()
    assert (
        f"strategy: `{trial.data.params['strategy']}`" in card
        and f"pooling: `{trial.data.params['pooling']}`" in card
    )

    proc = cli("predict", "--model", str(export), *TEXTS, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from_export = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(result["model_uri"]).predict(pd.DataFrame({"text": TEXTS}))
    assert list(served["label"]) == [p["label"] for p in from_export]
    assert served["score"].tolist() == pytest.approx([p["score"] for p in from_export], abs=1e-6)
