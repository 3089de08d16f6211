"""What a sweep trains: fixed configs, repeats (seeds), finite spaces, no config twice."""

from __future__ import annotations

import json

import pytest

from orchestrator.plan import (
    RESUME_KEY,
    TrialPlan,
    config_id,
    derived_seeds,
    finite_size,
    plan_trials,
    relative_cost,
)
from orchestrator.resolve import resolve_sweep
from orchestrator.searcher import MAX_RESAMPLES, STATE_FILE, PlannedSearch, planned_search
from orchestrator.space import sample_order
from orchestrator.spec import SpecError, load_spec
from orchestrator.tune_space import DefineByRun
from search_spaces.domains import Choice, IntRange, LogUniform
from tests.conftest import sweep_dict, write_sweep

STRATEGY = Choice(type="choice", values=["full", "lora"])
LORA_R = Choice(type="choice", values=[4, 8], when={"strategy": "lora"})
FREEZE = IntRange(type="int", low=0, high=3)
LR = LogUniform(type="loguniform", low=1e-4, high=1e-2)


def _plan(space, num_trials, repeats=1, train_seed=0, search_seed=0) -> TrialPlan:
    return plan_trials(
        space,
        {},
        sample_order(space),
        num_trials=num_trials,
        repeats=repeats,
        train_seed=train_seed,
        search_seed=search_seed,
    )


def test_seeds_start_with_the_train_seed_and_are_distinct_and_reproducible():
    seeds = derived_seeds(7, 3, 5)
    assert seeds[0] == 7 and len(set(seeds)) == 5
    assert derived_seeds(7, 3, 5) == seeds
    assert derived_seeds(7, 4, 5)[1:] != seeds[1:]  # another search.seed, other seeds
    assert derived_seeds(7, 3, 1) == [7]


def test_config_id_ignores_the_seed_and_key_order():
    a = config_id({"learning_rate": 1e-3, "strategy": "lora", "seed": 1})
    assert a == config_id({"strategy": "lora", "learning_rate": 1e-3, "seed": 99})
    assert a != config_id({"strategy": "full", "learning_rate": 1e-3, "seed": 1})


@pytest.mark.parametrize(
    ("space", "size"),
    [
        ({"freeze_layers": [FREEZE]}, 4),
        ({"strategy": [STRATEGY], "lora_r": [LORA_R]}, 3),  # full, lora x {4, 8}
        ({"strategy": [STRATEGY], "lora_r": [LORA_R], "freeze_layers": [FREEZE]}, 12),
        ({"strategy": [STRATEGY], "learning_rate": [LR]}, None),
        ({}, 1),
    ],
)
def test_finite_size_walks_the_conditional_tree(space, size):
    assert finite_size(space, {}, sample_order(space)) == size


def test_plans():
    fixed = _plan({}, 3)
    assert (fixed.fixed_config, fixed.configs, fixed.trials, len(fixed.seeds)) == (True, 1, 3, 3)
    assert "fixed config" in fixed.summary() and fixed.fifo

    small = _plan({"freeze_layers": [Choice(type="choice", values=[0, 1])]}, 4)
    assert (small.configs, small.trials, small.space_size, small.enumerated) == (2, 2, 2, True)
    assert "exhausted after 2" in small.summary()

    repeated = _plan({"learning_rate": [LR]}, 6, repeats=3)
    assert (repeated.configs, repeated.trials, repeated.enumerated, repeated.fifo) == (2, 6, False, True)
    assert repeated.scheduler_line("asha").startswith("scheduler fifo (not asha")

    large = _plan({"freeze_layers": [FREEZE]}, 2)  # finite, larger than the budget: TPE
    assert (large.configs, large.enumerated, large.fifo) == (2, False, False)
    assert large.scheduler_line("asha") == "scheduler asha"


def _searcher(space, plan, state_uri=None, cost=None) -> PlannedSearch:
    s = planned_search(
        plan,
        DefineByRun(space, {}, {}),
        metric="eval_accuracy",
        mode="max",
        seed=0,
        state_uri=state_uri,
        cost=cost,
    )
    s.set_search_properties("eval_accuracy", "max", {})
    return s


def _drain(searcher: PlannedSearch, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + 100):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            break
        out.append(config)
    return out


def test_enumeration_trains_each_config_once_per_seed_then_finishes():
    space = {"strategy": [STRATEGY], "lora_r": [LORA_R]}
    plan = _plan(space, 6, repeats=2)  # 3 configs in the space x 2 seeds
    searcher = _searcher(space, plan)
    configs = _drain(searcher)
    assert len(configs) == 6
    pairs = {(config_id(c), c["seed"]) for c in configs}
    assert len(pairs) == 6  # no (config, seed) twice
    assert {c["seed"] for c in configs} == set(plan.seeds)
    assert {(c["strategy"], c.get("lora_r")) for c in configs} == {("full", None), ("lora", 4), ("lora", 8)}


def test_relative_cost_counts_the_blocks_trained_per_epoch_times_epochs():
    assert relative_cost({"freeze_layers": 0}, 6) == 7  # 6 blocks and the head
    assert relative_cost({"freeze_layers": 6}, 6) == 1  # head only: the prefix is cached
    assert relative_cost({"freeze_layers": 2, "epochs": 3}, 6) == 15
    assert relative_cost({"freeze_layers": 4, "strategy": "lora"}, 6) == 3
    # prompt tuning changes what every block sees: nothing is cached, all blocks run
    assert relative_cost({"freeze_layers": 4, "strategy": "prompt"}, 6) == 7
    assert relative_cost({"freeze_layers": "auto"}, 6) == 7  # unknown: counted as costly


def test_a_complete_enumeration_with_a_cost_hands_out_the_costliest_configs_first():
    space = {"freeze_layers": [Choice(type="choice", values=[4, 0, 6, 2])]}
    plan = _plan(space, 8, repeats=2)
    assert plan.enumerated
    cost = lambda config: relative_cost(config, 6)  # noqa: E731
    ordered = _drain(_searcher(space, plan, cost=cost))
    assert [c["freeze_layers"] for c in ordered] == [0, 0, 2, 2, 4, 4, 6, 6]  # seeds of a config in a row
    assert {c["seed"] for c in ordered[:2]} == set(plan.seeds)
    as_sampled = [c["freeze_layers"] for c in _drain(_searcher(space, plan))]
    assert sorted(as_sampled) == [0, 0, 2, 2, 4, 4, 6, 6]
    assert as_sampled != [0, 0, 2, 2, 4, 4, 6, 6]  # Optuna's own order (seeded) is another one


def test_optuna_is_told_each_configs_mean_over_its_seeds():
    space = {"learning_rate": [LR]}
    searcher = _searcher(space, _plan(space, 4, repeats=2))
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert configs[0]["learning_rate"] == configs[1]["learning_rate"] != configs[2]["learning_rate"]
    for i, value in enumerate([0.6, 0.8, 0.5, 0.7]):
        searcher.on_trial_complete(f"t{i}", {"eval_accuracy": value})
    study = searcher.inner._ot_study
    assert sorted(round(t.value, 6) for t in study.trials if t.value is not None) == [0.6, 0.7]


def test_a_duplicate_suggestion_is_resampled_never_trained():
    space = {"freeze_layers": [Choice(type="choice", values=[0, 1])]}
    plan = TrialPlan(configs=3, seeds=(0,), space_size=None, fixed_config=False, requested_trials=3)
    searcher = _searcher(space, plan)  # TPE over 2 values, asked for 3 configs
    configs = []
    for i in range(3):
        config = searcher.suggest(f"t{i}")
        if isinstance(config, dict):
            configs.append(config)
            searcher.on_trial_complete(f"t{i}", {"eval_accuracy": 0.5})
    assert sorted(c["freeze_layers"] for c in configs) == [0, 1]
    assert searcher.exhausted
    assert len(searcher.inner._ot_study.trials) <= 2 + MAX_RESAMPLES


def test_a_restored_searcher_never_samples_a_config_again(tmp_path):
    """Saved as JSON and restored into a new searcher (what a resume does): no config twice."""
    space = {"strategy": [STRATEGY], "lora_r": [LORA_R]}
    searcher = _searcher(space, _plan(space, 3))
    first = searcher.suggest("t0")
    searcher.on_trial_complete("t0", {"eval_accuracy": 0.5})
    path = tmp_path / "searcher.json"
    searcher.save(str(path))
    json.loads(path.read_text())  # plain JSON, nothing executable
    restored = _searcher(space, _plan(space, 3))
    restored.restore(str(path))
    assert [t.value for t in restored.inner._ot_study.trials] == [0.5]  # Optuna's history replayed
    restored.on_trial_result("t0", {"eval_accuracy": 0.5})  # a late report of a config asked before
    rest = _drain(restored, start=1)
    keys = [config_id(c) for c in [first, *rest]]
    assert len(keys) == 3 == len(set(keys))


def test_a_config_whose_seeds_span_a_resume_is_told_once_with_their_mean(tmp_path):
    space = {"learning_rate": [LR]}
    searcher = _searcher(space, _plan(space, 2, repeats=2))
    a, b = searcher.suggest("t0"), searcher.suggest("t1")
    assert a["learning_rate"] == b["learning_rate"]
    searcher.on_trial_complete("t0", {"eval_accuracy": 0.6})
    searcher.save(str(tmp_path / "s.json"))
    restored = _searcher(space, _plan(space, 2, repeats=2))
    restored.restore(str(tmp_path / "s.json"))
    assert restored.inner._ot_study.trials == []  # unfinished: not told yet
    again = restored.suggest("n0")  # a new Tune trial that continues t1 (its checkpoints, its run)
    assert again == {**b, RESUME_KEY: "t1"}
    restored.on_trial_result("n0", {"eval_accuracy": 0.8, "epoch": 1})  # reports from the resumed seed
    restored.on_trial_complete("n0", {"eval_accuracy": 0.8})  # ... and it finishes
    trials = restored.inner._ot_study.trials
    assert len(trials) == 1 and trials[0].value == pytest.approx(0.7)
    assert trials[0].params["learning_rate"] == a["learning_rate"]
    assert restored.suggest("n1") == "FINISHED"


def test_state_is_written_after_every_change_and_failed_trials_run_again(tmp_path):
    """What a resume reads: the JSON the searcher keeps current (Tune's pickles are never read)."""
    space = {"learning_rate": [LR]}
    path = tmp_path / "exp" / STATE_FILE
    searcher = _searcher(space, _plan(space, 3), state_uri=str(path))
    first, second = searcher.suggest("t0"), searcher.suggest("t1")
    assert set(json.loads(path.read_text())["trials"]) == {"t0", "t1"}  # handed out: written at once
    searcher.on_trial_complete("t0", {"eval_accuracy": 0.6})
    searcher.on_trial_complete("t1", error=True)
    state = json.loads(path.read_text())
    assert state["trials"] == {} and set(state["failed"]) == {"t1"}
    restored = _searcher(space, _plan(space, 3))
    restored.resume_from(state)
    assert restored.suggest("n0") == {**second, RESUME_KEY: "t1"}  # the failed trial, from its checkpoint
    assert [t.value for t in restored.inner._ot_study.trials] == [0.6]  # t1's config is not told yet
    third = restored.suggest("n1")
    assert RESUME_KEY not in third and config_id(third) not in {config_id(first), config_id(second)}
    assert restored.suggest("n2") == "FINISHED"


def test_fixed_config_is_one_config_with_a_seed_per_trial():
    plan = _plan({}, 3, train_seed=5)
    searcher = _searcher({}, plan)
    configs = _drain(searcher)
    assert [c["seed"] for c in configs] == list(plan.seeds) and configs[0] == {"seed": 5}


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"search__repeats": 2}, "search.num_trials: 3 is not a multiple of search.repeats (2); use 2 or 4"),
        (
            {"search__repeats": 3, "search__space__seed": {"type": "choice", "values": [0, 1]}},
            "search.space.seed: seeds come from search.repeats",
        ),
    ],
)
def test_repeats_that_do_not_fit_are_refused(data_dir, overrides, needle):
    path = write_sweep(data_dir, sweep_dict(**overrides))
    with pytest.raises(SpecError) as exc:
        resolve_sweep(load_spec(path), path, data_dir / "work")
    assert any(needle in line for line in str(exc.value).splitlines()), str(exc.value)


def test_validate_says_what_will_run(data_dir):
    from tests.conftest import cli

    spec = sweep_dict(
        search__num_trials=4, search__space={"freeze_layers": {"type": "choice", "values": [0, 1]}}
    )
    done = cli("validate", str(write_sweep(data_dir, spec)))
    assert done.returncode == 0, done.stderr
    assert "2 trials: 2 of the 2 configs of a finite space x 1 seed" in done.stdout
    assert "exhausted after 2" in done.stdout

    done = cli("validate", str(write_sweep(data_dir, sweep_dict(search__space={}, search__num_trials=3))))
    assert done.returncode == 0, done.stderr
    assert "3 trials: a fixed config (no search.space) x 3 seeds" in done.stdout
    assert "scheduler fifo" in done.stdout


def test_trials_waiting_to_be_resumed_stay_in_the_saved_state(tmp_path):
    """More trials to resume than run at once: a second interruption must not lose the waiting ones."""
    space = {"learning_rate": [LR]}
    searcher = _searcher(space, _plan(space, 3))
    handed = [searcher.suggest(f"t{i}") for i in range(3)]
    searcher.on_trial_complete("t0", error=True)
    state = searcher.state()
    path = tmp_path / STATE_FILE
    resumed = _searcher(space, _plan(space, 3), state_uri=str(path))
    resumed.resume_from(state)
    assert resumed.suggest("n0")[RESUME_KEY] in {"t0", "t1", "t2"}  # one runs, two wait
    saved = json.loads(path.read_text())
    assert set(saved["trials"]) == {"t0", "t1", "t2"} and saved["failed"] == {}
    again = _searcher(space, _plan(space, 3))
    again.resume_from(saved)  # interrupted again before the others started
    configs = [again.suggest(f"m{i}") for i in range(3)]
    assert sorted(c[RESUME_KEY] for c in configs) == ["t0", "t1", "t2"]
    assert {config_id(c) for c in configs} == {config_id(c) for c in handed}
    assert again.suggest("m3") == "FINISHED"


@pytest.mark.parametrize(
    ("scheduler", "num_trials", "ordered"),
    [("fifo", 3, True), ("asha", 3, False), ("fifo", 2, False)],  # ASHA / not every config: as sampled
)
def test_a_sweep_orders_by_cost_only_where_the_order_changes_no_result(
    data_dir, scheduler, num_trials, ordered
):
    from orchestrator.runner import _cost_order

    space = {"freeze_layers": {"type": "choice", "values": [0, 1, 2]}}  # the tiny model has 2 blocks
    spec = sweep_dict(
        search__num_trials=num_trials, search__space=space, search__scheduler={"type": scheduler}
    )
    path = write_sweep(data_dir, spec)
    r = resolve_sweep(load_spec(path), path, data_dir / "work")
    cost = _cost_order(r)
    assert (cost is not None) == ordered
    if cost is not None:
        assert cost({"freeze_layers": 0}) > cost({"freeze_layers": 1}) > cost({"freeze_layers": 2})
