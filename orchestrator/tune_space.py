"""The one adapter from sweep-file domains (inclusive bounds) to the searcher: Optuna define-by-run.

Ray's ``OptunaSearch`` accepts a function of an Optuna trial as its space. :class:`DefineByRun`
samples the knobs in dependency order, each from the first of its domains whose ``when`` holds
for the values sampled so far, so a conditional knob (``lora_r`` with ``when: {strategy: lora}``)
exists, reaches the worker and is logged only in the trials where its condition holds. Optuna's
``suggest_int`` is inclusive on both ends, as the sweep file is; no bound is shifted here.
"""

from __future__ import annotations

from typing import Any

from search_spaces.domains import Choice, IntRange, LogUniform, Uniform
from trainables.config import SUBKNOB_OWNERS

__all__ = ["DefineByRun", "suggest"]


def suggest(trial: Any, key: str, domain: Any) -> Any:
    """Sample ``domain`` as Optuna parameter ``key`` (the knob's name, end to end)."""
    if isinstance(domain, LogUniform):
        return trial.suggest_float(key, domain.low, domain.high, log=True)
    if isinstance(domain, Uniform):
        return trial.suggest_float(key, domain.low, domain.high)
    if isinstance(domain, IntRange):
        if domain.high == "auto":
            raise ValueError("resolve high: auto before sampling")
        return trial.suggest_int(key, domain.low, int(domain.high))
    if isinstance(domain, Choice):
        return trial.suggest_categorical(key, list(domain.values))
    raise TypeError(f"unknown domain {type(domain).__name__}")


class DefineByRun:
    """Picklable define-by-run space (``Tuner.restore`` unpickles the searcher that holds it).

    ``space``: knob -> domains (alternatives with exclusive ``when``); ``fixed``: the constants every
    trial gets (Tune's ``param_space``); ``fallback``: train values for conditional knobs where no
    domain applies, and strategy sub-knobs, passed only to trials of their strategy.
    Returns the constants to add to the sampled values (Ray merges both into the trial config).
    """

    def __init__(self, space: dict[str, list[Any]], fixed: dict[str, Any], fallback: dict[str, Any]):
        from orchestrator.space import sample_order

        self.space, self.fixed, self.fallback = space, fixed, fallback
        self.order = sample_order(space)

    @staticmethod
    def _used(key: str, values: dict[str, Any]) -> bool:
        return SUBKNOB_OWNERS.get(key, values.get("strategy")) == values.get("strategy")

    def __call__(self, trial: Any) -> dict[str, Any]:
        values = dict(self.fixed)
        constants: dict[str, Any] = {}
        for key in self.order:
            domain = next((d for d in self.space[key] if d.applies(values)), None)
            if domain is not None:
                values[key] = suggest(trial, key, domain)
            elif key in self.fallback and self._used(key, values):
                values[key] = constants[key] = self.fallback[key]
        for key, value in self.fallback.items():
            if key not in self.space and self._used(key, values):
                constants[key] = value
        return constants
