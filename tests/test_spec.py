"""Sweep-file errors: one line each, naming the field and the fix, before anything starts."""

from __future__ import annotations

import pytest

from orchestrator.resolve import resolve_sweep
from orchestrator.spec import SpecError, SweepSpec, apply_overrides, load_spec
from tests.conftest import cli, review_rows, sweep_dict, write_csv, write_sweep


def _errors(tmp_path, spec: dict) -> list[str]:
    path = write_sweep(tmp_path, spec)
    with pytest.raises(SpecError) as info:
        resolve_sweep(load_spec(path), path, tmp_path / "work")
    for line in info.value.lines:
        assert "\n" not in line
    return info.value.lines


SHAPE_CASES = [
    ({"search__metric": "accuracy"}, "search.metric: unknown metric 'accuracy'; use one of eval_accuracy"),
    ({"search__mode": "min"}, "search: mode 'min' would optimise eval_accuracy the wrong way; use mode: max"),
    ({"search__bogus": 1}, "search.bogus: unknown key"),
    ({"data__max_length": 4}, "data.max_length: Input should be greater than or equal to 8"),
    (
        {"search__space__learning_rate": {"type": "logunif", "low": 1, "high": 2}},
        "search.space.learning_rate.type: use one of",
    ),
    (
        {"search__space__learning_rate": {"type": "loguniform", "low": 1e-3, "high": 1e-4}},
        "low (0.001) must be < high",
    ),
    ({"search__space__dropout": {"type": "uniform", "low": 0, "high": 1}}, "'dropout' is not a train knob"),
    ({"train__learning_rate": 1e-4}, "train.learning_rate is also in search.space; keep it in one place"),
    ({"search__scheduler__grace_period": 5}, "grace_period (5) exceeds train.epochs (2)"),
    ({"name": "bad name!"}, "name: use letters, digits"),
    ({"search__max_concurrent_trials": 0}, "search.max_concurrent_trials: must be >= 1 or auto"),
]


@pytest.mark.parametrize(("overrides", "expected"), SHAPE_CASES)
def test_shape_errors_name_field_and_fix(tmp_path, data_dir, overrides, expected):
    path = write_sweep(data_dir, sweep_dict(**overrides))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert any(expected in line for line in info.value.lines), info.value.lines


def test_yaml_scientific_notation_is_coerced(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: x\ndata: {train: a.csv}\ntrain: {learning_rate: 1e-5}\n"
        "search:\n  space:\n    weight_decay: {type: loguniform, low: 1e-6, high: 1e-2}\n"
    )
    spec = load_spec(path)
    assert spec.train.learning_rate == pytest.approx(1e-5)
    assert spec.search.space["weight_decay"][0].low == pytest.approx(1e-6)


def test_overrides_are_dotted_and_typed():
    raw = apply_overrides(
        {"search": {"num_trials": 12}}, ["search.num_trials=4", "train.epochs=1", "storage=null"]
    )
    assert raw == {"search": {"num_trials": 4}, "train": {"epochs": 1}, "storage": None}
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        apply_overrides({}, ["search.num_trials"])


def test_default_mode_follows_metric():
    spec = SweepSpec.model_validate(
        {"name": "x", "data": {"train": "a.csv"}, "search": {"metric": "eval_loss"}}
    )
    assert spec.search.mode == "min"


def test_resolve_fills_auto_and_coerces(tmp_path, data_dir):
    spec = sweep_dict(train={"epochs": 2})
    spec["search"]["space"]["batch_size"] = {"type": "choice", "values": ["8", 16]}
    path = write_sweep(data_dir, spec)
    r = resolve_sweep(load_spec(path), path, tmp_path / "work")
    assert r.num_layers == 2
    assert r.space["freeze_layers"][0].high == 2
    assert r.space["batch_size"][0].values == [8, 16]
    assert r.fixed["strategy"] == "full" and r.fixed["pooling"] == "cls"  # tiny BERT: no mean-pooling config
    assert r.data.label_names == ["negative", "positive"]
    assert r.tracking_uri == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"


RESOLVE_CASES = [
    ({"data__train": "missing.csv"}, "data.train: file"),
    (
        {"data__text_column": "body"},
        "data.train: no column 'body'; set data.text_column to one of: text, label",
    ),
    ({"model": "builtin:nope"}, "model: unknown builtin 'builtin:nope'"),
    ({"model": "./no-such-dir"}, "model: directory ./no-such-dir does not exist"),
    (
        {"search__space__freeze_layers": {"type": "int", "low": 0, "high": 5}},
        "5 exceeds the model's 2 layers",
    ),
    (
        {"search__space__context_template": {"type": "choice", "values": ["plain", "nope"]}},
        "search.space.context_template: unknown template 'nope'; define it under templates: or use a preset",
    ),
    ({"templates": {"task": "Review: {review}"}}, "templates.task"),
    ({"templates": {"task": "Review: {text.__class__}"}}, "templates.task"),
    ({"train__precision": "fp16"}, "precision: fp16 needs GPU workers"),
    (
        {"train": {"epochs": 2}, "search__space__batch_size": {"type": "choice", "values": [0, 8]}},
        "search.space.batch_size: 0 is not a valid batch_size",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), RESOLVE_CASES)
def test_resolve_errors(tmp_path, data_dir, overrides, expected):
    lines = _errors(data_dir, sweep_dict(**overrides))
    assert any(expected in line for line in lines), lines


def test_bad_rows_are_named(tmp_path, data_dir):
    write_csv(data_dir / "dev.csv", [*review_rows(3), ("fine", "neutral")])
    lines = _errors(data_dir, sweep_dict())
    assert any(
        "data.validation row 4: label 'neutral' never occurs in data.train" in line for line in lines
    ), lines
    write_csv(data_dir / "train.csv", [*review_rows(5), ("   ", "positive")])
    lines = _errors(data_dir, sweep_dict())
    assert any("data.train row 6: empty or non-text 'text'" in line for line in lines), lines


def test_drop_empty_rows_skips_and_counts(tmp_path, data_dir):
    write_csv(data_dir / "train.csv", [*review_rows(5), ("   ", "positive"), ("ok", None)])
    lines = _errors(data_dir, sweep_dict())
    assert any("fix or drop the row, or set data.drop_empty_rows: true" in line for line in lines), lines
    path = write_sweep(data_dir, sweep_dict(data__drop_empty_rows=True))
    r = resolve_sweep(load_spec(path), path, tmp_path / "work")
    assert len(r.data.train) == 5
    assert r.data.dropped == {"data.train": 2}
    out = cli("validate", str(path))
    assert out.returncode == 0, out.stderr
    assert "data.drop_empty_rows): 2 from data.train" in out.stdout


def test_all_mistakes_reported_together(tmp_path, data_dir):
    lines = _errors(data_dir, sweep_dict(model="builtin:nope", data__text_column="body"))
    assert len(lines) >= 2


def test_validate_cli_exit_codes(tmp_path, data_dir):
    bad = write_sweep(
        data_dir,
        sweep_dict(
            data__text_column="body", search__space__freeze_layers={"type": "int", "low": 0, "high": 9}
        ),
    )
    proc = cli("validate", str(bad), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "error: data.train: no column 'body'" in proc.stderr
    good = write_sweep(data_dir, sweep_dict(), name="good.yaml")
    proc = cli("validate", str(good), "--set", "search.num_trials=4", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "4 trials" in proc.stdout
    proc = cli("validate", str(good), "--set", "search.num_trials=zero", timeout=120)
    assert proc.returncode == 2 and "search.num_trials" in proc.stderr


# --- conditional space, strategies and pooling ---------------------------------------------

LORA_R = {"type": "int", "low": 2, "high": 8, "when": {"strategy": "lora"}}
STRATEGY = {"type": "choice", "values": ["full", "lora"]}


def _conditional(**extra) -> dict:
    spec = sweep_dict(**extra)
    spec["search"]["space"].setdefault("strategy", STRATEGY)
    return spec


CONDITIONAL_CASES = [
    (
        {"search__space__lora_r": {**LORA_R, "when": {"strat": "lora"}}},
        "search.space.lora_r.when: 'strat' is not a train knob",
    ),
    (
        {"search__space__lora_r": {**LORA_R, "when": {"strategy": "lorra"}}},
        "search.space.lora_r.when.strategy: 'lorra' is not a valid strategy (Value error, unknown strategy 'lorra'",
    ),
    (
        {"search__space__lora_r": {**LORA_R, "when": {"strategy": "prompt"}}},
        "search.space.lora_r.when: strategy never takes prompt in this sweep (it can be: full, lora)",
    ),
    (
        {"search__space__lora_r": {"type": "int", "low": 2, "high": 8}},
        "only lora trials use it; add when: {strategy: lora}",
    ),
    (
        {"train__prompt_tokens": 8},
        "train.prompt_tokens: only strategy prompt uses it, and no trial runs prompt",
    ),
    (
        {"search__space__strategy": {"type": "choice", "values": ["full", "prompt"]}},
        "strategy prompt trains no encoder block, so freeze_layers must be 2 (auto), not 0",
    ),
    (
        {
            "search__space__learning_rate": [
                {"type": "loguniform", "low": 1e-5, "high": 1e-4, "when": {"strategy": ["full", "lora"]}},
                {"type": "loguniform", "low": 1e-3, "high": 1e-2, "when": {"strategy": "lora"}},
            ]
        },
        "search.space.learning_rate: domains 1 and 2 can both apply; make their when conditions exclusive",
    ),
    (
        {
            "search__space__learning_rate": [
                {"type": "loguniform", "low": 1e-5, "high": 1e-4, "when": {"strategy": "full"}},
                {"type": "uniform", "low": 1e-3, "high": 1e-2, "when": {"strategy": "lora"}},
            ]
        },
        "search.space.learning_rate: alternatives must share one type",
    ),
    (
        {"search__space__pooling": {"type": "choice", "values": ["cls"], "when": {"lora_r": 4}}},
        "its when conditions form a cycle; condition on knobs in one direction",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), CONDITIONAL_CASES)
def test_conditional_space_errors_name_knob_and_fix(tmp_path, data_dir, overrides, expected):
    spec = _conditional(**overrides)
    if "lora_r" not in spec["search"]["space"] and "pooling" in spec["search"]["space"]:
        spec["search"]["space"]["lora_r"] = {**LORA_R, "when": {"pooling": "cls"}}
    lines = _errors(data_dir, spec)
    assert any(expected in line for line in lines), lines


def test_prompt_with_fixed_freeze_layers_and_lora_without_blocks(tmp_path, data_dir):
    spec = sweep_dict(train={"strategy": "prompt", "freeze_layers": 1, "epochs": 2})
    del spec["search"]["space"]["freeze_layers"]
    lines = _errors(data_dir, spec)
    assert any("freeze_layers must be 2 (auto), not 1" in line for line in lines), lines


def test_conditional_space_resolves_and_samples_only_where_it_applies(tmp_path, data_dir):
    import optuna

    from orchestrator.tune_space import DefineByRun

    spec = _conditional(train={"epochs": 2, "freeze_layers": "auto", "lora_alpha": 32})
    space = spec["search"]["space"]
    space["strategy"] = {"type": "choice", "values": ["full", "bitfit", "lora", "prompt"]}
    space["freeze_layers"] = {
        "type": "int",
        "low": 0,
        "high": "auto",
        "when": {"strategy": ["full", "bitfit", "lora"]},
    }
    space["lora_r"] = LORA_R
    space["prompt_tokens"] = {"type": "choice", "values": [4, 8], "when": {"strategy": "prompt"}}
    space["pooling"] = {"type": "choice", "values": ["auto", "cls", "mean"]}
    space["learning_rate"] = [
        {"type": "loguniform", "low": 1e-5, "high": 1e-4, "when": {"strategy": "full"}},
        {"type": "loguniform", "low": 1e-3, "high": 1e-2, "when": {"strategy": ["bitfit", "lora", "prompt"]}},
    ]
    path = write_sweep(data_dir, spec)
    r = resolve_sweep(load_spec(path), path, tmp_path / "work")
    assert r.space["pooling"][0].values == ["cls", "mean"]  # auto is cls for this model: deduplicated
    assert "lora_alpha" not in r.fixed and r.fallback["lora_alpha"] == 32
    assert r.fallback["freeze_layers"] == 2  # prompt trials: auto = the layer count

    dbr = DefineByRun(r.space, r.fixed, r.fallback)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    seen = set()
    for _ in range(60):
        trial = study.ask()
        config = {**r.fixed, **dbr(trial), **trial.params}
        strategy = config["strategy"]
        seen.add(strategy)
        assert ("lora_r" in config) == ("lora_alpha" in config) == (strategy == "lora")
        assert ("prompt_tokens" in config) == (strategy == "prompt")
        assert config["freeze_layers"] == 2 if strategy == "prompt" else 0 <= config["freeze_layers"] <= 2
        assert (1e-5 <= config["learning_rate"] <= 1e-4) == (strategy == "full")
        if strategy == "lora":
            assert 2 <= config["lora_r"] <= 8 and config["lora_alpha"] == 32
        study.tell(trial, 0.5)
    assert seen == {"full", "bitfit", "lora", "prompt"}


def test_validate_prints_conditions(tmp_path, data_dir):
    spec = _conditional()
    spec["search"]["space"]["lora_r"] = LORA_R
    proc = cli("validate", str(write_sweep(data_dir, spec)), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "search lora_r: {'low': 2, 'high': 8} (int)  when strategy in ['lora']" in proc.stdout
