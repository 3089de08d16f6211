"""``orchestrator validate`` answers without torch, transformers or datasets once it has seen a model.

The slow questions (the model's layers and positions, every strategy against the model) are asked of
transformers and torch once per model config, code and question, then kept as JSON
(``trainables.memo``); data is read by pandas/pyarrow as ``datasets`` would read it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.resolve import resolve_sweep
from orchestrator.spec import SpecError, load_spec
from tests.conftest import ROOT, sweep_dict, write_sweep
from trainables import memo

HEAVY = ("torch", "transformers", "datasets", "peft")
PROBE = (
    "import sys\n"
    "from orchestrator.cli import app\n"
    "try:\n"
    "    app(['validate', sys.argv[1]])\n"
    "except SystemExit as e:\n"
    "    assert not e.code, e.code\n"
    "print('HEAVY=' + ','.join(m for m in %r if m in sys.modules))\n"
)


def _validate(path: Path, cache: Path, hash_seed: int) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "ORCHESTRATOR_CACHE": str(cache), "PYTHONHASHSEED": str(hash_seed)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown, heavy = done.stdout.rsplit("HEAVY=", 1)
    return shown, [m for m in heavy.strip().split(",") if m]


def test_second_validate_imports_no_ml_library(data_dir, tmp_path):
    cache = tmp_path / "cache"
    spec = sweep_dict(
        search__space__strategy={"type": "choice", "values": ["full", "lora", "prompt"]},
        search__space__lora_r={"type": "choice", "values": [4, 8], "when": {"strategy": "lora"}},
        search__space__freeze_layers={
            "type": "int",
            "low": 0,
            "high": "auto",
            "when": {"strategy": ["full", "lora"]},
        },
        search__space__pooling={"type": "choice", "values": ["cls", "mean"], "when": {"strategy": "full"}},
        train__freeze_layers="auto",
        train__prompt_tokens=4,
    )
    path = write_sweep(data_dir, spec)
    first, heavy = _validate(path, cache, hash_seed=1)
    assert "torch" in heavy  # the first time asks torch (the strategies on a meta-device model)
    second, heavy = _validate(path, cache, hash_seed=2)  # set orders differ: the memo key must not
    assert heavy == [] and second == first
    assert "(2 layers)" in second and "48 train / 16 validation rows" in second


def test_memo_keys_on_the_inputs_and_never_trusts_a_bad_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path))
    calls = []

    def compute(value):
        calls.append(value)
        return {"answer": value}

    assert memo.memoized("k", {"x": 1}, lambda: compute(1)) == {"answer": 1}
    assert memo.memoized("k", {"x": 1}, lambda: compute(99)) == {"answer": 1}  # kept
    assert memo.memoized("k", {"x": 2}, lambda: compute(2)) == {"answer": 2}  # other inputs
    assert memo.memoized("other", {"x": 1}, lambda: compute(3)) == {"answer": 3}  # other question
    assert calls == [1, 2, 3]
    for entry in (tmp_path / "checks").iterdir():
        entry.write_text("{not json")  # torn or tampered: asked again, then rewritten
    assert memo.memoized("k", {"x": 1}, lambda: compute(4)) == {"answer": 4}
    assert memo.memoized("k", {"x": 1}, lambda: compute(5)) == {"answer": 4}
    assert not list((tmp_path / "checks").glob("*.tmp"))


def test_an_error_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path))

    def fail():
        raise ValueError("no")

    with pytest.raises(ValueError):
        memo.memoized("k", {}, fail)
    assert memo.memoized("k", {}, lambda: 7) == 7


def test_a_changed_config_is_asked_again(data_dir, tmp_path, monkeypatch):
    """Same directory, new config.json content: the kept answer of the old one is not used."""
    from trainables.models import model_facts

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "bert", "num_hidden_layers": 3, "hidden_size": 8, "num_attention_heads": 2}
    (model / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    assert model_facts(str(model)).num_layers == 3
    (model / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 5}))
    facts = model_facts(str(model))
    assert (facts.num_layers, facts.positions, facts.hidden_size) == (5, 512, 8)  # BertConfig's default
    path = write_sweep(data_dir, sweep_dict(model=str(model), data__max_length=600))
    with pytest.raises(SpecError, match="exceeds the model's 512 positions"):
        resolve_sweep(load_spec(path), path, data_dir / "work")
