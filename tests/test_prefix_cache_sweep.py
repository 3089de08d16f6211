"""The prefix cache through the real entry point: a second trial skips the prefix, cache on == cache off.

Tiny random BERT (2 blocks), 2 trials one after the other, 2 DDP ranks each (every rank reads
the stored states, the loaders shard them), ``freeze_layers: 1``. The same sweep with
``cache.enabled: false`` (same TPE seed, so the same learning rates) gives the same metrics.
Both accumulate each batch of 16 over micro-batches of 6 (``train.micro_batch_size``), so the
stored states are also read for row slices of a batch, under DDP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep


def _trials(workdir: Path) -> list[dict]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cache")
    runs = [
        r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("orchestrator.role") == "trial"
    ]
    out = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        history = {
            key: [
                m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            ]
            for key in (
                "eval_accuracy",
                "eval_loss",
                "train_loss",
                "cache_hit",
                "cached_depth",
                "cache_train_bits",
            )
        }
        assert run.data.params["micro_batch_size"] == "6"
        out.append({"learning_rate": run.data.params["learning_rate"], **history})
    return out


@pytest.fixture(scope="module")
def two_sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_csv(root / "train.csv", review_rows(48, seed=1))
    write_csv(root / "dev.csv", review_rows(16, seed=2))
    spec = sweep_dict(
        name="cache",
        search__num_trials=2,
        search__max_concurrent_trials=1,
        search__scheduler={"type": "fifo"},
        search__space={"learning_rate": {"type": "loguniform", "low": 1.0e-4, "high": 1.0e-3}},
        resources={"workers_per_trial": 2, "cpus_per_worker": 0.5},
    )
    spec["train"]["freeze_layers"] = 1
    spec["train"]["micro_batch_size"] = 6
    path = write_sweep(root, spec)
    runs = {}
    # fp32 states: the cache then changes nothing but speed (bf16, the default, is checked in
    # tests/test_prefix_cache.py and measured against seed noise in bench/bench_prefix_dtype.py)
    for name, extra in (("on", ["--set", "cache.dtype=fp32"]), ("off", ["--set", "cache.enabled=false"])):
        proc = cli("run", str(path), "--workdir", str(root / name), *extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = (root / name, proc)
    return runs


def test_second_trial_reads_the_stored_prefix(two_sweeps):
    workdir, proc = two_sweeps["on"]
    first, second = _trials(workdir)
    assert first["cache_hit"] == [0, 0] and first["cached_depth"] == [0, 0]  # computed it, once
    assert second["cache_hit"] == [1, 1] and second["cached_depth"] == [1, 1]  # skipped the prefix
    assert first["cache_train_bits"] == second["cache_train_bits"] == [32, 32]  # --set cache.dtype=fp32
    assert "prefix cache on: up to" in proc.stdout
    assert "deleted (sweep finished)" in proc.stdout
    assert not list((workdir / "runs" / "cache" / "cache").glob("features/*.safetensors"))


def test_cache_on_and_off_give_the_same_metrics(two_sweeps):
    on, off = _trials(two_sweeps["on"][0]), _trials(two_sweeps["off"][0])
    assert "prefix cache off (cache.enabled: false)" in two_sweeps["off"][1].stdout
    assert [t["learning_rate"] for t in on] == [t["learning_rate"] for t in off]
    for a, b in zip(on, off, strict=True):
        assert b["cache_hit"] == [0, 0] and b["cache_train_bits"] == [0, 0]
        for key in ("eval_accuracy", "eval_loss", "train_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
