"""The Tune searcher of a sweep: Optuna's configs, each trained with every seed of the plan.

:class:`PlannedSearch` wraps Ray's ``OptunaSearch`` (TPE, or an enumeration of a finite space
with Optuna's ``BruteForceSampler``) or nothing at all (a fixed-config sweep):

* each config Optuna suggests becomes ``len(seeds)`` trials, one per seed, in a row;
* a config already trained in this sweep is never trained again: Optuna is told the duplicate
  failed (it is never run) and asked again, at most :data:`MAX_RESAMPLES` times;
* Optuna is told a config's result once all its seeds are done: the mean of their values
  (a config whose seeds all failed is told as failed);
* when the plan's configs are sampled (or the space is exhausted) it answers ``FINISHED``.

Tune saves it with the experiment (:meth:`PlannedSearch.save`) as JSON, never a pickle: the
configs handed out, their seeds, what they reported, and Optuna's view of each (params and
distributions). A resume reads it back and replays the finished configs into Optuna's study,
so no config is sampled again and TPE keeps its history.
"""

from __future__ import annotations

import json
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from orchestrator.plan import SEED_KEY, TrialPlan, config_id

__all__ = ["MAX_RESAMPLES", "Enumeration", "PlannedSearch", "planned_search"]

MAX_RESAMPLES = 50


class Enumeration(optuna.samplers.BruteForceSampler):
    """Optuna's brute-force sampler without its ``study.stop()`` (valid only inside ``optimize``).

    Tune drives the study by ask/tell, where that call raises; the plan knows the space's size
    and ends the sweep instead.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        pass


@dataclass
class _Config:
    inner_id: str  # the id Optuna knows this config by
    config: dict[str, Any]
    pending: int  # seeds not finished yet
    values: list[float] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # Optuna's view: the sampled params ...
    distributions: dict[str, str] = field(default_factory=dict)  # ... and their distributions (JSON)


class PlannedSearch(Searcher):
    def __init__(self, inner: Searcher | None, plan: TrialPlan, *, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.inner, self.seeds, self.configs = inner, list(plan.seeds), plan.configs
        self._asked = 0  # configs asked of Optuna, duplicates included
        self._sampled: dict[str, _Config] = {}  # config key -> what its seeds report
        self._queue: list[tuple[str, int]] = []  # (config key, seed) still to hand out
        self._trials: dict[str, str] = {}  # Tune trial id -> config key
        self.exhausted = False  # the space ran out of new configs before the plan did

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        if self.inner is not None:
            self.inner.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _next_config(self) -> str | None:
        """Ask Optuna for a config not trained in this sweep; its key, or None when none is left."""
        for _ in range(MAX_RESAMPLES):
            self._asked += 1
            inner_id = f"config-{self._asked}"
            config = self.inner.suggest(inner_id) if self.inner is not None else {}
            if not isinstance(config, dict):  # None or FINISHED from the inner searcher
                return None
            key = config_id(config)
            if key not in self._sampled:
                self._sampled[key] = _Config(inner_id, config, len(self.seeds), **self._optuna_view(inner_id))
                return key
            self.inner.on_trial_complete(inner_id, error=True)  # a duplicate: never trained
        return None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._queue:
            if len(self._sampled) >= self.configs:
                return Searcher.FINISHED
            key = self._next_config()
            if key is None:
                self.exhausted = True
                return Searcher.FINISHED
            self._queue = [(key, seed) for seed in self.seeds]
        key, seed = self._queue.pop(0)
        self._trials[trial_id] = key
        return {**self._sampled[key].config, SEED_KEY: seed}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        key = self._trials.get(trial_id)
        if key is None or self.inner is None or len(self.seeds) > 1:
            return
        inner_id = self._sampled[key].inner_id
        if inner_id in getattr(self.inner, "_ot_trials", {}):  # not for configs asked before a resume
            self.inner.on_trial_result(inner_id, result)

    def _optuna_view(self, inner_id: str) -> dict[str, Any]:
        trial = getattr(self.inner, "_ot_trials", {}).get(inner_id)
        if trial is None:
            return {}
        to_json = optuna.distributions.distribution_to_json
        return {
            "params": dict(trial.params),
            "distributions": {k: to_json(d) for k, d in trial.distributions.items()},
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        key = self._trials.pop(trial_id, None)
        if key is None:
            return
        entry = self._sampled[key]
        entry.pending -= 1
        if not error and result and self.metric in result:
            entry.values.append(float(result[self.metric]))
        if entry.pending == 0 and self.inner is not None:
            self._tell(entry)

    def _tell(self, entry: _Config) -> None:
        """Tell Optuna a config's mean over its seeds (failed when none reported)."""
        value = statistics.fmean(entry.values) if entry.values else None
        if entry.inner_id in getattr(self.inner, "_ot_trials", {}):  # asked in this process
            if value is None:
                self.inner.on_trial_complete(entry.inner_id, error=True)
            else:
                self.inner.on_trial_complete(entry.inner_id, {self.metric: value})
        else:  # asked before a resume: add what Optuna would have been told
            self._add_to_study(entry, value)

    def _add_to_study(self, entry: _Config, value: float | None) -> None:
        from optuna.trial import TrialState, create_trial

        dists = {k: optuna.distributions.json_to_distribution(v) for k, v in entry.distributions.items()}
        state = TrialState.COMPLETE if value is not None else TrialState.FAIL
        trial = create_trial(params=entry.params, distributions=dists, value=value, state=state)
        self.inner._ot_study.add_trial(trial)

    def save(self, checkpoint_path: str) -> None:
        state = {
            "asked": self._asked,
            "sampled": {k: asdict(v) for k, v in self._sampled.items()},
            "queue": self._queue,
            "trials": self._trials,
            "exhausted": self.exhausted,
        }
        with open(checkpoint_path, "w") as f:
            json.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        """Read :meth:`save`'s JSON (never a pickle) and replay the finished configs into Optuna."""
        with open(checkpoint_path) as f:
            state = json.load(f)
        self._asked, self.exhausted = int(state["asked"]), bool(state["exhausted"])
        self._sampled = {k: _Config(**v) for k, v in state["sampled"].items()}
        self._queue = [(k, int(seed)) for k, seed in state["queue"]]
        self._trials = dict(state["trials"])
        study = getattr(self.inner, "_ot_study", None)
        if study is not None and not study.trials:  # a fresh study: give it the sweep's history
            for entry in self._sampled.values():
                if entry.pending == 0:
                    self._add_to_study(entry, statistics.fmean(entry.values) if entry.values else None)


def planned_search(plan: TrialPlan, space_fn: Any, *, metric: str, mode: str, seed: int) -> PlannedSearch:
    """The sweep's searcher: none for a fixed config, an enumeration for a small finite space, else TPE."""
    from ray.tune.search.optuna import OptunaSearch

    if plan.fixed_config:
        return PlannedSearch(None, plan, metric=metric, mode=mode)
    if plan.enumerated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = Enumeration(seed=seed)
        inner = OptunaSearch(space=space_fn, metric=metric, mode=mode, sampler=sampler)
    else:
        inner = OptunaSearch(space=space_fn, metric=metric, mode=mode, seed=seed)  # TPE, seeded
    return PlannedSearch(inner, plan, metric=metric, mode=mode)
