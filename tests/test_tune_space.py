"""The one adapter to the searcher: inclusive bounds, knob names kept, picklable define-by-run space."""

from __future__ import annotations

import copy
import pickle

import optuna
import pytest

from orchestrator.tune_space import DefineByRun, suggest
from search_spaces.domains import Choice, IntRange, LogUniform, Uniform, resolve_auto


def _study():
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 1), (0, 6), (2, 5)])
def test_int_bounds_are_inclusive(low, high):
    study = _study()
    seen = {suggest(study.ask(), "k", IntRange(type="int", low=low, high=high)) for _ in range(300)}
    assert seen == set(range(low, high + 1))


def test_auto_resolves_to_layer_count():
    domain = resolve_auto(IntRange(type="int", low=0, high="auto"), 6)
    assert domain.corners() == [0, 6]
    with pytest.raises(ValueError, match="auto"):
        suggest(_study().ask(), "k", IntRange(type="int", low=0, high="auto"))


def test_float_and_choice_domains_become_optuna_distributions():
    trial = _study().ask()
    suggest(trial, "learning_rate", LogUniform(type="loguniform", low=1e-5, high=1e-3))
    suggest(trial, "weight_decay", Uniform(type="uniform", low=0.0, high=0.1))
    suggest(trial, "context_template", Choice(type="choice", values=["plain", "task"]))
    dists = trial.distributions
    assert dists["learning_rate"].log and (dists["learning_rate"].low, dists["learning_rate"].high) == (
        1e-5,
        1e-3,
    )
    assert not dists["weight_decay"].log
    assert dists["context_template"].choices == ("plain", "task")


def test_define_by_run_is_flat_picklable_and_keeps_knob_names():
    space = {
        "strategy": [Choice(type="choice", values=["full", "lora"])],
        "lora_r": [IntRange(type="int", low=2, high=4, when={"strategy": ["lora"]})],
        "freeze_layers": [IntRange(type="int", low=0, high=2)],
    }
    original = DefineByRun(space, {"epochs": 3}, {"lora_alpha": 16.0})
    assert pickle.dumps(original)  # Tune pickles the searcher holding it; nothing is unpickled here
    dbr = copy.deepcopy(original)  # the same __reduce__ state protocol, round-tripped
    assert dbr.order.index("strategy") < dbr.order.index("lora_r")
    study = _study()
    for _ in range(20):
        trial = study.ask()
        constants = dbr(trial)
        config = {**constants, **trial.params}
        assert all("/" not in k and not isinstance(v, dict) for k, v in config.items())
        assert set(config) == {"strategy", "freeze_layers"} | (
            {"lora_r", "lora_alpha"} if config["strategy"] == "lora" else set()
        )
        study.tell(trial, 0.0)
