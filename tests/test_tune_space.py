"""The one adapter to Tune: inclusive bounds survive conversion (Tune's randint excludes high)."""

from __future__ import annotations

import random

import pytest
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, Integer

from orchestrator.tune_space import to_param_space, to_tune
from search_spaces.domains import Choice, IntRange, LogUniform, Uniform, resolve_auto


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 1), (0, 6), (2, 5)])
def test_int_bounds_are_inclusive_in_tune_and_optuna(low, high):
    domain = to_tune(IntRange(type="int", low=low, high=high))
    assert isinstance(domain, Integer)
    random.seed(0)
    seen = {domain.sample() for _ in range(400)}
    assert seen == set(range(low, high + 1))
    dist = OptunaSearch.convert_search_space({"k": domain})["k"]
    assert (dist.low, dist.high) == (low, high)


def test_auto_resolves_to_layer_count():
    domain = resolve_auto(IntRange(type="int", low=0, high="auto"), 6)
    assert domain.corners() == [0, 6]
    with pytest.raises(ValueError, match="auto"):
        to_tune(IntRange(type="int", low=0, high="auto"))


def test_float_and_choice_domains():
    lr = to_tune(LogUniform(type="loguniform", low=1e-5, high=1e-3))
    assert isinstance(lr, Float) and lr.lower == 1e-5 and lr.upper == 1e-3
    dist = OptunaSearch.convert_search_space({"lr": lr})["lr"]
    assert dist.log and (dist.low, dist.high) == (1e-5, 1e-3)
    assert isinstance(to_tune(Uniform(type="uniform", low=0.0, high=0.1)), Float)
    choice = to_tune(Choice(type="choice", values=["plain", "task"]))
    assert isinstance(choice, Categorical) and choice.categories == ["plain", "task"]


def test_param_space_is_flat_and_keeps_knob_names():
    space = to_param_space({"freeze_layers": IntRange(type="int", low=0, high=2)}, {"epochs": 3, "seed": 0})
    assert set(space) == {"freeze_layers", "epochs", "seed"}
    assert all("/" not in k and not isinstance(v, dict) for k, v in space.items())
