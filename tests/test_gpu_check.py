"""``bench/gpu_check.py`` runs where the GPU machine runs it: without Ray, MLflow or Optuna.

On CPU with a tiny model, so the script the lent GPU runs is exercised by every test run: the
strategies build, train and evaluate through the project's own code, fp16 is skipped off-GPU,
micro-batching and the out-of-memory report work.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

BLOCK = "import sys, runpy\nfor m in ('ray', 'mlflow', 'optuna'):\n    sys.modules[m] = None\n"


def test_gpu_check_runs_without_the_orchestration_libraries(tmp_path):
    out = tmp_path / "rows.jsonl"
    args = ["--device", "cpu", "--model", "builtin:tiny-random-bert", "--steps", "2", "--warmup", "1"]
    args += ["--batch-size", "8", "--strategies", "full,lora", "--precisions", "fp32,fp16", "--oom-check"]
    args += ["--oom-batch", str(2**31)]  # its first activation: beyond a 47-bit address space
    args += ["--out", str(out)]
    code = (
        BLOCK
        + f"sys.argv = ['gpu_check.py', *{args!r}]\nrunpy.run_path('bench/gpu_check.py', run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["environment"]["device"] == "cpu"
    trained = [r for r in rows if "samples_per_s" in r]
    assert [(r["strategy"], r["precision"], r["micro_batch_size"]) for r in trained] == [
        ("full", "fp32", None),
        ("lora", "fp32", None),
        ("full", "bf16", 2),
    ]
    for r in trained:
        assert r["samples_per_s"] > 0 and r["step_gflop"] > 0 and 0 <= r["eval_accuracy"] <= 1
    assert trained[1]["trainable_params"] < trained[0]["trainable_params"]
    assert {"precision": "fp16", "skipped": "fp16 autocast needs a GPU"} in rows
    assert rows[-1]["oom_check"] == "reported" and rows[-1]["message"].startswith("out of memory on cpu")
