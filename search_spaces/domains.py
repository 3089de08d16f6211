"""Parameter domains of a sweep's search space, as written in the sweep file.

Bounds are **inclusive** everywhere in this package: ``{type: int, low: 0, high: 6}`` can
produce 0 and 6. Only ``orchestrator.tune_space`` converts to Ray Tune's domains (where
``randint``'s upper bound is exclusive). ``high: auto`` on an int domain stands for "the
model's layer count" and must be resolved with :func:`resolve_auto` before use.

A domain may carry ``when: {knob: value}`` (or ``{knob: [v1, v2]}``; several knobs = all must
hold): it is sampled only for trials whose other knobs satisfy the condition (Optuna
define-by-run). A knob may list several domains with exclusive ``when`` conditions, e.g. one
learning-rate range per strategy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AUTO", "Choice", "Domain", "IntRange", "LogUniform", "Uniform", "exclusive", "resolve_auto"]

AUTO = "auto"

Scalar = bool | int | float | str


class _Domain(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    when: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description="sample only where these knobs have these values (all must hold)"
    )

    def conditions(self) -> dict[str, list[Scalar]]:
        """``when`` with every value as a list (empty: unconditional)."""
        return {k: (list(v) if isinstance(v, list) else [v]) for k, v in (self.when or {}).items()}

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds for a trial whose other knobs are ``values``."""
        return all(k in values and values[k] in allowed for k, allowed in self.conditions().items())

    def corners(self) -> list[Scalar]:
        """Extreme values of the domain (validated before Ray starts)."""
        raise NotImplementedError


class LogUniform(_Domain):
    """Floats sampled uniformly in log space over [low, high]."""

    type: Literal["loguniform"]
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self

    def corners(self) -> list[Scalar]:
        return [self.low, self.high]


class Uniform(_Domain):
    """Floats sampled uniformly over [low, high]."""

    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self

    def corners(self) -> list[Scalar]:
        return [self.low, self.high]


class IntRange(_Domain):
    """Integers in [low, high], both inclusive; ``high: auto`` = the model's layer count."""

    type: Literal["int"]
    low: int
    high: int | Literal["auto"]

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.high != AUTO and self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self

    def corners(self) -> list[Scalar]:
        if self.high == AUTO:
            raise ValueError("high: auto is unresolved")
        return [self.low, int(self.high)]


class Choice(_Domain):
    """One of a non-empty list of values (names of templates, batch sizes, ...)."""

    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)

    def corners(self) -> list[Scalar]:
        return list(self.values)


Domain = Annotated[LogUniform | Uniform | IntRange | Choice, Field(discriminator="type")]


def resolve_auto(domain: _Domain, num_layers: int) -> _Domain:
    """Return ``domain`` with ``high: auto`` replaced by ``num_layers`` (other domains unchanged)."""
    if isinstance(domain, IntRange) and domain.high == AUTO:
        return domain.model_copy(update={"high": num_layers})
    return domain


def exclusive(a: _Domain, b: _Domain) -> bool:
    """True when no trial can satisfy both conditions: they disagree on some knob."""
    ca, cb = a.conditions(), b.conditions()
    return any(not set(ca[k]) & set(cb[k]) for k in set(ca) & set(cb))
