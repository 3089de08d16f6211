"""The strategy seam: a tiny ABC, a registry, and the checks every strategy shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from search_spaces.errors import UserError
from trainables.freezing import FreezeError, locate_layers, resolve_depth

__all__ = ["STRATEGIES", "Strategy", "StrategyError", "get_strategy", "register_strategy", "unwrap"]


class StrategyError(UserError):
    """One-line, user-facing message naming the knob and the fix."""


class Strategy(ABC):
    """What one trial trains. Subclasses set ``name`` and ``knobs`` and implement :meth:`_apply`.

    Contract (checked by ``tests/test_strategies.py`` for every registered strategy):

    * :meth:`validate` returns problems as one-line messages and never touches the model; the
      driver calls it before Ray starts (on a model built on the ``meta`` device);
    * :meth:`apply` runs on the bare model *before* the DDP wrap and returns the model to train
      (possibly a ``peft`` wrapper). Bad input raises :class:`StrategyError` with the model
      untouched; applying twice with the same config changes nothing;
    * the embeddings and the bottom ``freeze_layers`` blocks are frozen and run in eval mode;
    * :meth:`standalone` returns the weights to export (adapters merged where possible).
    """

    name: ClassVar[str]
    knobs: ClassVar[tuple[str, ...]] = ()  # the sub-knobs this strategy reads (trainables.config)
    mergeable: ClassVar[bool] = False  # standalone() folds what was trained into plain weights
    # The frozen prefix sees the plain input embeddings, so its output can be cached
    # (trainables.prefix_cache); False where the strategy changes what the blocks see.
    reads_frozen_prefix: ClassVar[bool] = True

    def validate(self, model: torch.nn.Module, cfg: Any, *, max_length: int | None = None) -> list[str]:
        """Problems with running ``cfg`` on ``model``; empty when it can run."""
        k = cfg.freeze_layers
        if k == 0 and self.name == "full":
            return []  # full fine-tuning works on any model, mappable or not
        try:
            layer_map = locate_layers(model)
        except FreezeError as exc:
            return [f"strategy {self.name}: {exc}"]
        depth = resolve_depth(k, model)
        if not 0 <= depth <= layer_map.num_blocks:
            n = layer_map.num_blocks
            return [
                f"freeze_layers={k} is out of range for {type(model).__name__}: it has {n} blocks; use 0..{n} or auto"
            ]
        return self._check(model, depth, cfg, max_length=max_length)

    def _check(self, model: torch.nn.Module, depth: int, cfg: Any, *, max_length: int | None) -> list[str]:
        """Strategy-specific problems (``depth`` is the resolved, in-range ``freeze_layers``)."""
        return []

    def apply(self, model: torch.nn.Module, cfg: Any) -> torch.nn.Module:
        """Freeze, wrap and mark trainable what this strategy trains; return the model to train."""
        if self.is_applied(model):
            return model
        problems = self.validate(model, cfg)
        if problems:
            raise StrategyError(problems[0])
        return self._apply(model, resolve_depth(cfg.freeze_layers, model), cfg)

    @abstractmethod
    def _apply(self, model: torch.nn.Module, depth: int, cfg: Any) -> torch.nn.Module: ...

    def is_applied(self, model: torch.nn.Module) -> bool:
        """True when ``model`` is already this strategy's wrapper (``apply`` is then a no-op)."""
        return False

    def standalone(self, model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
        """``(model, merged)``: the trained model as plain weights when possible (``merged=True``)."""
        return model, False

    def settings(self, cfg: Any) -> dict[str, Any]:
        """The resolved settings a trial records: this strategy's sub-knobs."""
        return {k: getattr(cfg, k) for k in self.knobs}


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy) -> Strategy:
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise StrategyError(f"strategy: unknown '{name}'; use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The classifier inside a ``peft`` wrapper (or ``model`` itself): where ``config`` lives."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
