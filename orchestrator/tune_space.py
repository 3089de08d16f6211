"""The one adapter from sweep-file domains (inclusive bounds) to Ray Tune domains.

Tune's ``randint(low, high)`` excludes ``high``; this module alone adds the ``+1``.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from search_spaces.domains import Choice, IntRange, LogUniform, Uniform

__all__ = ["to_param_space", "to_tune"]


def to_tune(domain: Any) -> Any:
    if isinstance(domain, LogUniform):
        return tune.loguniform(domain.low, domain.high)
    if isinstance(domain, Uniform):
        return tune.uniform(domain.low, domain.high)
    if isinstance(domain, IntRange):
        if domain.high == "auto":
            raise ValueError("resolve high: auto before converting to Tune")
        return tune.randint(domain.low, int(domain.high) + 1)  # inclusive -> exclusive upper bound
    if isinstance(domain, Choice):
        return tune.choice(list(domain.values))
    raise TypeError(f"unknown domain {type(domain).__name__}")


def to_param_space(space: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Flat Tune ``param_space``: searched knobs as Tune domains plus the fixed knobs as constants."""
    return {**fixed, **{key: to_tune(domain) for key, domain in space.items()}}
