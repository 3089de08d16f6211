"""A real sweep through the real entry point: local Ray, Optuna, ASHA, SQLite MLflow.

Tiny random BERT, 48 training rows, 3 trials of 2 DDP workers each (gloo on CPU). Checks the
MLflow layout, the best checkpoint (loads, predicts, reproduces its logged metric) and that
running the same command again is idempotent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAGS
from search_spaces.presets import resolve_template
from tests.conftest import cli
from trainables.checkpoints import read_trial_info
from trainables.context import ContextEncoder
from trainables.data import read_split
from trainables.metrics import classification_metrics

PER_EPOCH = [
    "eval_accuracy",
    "eval_f1_macro",
    "eval_loss",
    "train_loss",
    "trainable_params",
    "startup_seconds",
    "startup_launch_seconds",
    "startup_data_seconds",
    "startup_model_seconds",
    "epoch_seconds",
    "samples_per_second",
    "truncated_examples",
    "cache_hit",
    "cached_depth",
    "cache_train_bits",
]


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _runs(workdir: Path):
    client = _client(workdir)
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(TAGS.ROLE) == "sweep"]
    children = [r for r in runs if r.data.tags.get(TAGS.ROLE) == "trial"]
    return client, parents, children


def test_progress_and_leaderboard_printed(sweep):
    _, _, proc = sweep
    assert "started" in proc.stdout and "epoch 1/3" in proc.stdout
    assert "leaderboard" in proc.stdout and "best trial" in proc.stdout
    assert "[3/3 done, 0 running, 0 pending | elapsed" in proc.stdout  # not a terminal: plain lines


def test_library_output_goes_to_the_log_file_not_the_console(sweep):
    _, workdir, proc = sweep
    log = workdir / "logs" / "e2e.log"
    assert f"log {log}" in proc.stdout
    noise = "Creating initial MLflow database tables"  # MLflow's migration lines, logged to stderr
    assert noise in log.read_text()
    assert noise not in proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr and "INFO" not in proc.stdout + proc.stderr


def test_mlflow_layout(sweep):
    _, workdir, _ = sweep
    client, parents, children = _runs(workdir)
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["metric"] == "eval_accuracy" and parent.data.params["seed"] == "0"
    assert "version.ray" in parent.data.tags and "best_trial_id" in parent.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec", "leaderboard.csv"} <= artifacts
    outcomes = set()
    for child in children:
        assert child.data.tags[TAGS.PARENT] == parent.info.run_id
        assert child.info.status in {"FINISHED", "KILLED"}, child.info.status
        outcomes.add(child.data.tags[TAGS.OUTCOME])
        params = child.data.params
        assert {"learning_rate", "freeze_layers", "context_template", "epochs", "batch_size"} <= set(params)
        epochs = [m.step for m in client.get_metric_history(child.info.run_id, "eval_accuracy")]
        assert epochs == list(range(1, len(epochs) + 1)) and epochs
        assert (len(epochs) == 3) == (child.info.status == "FINISHED")
        for key in PER_EPOCH:
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == epochs, key
        assert child.data.metrics["samples_per_second"] > 0 and child.data.metrics["startup_seconds"] > 0
        parts = [child.data.metrics[f"startup_{p}_seconds"] for p in ("launch", "data", "model")]
        assert all(p >= 0 for p in parts) and sum(parts) <= child.data.metrics["startup_seconds"]
        assert Path(child.data.tags[TAGS.CHECKPOINT]).is_dir()
        # the default strategy (`full`) reads the frozen prefix; cache.dtype is bf16 by default,
        # and the trial reports the precision of the states it actually trained on
        frozen = int(params["freeze_layers"]) > 0
        assert child.data.metrics["cache_train_bits"] == (16 if frozen else 0)
    assert "completed" in outcomes
    # freezing changes the trainable-parameter count the trials report
    counts = {c.data.params["freeze_layers"]: c.data.metrics["trainable_params"] for c in children}
    assert len(set(counts.values())) == len(counts)


def test_small_checkpoints_and_retention(sweep):
    """Per trial: the best epoch and the latest, only what was trained, no optimizer state left."""
    _, workdir, proc = sweep
    client, parents, children = _runs(workdir)
    exp = workdir / "runs" / "e2e"
    assert not list(exp.rglob("resume.pt"))  # every trial ended: nothing will resume
    bases = {p.name for p in (exp / "cache" / "base").glob("*.safetensors")}
    for child in children:
        history = client.get_metric_history(child.info.run_id, "eval_accuracy")
        best, last = max(m.value for m in history), max(m.step for m in history)
        kept = sorted(Path(child.data.tags[TAGS.TRAIN_RUN]).glob("epoch-*"))
        assert f"epoch-{last:03d}" in {k.name for k in kept} and 1 <= len(kept) <= 2
        infos = [read_trial_info(k) for k in kept]
        assert best in {i["metrics"]["eval_accuracy"] for i in infos}
        for info in infos:
            frozen = int(child.data.params["freeze_layers"]) > 0
            assert ("base" in info) == frozen  # nothing frozen: a full (plain HF) checkpoint
            if frozen:
                assert Path(info["base"]["uri"]).name in bases
    assert len(bases) <= 1  # one seed, one model: one stored base for the whole sweep
    assert parents[0].data.metrics["disk_bytes"] > 0 and "disk " in proc.stdout


def test_templates_encoded_once_for_the_sweep(sweep):
    _, workdir, proc = sweep
    stored = list((workdir / "runs" / "e2e" / "cache" / "tokens").glob("*.parquet"))
    assert len(stored) == 3  # plain, task, shot: one file each, whatever the number of trials and ranks
    assert "encoded 3 template(s) once for every trial" in proc.stdout


def test_best_checkpoint_loads_and_reproduces_its_metric(sweep):
    from transformers import AutoConfig, AutoTokenizer

    from trainables.checkpoints import load_classifier
    from trainables.stored_tokenizer import tokenizer_dir

    _, workdir, _ = sweep
    proc = cli("best", "--workdir", str(workdir), "--sweep", "e2e", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    best = json.loads(proc.stdout)
    assert {"sweep", "trial_id", "metric", "value", "params", "checkpoint", "mlflow_run_id"} <= set(best)
    ckpt = Path(best["checkpoint"])
    assert (ckpt / "model.safetensors").exists() and (ckpt / "trial.json").exists()
    info = read_trial_info(ckpt)
    assert info["trial_id"] == best["trial_id"] and info["epoch"] == best["epoch"]
    assert info["hyperparameters"]["learning_rate"] == pytest.approx(float(best["params"]["learning_rate"]))

    model = load_classifier(ckpt)  # the delta on top of the sweep's stored base
    assert not (ckpt / "tokenizer.json").exists()  # the sweep's tokenizer files are stored once
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_dir(ckpt, info), config=AutoConfig.from_pretrained(ckpt)
    )
    data_dir = workdir / "runs" / "e2e" / "data"
    train, val = read_split(str(data_dir / "train.parquet")), read_split(str(data_dir / "validation.parquet"))
    encoder = ContextEncoder(
        tokenizer,
        resolve_template(info["template_name"], {info["template_name"]: info["template"]}),
        label_names=info["label_names"],
        train_texts=train.texts,
        train_labels=train.labels,
        max_length=info["max_length"],
        seed=info["data_seed"],
    )
    confusion = torch.zeros((2, 2))
    loss = 0.0
    with torch.no_grad():
        for ids, label in zip(
            encoder.encode(val.texts, split="validation").input_ids, val.labels, strict=True
        ):
            logits = model(input_ids=torch.tensor([ids])).logits
            loss += torch.nn.functional.cross_entropy(logits, torch.tensor([label]), reduction="sum").item()
            confusion[label, logits.argmax(-1).item()] += 1
    metrics = classification_metrics(confusion, loss)
    assert metrics["eval_accuracy"] == pytest.approx(best["value"], abs=1e-9)
    assert metrics["eval_loss"] == pytest.approx(best["metrics"]["eval_loss"], rel=1e-4)


def test_rerun_is_idempotent_and_changed_spec_is_refused(sweep):
    path, workdir, _ = sweep
    proc = cli("run", str(path), "--workdir", str(workdir))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, parents, children = _runs(workdir)
    assert len(parents) == 1 and len(children) == 3
    assert all(r.info.status != "RUNNING" for r in [*parents, *children])

    proc = cli("run", str(path), "--workdir", str(workdir), "--set", "search.num_trials=4", timeout=120)
    assert proc.returncode == 2
    assert "changed: search.num_trials" in proc.stderr and "Traceback" not in proc.stderr
