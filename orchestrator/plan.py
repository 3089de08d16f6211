"""What a sweep will train, decided before Ray starts: configs, seeds, trials.

* **No space** (every knob in ``train:``): a fixed-config sweep, ``num_trials`` seeds of one config.
* **Repeats** (``search.repeats: k``): every sampled config trains with the same k seeds, so
  configs are compared on paired seeds; ``num_trials`` counts trials (training runs), so the
  sweep samples ``num_trials / k`` configs.
* **A finite space** (every domain a trial can meet is a choice or an int range): at most its
  size in configs; the searcher enumerates it (no config twice) and the sweep ends when it is
  exhausted.

Seeds: the first is ``train.seed`` (so ``repeats: 1`` and the first seed of ``repeats: k``
train the same runs); the others are derived from ``search.seed`` by hashing.
With more than one seed per config the scheduler is FIFO: every seed trains the full budget,
so the spread over seeds is measured, never raced away by ASHA (decided in :func:`plan_trials`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from search_spaces.domains import Choice, IntRange

__all__ = [
    "ENUMERATION_LIMIT",
    "RESUME_KEY",
    "SEED_KEY",
    "TrialPlan",
    "config_id",
    "derived_seeds",
    "finite_size",
    "plan_trials",
    "relative_cost",
    "trial_key",
]

ENUMERATION_LIMIT = 100_000  # finite spaces larger than this are sampled like continuous ones
SEED_KEY = "seed"
# A resumed trial's own id, in the config Tune gets for it: its Train run, checkpoints and MLflow
# run are found by this id (the new Tune trial that carries it has another one). Not a knob.
RESUME_KEY = "resume_of_trial"


def trial_key(trial: Any) -> str:
    """The id a Tune trial is recorded under: its own, or the one it resumes (``RESUME_KEY``)."""
    return str((getattr(trial, "config", None) or {}).get(RESUME_KEY) or trial.trial_id)


def derived_seeds(train_seed: int, search_seed: int, repeats: int) -> list[int]:
    """``train_seed`` first, then ``repeats - 1`` seeds hashed from ``search_seed`` (distinct)."""
    seeds = [train_seed]
    i = 1
    while len(seeds) < repeats:
        digest = hashlib.sha256(f"orchestrator-seed/{search_seed}/{i}".encode()).digest()
        seed = int.from_bytes(digest[:4], "big") % 2**31
        if seed not in seeds:
            seeds.append(seed)
        i += 1
    return seeds


def config_id(config: dict[str, Any]) -> str:
    """A stable id of a trial's config without its seed (the same for every repeat of it)."""
    items = {k: v for k, v in config.items() if k not in (SEED_KEY, RESUME_KEY)}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _values(domain: Any) -> list[Any] | None:
    if isinstance(domain, Choice):
        return list(domain.values)
    if isinstance(domain, IntRange):
        return list(range(domain.low, int(domain.high) + 1))
    return None  # continuous


def finite_size(space: dict[str, list[Any]], fixed: dict[str, Any], order: list[str]) -> int | None:
    """How many distinct configs the define-by-run space holds; None if continuous or too large.

    Walks the same tree the searcher samples: knobs in ``order``, each from the first of its
    domains whose ``when`` holds for the values chosen so far (a knob no domain applies to is
    absent, as in the trial).
    """

    def count(i: int, values: dict[str, Any]) -> int | None:
        if i == len(order):
            return 1
        domain = next((d for d in space[order[i]] if d.applies(values)), None)
        if domain is None:
            return count(i + 1, values)
        options = _values(domain)
        if options is None:
            return None
        total = 0
        for v in options:
            n = count(i + 1, {**values, order[i]: v})
            if n is None:
                return None
            total += n
            if total > ENUMERATION_LIMIT:
                return None
        return total

    return count(0, dict(fixed)) if space else 1


def relative_cost(config: dict[str, Any], num_layers: int) -> float:
    """What a config's trial costs, in blocks run forward and backward per epoch times epochs.

    For ordering only: a complete enumeration under FIFO hands out its costliest configs first,
    so the concurrent slots end together (a long trial started last runs alone at the end). The
    frozen prefix is computed once per sweep (prefix cache) unless the strategy changes what the
    blocks see, so ``freeze_layers`` = k leaves L - k blocks (plus the head) per epoch.
    """
    from trainables.strategies import get_strategy

    strategy = get_strategy(str(config.get("strategy", "full")))
    frozen = config.get("freeze_layers", 0)
    cached = frozen if isinstance(frozen, int) and strategy.reads_frozen_prefix else 0
    epochs = config.get("epochs", 1)
    return float(epochs if isinstance(epochs, int) else 1) * (num_layers - min(cached, num_layers) + 1)


@dataclass(frozen=True)
class TrialPlan:
    """How many configs, which seeds, how many trials; ``space_size`` None = not enumerable."""

    configs: int
    seeds: tuple[int, ...]
    space_size: int | None
    fixed_config: bool
    requested_trials: int

    @property
    def trials(self) -> int:
        return self.configs * len(self.seeds)

    @property
    def enumerated(self) -> bool:
        """The searcher walks the whole finite space (no TPE): it is not larger than the budget."""
        return not self.fixed_config and self.space_size is not None and self.space_size <= self.configs

    @property
    def fifo(self) -> bool:
        """More than one seed per config: every seed trains the full budget (no ASHA)."""
        return len(self.seeds) > 1

    def scheduler_line(self, requested: str) -> str:
        """The scheduler the sweep runs with, and why when it is not the requested one."""
        if requested == "asha" and self.fifo:
            return f"scheduler fifo (not asha: each of the {len(self.seeds)} seeds of a config trains every epoch)"
        return f"scheduler {requested}"

    def summary(self) -> str:
        """One line for ``validate`` and ``run``: what will be trained."""
        seeds = len(self.seeds)
        if self.fixed_config:
            what = "a fixed config (no search.space)"
        elif self.space_size is not None:
            what = f"{self.configs} of the {self.space_size} configs of a finite space"
        else:
            what = f"{self.configs} sampled configs"
        line = f"{self.trials} trials: {what} x {seeds} seed{'s' if seeds > 1 else ''}"
        if self.trials < self.requested_trials:
            line += (
                f" (search.num_trials {self.requested_trials}: the space is exhausted after {self.trials})"
            )
        return line


def plan_trials(
    space: dict[str, list[Any]],
    fixed: dict[str, Any],
    order: list[str],
    *,
    num_trials: int,
    repeats: int,
    train_seed: int,
    search_seed: int,
) -> TrialPlan:
    """The trials a sweep trains (``num_trials`` and ``repeats`` already validated to fit)."""
    if not space:
        seeds = derived_seeds(train_seed, search_seed, num_trials)
        return TrialPlan(1, tuple(seeds), 1, True, num_trials)
    size = finite_size(space, fixed, order)
    configs = num_trials // repeats
    if size is not None:
        configs = min(configs, size)
    return TrialPlan(configs, tuple(derived_seeds(train_seed, search_seed, repeats)), size, False, num_trials)
