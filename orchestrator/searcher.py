"""The Tune searcher of a sweep: Optuna's configs, each trained with every seed of the plan.

:class:`PlannedSearch` wraps Ray's ``OptunaSearch`` (TPE, or an enumeration of a finite space
with Optuna's ``BruteForceSampler``) or nothing at all (a fixed-config sweep):

* each config Optuna suggests becomes ``len(seeds)`` trials, one per seed, in a row;
* a config already trained in this sweep is never trained again: Optuna is told the duplicate
  failed (it is never run) and asked again, at most :data:`MAX_RESAMPLES` times;
* Optuna is told a config's result once all its seeds are done: the mean of their values
  (a config whose seeds all failed is told as failed);
* when the plan's configs are sampled (or the space is exhausted) it answers ``FINISHED``;
* given a ``cost`` (a complete enumeration under FIFO, where the order changes no result), it
  draws every config at the first request and hands out the costliest first.

Its state is JSON, never a pickle, written to the sweep's storage after every change
(:data:`STATE_FILE`): the configs handed out, their seeds, what they reported, Optuna's view of
each (params and distributions), and the trials handed out but not ended (or ended in an
error). A resume builds a fresh Tuner around :meth:`PlannedSearch.resume_from` that state: the
finished configs are replayed into Optuna's study (no config is sampled again, TPE keeps its
history), and the unfinished trials are handed out first, each with ``RESUME_KEY`` = its own
id, so it continues from its own checkpoints in its own MLflow run. Nothing Tune pickled into
the storage (``tuner.pkl``, searcher and experiment state) is ever read.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher

from orchestrator.plan import RESUME_KEY, SEED_KEY, TrialPlan, config_id

__all__ = ["MAX_RESAMPLES", "STATE_FILE", "Enumeration", "PlannedSearch", "planned_search"]

MAX_RESAMPLES = 50
STATE_FILE = "orchestrator-search.json"  # in the sweep's experiment directory


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
    def __init__(
        self,
        inner: Searcher | None,
        plan: TrialPlan,
        *,
        metric: str,
        mode: str,
        state_uri: str | None = None,
        cost: Callable[[dict[str, Any]], float] | None = None,
    ):
        super().__init__(metric=metric, mode=mode)
        self.cost = cost
        self.inner, self.seeds, self.configs = inner, list(plan.seeds), plan.configs
        self.state_uri = state_uri  # where the state is written after every change (None: nowhere)
        self._asked = 0  # configs asked of Optuna, duplicates included
        self._sampled: dict[str, _Config] = {}  # config key -> what its seeds report
        self._queue: list[tuple[str, int]] = []  # (config key, seed) still to hand out
        self._trials: dict[str, tuple[str, int]] = {}  # trial id -> (config key, seed), not ended
        self._failed: dict[str, tuple[str, int]] = {}  # trial id -> (config key, seed), ended in error
        self._resume: list[tuple[str, str, int]] = []  # (trial id, key, seed) to hand out first
        self._ids: dict[str, str] = {}  # Tune trial id -> the trial id it resumes
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

    def _draw_all(self) -> None:
        """Every config of the plan at once, queued costliest first (ties in Optuna's order)."""
        keys = []
        while len(self._sampled) < self.configs:
            key = self._next_config()
            if key is None:
                self.exhausted = True
                break
            keys.append(key)
        keys.sort(key=lambda k: -self.cost(self._sampled[k].config))
        self._queue = [(key, seed) for key in keys for seed in self.seeds]

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self._queue and self.cost is not None and not self._sampled:
            self._draw_all()
        if self._resume:  # unfinished trials of the sweep before it was interrupted
            resumed, key, seed = self._resume.pop(0)
            self._ids[trial_id] = resumed
            self._trials[resumed] = (key, seed)
            self._persist()
            return {**self._sampled[key].config, SEED_KEY: seed, RESUME_KEY: resumed}
        if not self._queue:
            if len(self._sampled) >= self.configs or self.exhausted:
                return Searcher.FINISHED
            key = self._next_config()
            if key is None:
                self.exhausted = True
                self._persist()
                return Searcher.FINISHED
            self._queue = [(key, seed) for seed in self.seeds]
        key, seed = self._queue.pop(0)
        self._trials[trial_id] = (key, seed)
        self._persist()
        return {**self._sampled[key].config, SEED_KEY: seed}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        handed = self._trials.get(self._ids.get(trial_id, trial_id))
        if handed is None or self.inner is None or len(self.seeds) > 1:
            return
        inner_id = self._sampled[handed[0]].inner_id
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
        own = self._ids.pop(trial_id, trial_id)
        handed = self._trials.pop(own, None)
        if handed is None:
            return
        if error:  # a resume trains it again from its last checkpoint
            self._failed[own] = handed
        entry = self._sampled[handed[0]]
        entry.pending -= 1
        if not error and result and self.metric in result:
            entry.values.append(float(result[self.metric]))
        if entry.pending == 0 and self.inner is not None:
            self._tell(entry)
        self._persist()

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

    def state(self) -> dict[str, Any]:
        """What a resume needs, as JSON-able plain values."""
        return {
            "asked": self._asked,
            "sampled": {k: asdict(v) for k, v in self._sampled.items()},
            "queue": self._queue,
            # trials still waiting to be resumed are as unfinished as those running
            "trials": {**{t: (k, seed) for t, k, seed in self._resume}, **self._trials},
            "failed": self._failed,
            "exhausted": self.exhausted,
        }

    def _persist(self) -> None:
        """Write the state; a storage hiccup is retried, then logged (Tune saves it too), never fatal."""
        if self.state_uri is None:
            return
        for attempt in range(3):
            try:
                write_json_atomically(self.state_uri, self.state())
                return
            except OSError as exc:
                if attempt == 2:
                    logging.getLogger(__name__).warning(
                        "search state not written to %s: %s", self.state_uri, exc
                    )
                time.sleep(0.5 * (attempt + 1))

    def save(self, checkpoint_path: str) -> None:  # Tune's own checkpointing; never read back
        with open(checkpoint_path, "w") as f:
            json.dump(self.state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Read :meth:`save`'s JSON (never a pickle): see :meth:`resume_from`."""
        with open(checkpoint_path) as f:
            self.resume_from(json.load(f))

    def resume_from(self, state: dict[str, Any]) -> None:
        """Continue the sweep :meth:`state` describes: unfinished and failed trials first, each
        under its own id; finished configs replayed into Optuna's study."""
        self._asked, self.exhausted = int(state["asked"]), bool(state["exhausted"])
        self._sampled = {k: _Config(**v) for k, v in state["sampled"].items()}
        self._queue = [(k, int(seed)) for k, seed in state["queue"]]
        unfinished = {t: (k, int(seed)) for t, (k, seed) in state["trials"].items()}
        failed = {t: (k, int(seed)) for t, (k, seed) in state.get("failed", {}).items()}
        for key, _ in failed.values():
            self._sampled[key].pending += 1  # counted as ended when it failed; it runs again
        self._resume = [(t, k, seed) for t, (k, seed) in {**unfinished, **failed}.items()]
        self._trials, self._failed, self._ids = {}, {}, {}
        study = getattr(self.inner, "_ot_study", None)
        if study is not None and not study.trials:  # a fresh study: give it the sweep's history
            for entry in self._sampled.values():
                if entry.pending == 0:
                    self._add_to_study(entry, statistics.fmean(entry.values) if entry.values else None)


def write_json_atomically(uri: str, value: Any) -> None:
    """Write JSON to a local path (temp file + rename) or an object store (one PUT)."""
    import os
    import tempfile

    from trainables.data import filesystem

    text = json.dumps(value)
    if "://" in uri and not uri.startswith("file://"):
        fs, path = filesystem(uri)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
        return
    path = uri.removeprefix("file://")
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".search-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())  # the rename must never expose an empty file after a power loss
    os.replace(tmp, path)


def planned_search(
    plan: TrialPlan,
    space_fn: Any,
    *,
    metric: str,
    mode: str,
    seed: int,
    state_uri: str | None = None,
    cost: Callable[[dict[str, Any]], float] | None = None,
) -> PlannedSearch:
    """The sweep's searcher: none for a fixed config, an enumeration for a small finite space, else TPE.

    ``cost`` orders an enumeration (costliest config first); TPE's order is its own.
    """
    from ray.tune.search.optuna import OptunaSearch

    if plan.fixed_config:
        return PlannedSearch(None, plan, metric=metric, mode=mode, state_uri=state_uri)
    if plan.enumerated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = Enumeration(seed=seed)
        inner = OptunaSearch(space=space_fn, metric=metric, mode=mode, sampler=sampler)
        return PlannedSearch(inner, plan, metric=metric, mode=mode, state_uri=state_uri, cost=cost)
    inner = OptunaSearch(space=space_fn, metric=metric, mode=mode, seed=seed)  # TPE, seeded
    return PlannedSearch(inner, plan, metric=metric, mode=mode, state_uri=state_uri)
