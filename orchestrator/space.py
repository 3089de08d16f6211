"""The search space resolved and checked before Ray starts: values, conditions, strategies.

``check_space`` turns ``search.space`` + ``train:`` into a :class:`ResolvedSpace`:

* every domain's corners are valid values of its knob; ``auto`` is resolved (``freeze_layers``:
  the layer count; ``pooling``: what the checkpoint was trained for);
* ``when`` conditions name known knobs and values a trial can have; a knob's alternatives
  share one type and have exclusive conditions; nothing depends on itself;
* strategy sub-knobs (``lora_r``, ``prompt_tokens``, ...) appear only where their strategy runs;
* every strategy a trial can get is validated against the model (built on the ``meta`` device,
  no weights) for each pooling and the extreme ``freeze_layers`` it can meet.

All problems are appended to ``errors`` (one line each); the caller reports them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.spec import SweepSpec
from search_spaces.domains import Choice, IntRange, exclusive, resolve_auto
from trainables.config import STRATEGY_NAMES, SUBKNOB_OWNERS, Hyperparameters

__all__ = ["ResolvedSpace", "check_space", "possible_values", "sample_order"]


@dataclass
class ResolvedSpace:
    space: dict[str, list[Any]]  # knob -> its domains (alternatives), auto resolved, values coerced
    fixed: dict[str, Any]  # knobs every trial gets (Tune param_space constants)
    fallback: dict[str, Any] = field(default_factory=dict)  # train values used where no domain applies


class _Resolver:
    """Coerce values of a knob the way a trial will see them (``auto`` resolved)."""

    def __init__(self, layers: int | None, pooling_auto: str | None):
        self.layers, self.pooling_auto = layers, pooling_auto

    def __call__(self, key: str, value: Any) -> Any:
        value = getattr(Hyperparameters.model_validate({key: value}), key)
        if key == "freeze_layers" and value == "auto" and self.layers is not None:
            return self.layers
        if key == "pooling" and value == "auto" and self.pooling_auto is not None:
            return self.pooling_auto
        return value


def _domain_values(key: str, domain: Any, resolve: _Resolver, where: str, errors: list[str]) -> Any | None:
    try:
        corners = [resolve(key, v) for v in domain.corners()]
    except ValidationError as err:
        first = err.errors()[0]
        errors.append(f"{where}: {first['input']!r} is not a valid {key} ({first['msg']})")
        return None
    if isinstance(domain, Choice):
        unique = list(dict.fromkeys(corners))  # e.g. [auto, mean] where auto is mean
        domain = domain.model_copy(update={"values": unique})
    if key == "freeze_layers" and resolve.layers is not None and max(corners) > resolve.layers:
        errors.append(f"{where}: {max(corners)} exceeds the model's {resolve.layers} layers; use high: auto")
    return domain


def _resolve_when(key: str, domain: Any, resolve: _Resolver, where: str, errors: list[str]) -> Any | None:
    if not domain.when:
        return domain
    when: dict[str, list[Any]] = {}
    for knob, values in domain.conditions().items():
        if knob not in Hyperparameters.model_fields:
            errors.append(
                f"{where}.when: '{knob}' is not a train knob; use one of {', '.join(Hyperparameters.model_fields)}"
            )
            return None
        if knob == key:
            errors.append(f"{where}.when: a knob cannot depend on itself; condition on another knob")
            return None
        try:
            when[knob] = [resolve(knob, v) for v in values]
        except ValidationError as err:
            first = err.errors()[0]
            errors.append(f"{where}.when.{knob}: {first['input']!r} is not a valid {knob} ({first['msg']})")
            return None
    return domain.model_copy(update={"when": when})


def sample_order(space: dict[str, list[Any]]) -> list[str]:
    """Knobs in an order where every ``when`` knob is sampled before the knobs that depend on it.

    Raises ``ValueError`` naming a knob on a dependency cycle.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(key: str) -> None:
        if key in order:
            return
        if key in visiting:
            raise ValueError(key)
        visiting.add(key)
        for domain in space[key]:
            for dep in domain.conditions():
                if dep in space:
                    visit(dep)
        visiting.discard(key)
        order.append(key)

    for key in space:
        visit(key)
    return order


def _check_alternatives(key: str, domains: list[Any], errors: list[str]) -> None:
    where = f"search.space.{key}"
    if len(domains) < 2:
        return
    if any(not d.when for d in domains):
        errors.append(
            f"{where}: with several domains, each needs a when: condition (e.g. when: {{strategy: lora}})"
        )
    kinds = {(d.type, getattr(d, "values", None) and tuple(map(str, d.values))) for d in domains}
    if len(kinds) > 1:
        errors.append(f"{where}: alternatives must share one type (and a choice its values); use one type")
    for i, a in enumerate(domains):
        for j, b in enumerate(domains[i + 1 :], i + 2):
            if a.when and b.when and not exclusive(a, b):
                errors.append(
                    f"{where}: domains {i + 1} and {j} can both apply; make their when conditions exclusive"
                )


def possible_values(key: str, space: dict[str, list[Any]], fixed: dict[str, Any]) -> set[Any]:
    """Every value ``key`` can take in some trial (choice values or the fixed value)."""
    if key not in space:
        return {fixed.get(key)}
    values: set[Any] = set()
    for d in space[key]:
        values |= set(d.values) if isinstance(d, Choice) else {object()}  # ranges: anything
    if all(d.when for d in space[key]):
        values.add(fixed.get(key))  # outside the conditions, trials use the train value
    return values


def _check_conditions(space: dict[str, list[Any]], fixed: dict[str, Any], errors: list[str]) -> None:
    for key, domains in space.items():
        for domain in domains:
            for knob, allowed in domain.conditions().items():
                possible = possible_values(knob, space, fixed)
                if not any(v in possible for v in allowed) and not any(type(v) is object for v in possible):
                    shown = ", ".join(sorted(str(v) for v in possible if v is not None))
                    errors.append(
                        f"search.space.{key}.when: {knob} never takes {', '.join(map(str, allowed))} "
                        f"in this sweep (it can be: {shown}); fix the condition or search {knob}"
                    )


def _check_subknobs(
    spec: SweepSpec, space: dict[str, list[Any]], fixed: dict[str, Any], errors: list[str]
) -> None:
    strategies = possible_values("strategy", space, fixed)
    for knob, owner in SUBKNOB_OWNERS.items():
        if knob in spec.train.model_fields_set and owner not in strategies:
            errors.append(
                f"train.{knob}: only strategy {owner} uses it, and no trial runs {owner} "
                f"(strategy: {', '.join(sorted(map(str, strategies)))}); remove it or use strategy {owner}"
            )
        for i, domain in enumerate(space.get(knob, []), 1):
            where = f"search.space.{knob}" + (f" (domain {i})" if len(space[knob]) > 1 else "")
            cond = domain.conditions().get("strategy")
            if owner not in strategies:
                errors.append(f"{where}: only strategy {owner} uses it, and no trial runs {owner}; remove it")
            elif cond is None and strategies != {owner}:
                errors.append(f"{where}: only {owner} trials use it; add when: {{strategy: {owner}}}")
            elif cond is not None and set(cond) - {owner}:
                errors.append(f"{where}: only {owner} trials use it; use when: {{strategy: {owner}}}")


def _corner_configs(
    strategy: str, space: dict[str, list[Any]], fixed: dict[str, Any]
) -> list[dict[str, Any]]:
    """Extreme trial configs a ``strategy`` trial can meet (freeze_layers and prompt_tokens corners)."""

    def corners(key: str) -> list[Any]:
        out: list[Any] = []
        domains = [d for d in space.get(key, []) if strategy in d.conditions().get("strategy", [strategy])]
        for d in domains:
            out += [min(d.corners()), max(d.corners())] if not isinstance(d, Choice) else list(d.values)
        if not domains or all(d.when for d in space.get(key, [])):
            out.append(fixed.get(key, Hyperparameters.model_fields[key].default))
        return list(dict.fromkeys(out))

    return [
        {"strategy": strategy, "freeze_layers": k, "prompt_tokens": t}
        for k in corners("freeze_layers")
        for t in corners("prompt_tokens")
    ]


def _strategy_problems(
    model: str, max_length: int, poolings: list[str], corners: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Each strategy's ``validate`` on the model built on the ``meta`` device (no weights)."""
    import torch

    from trainables.models import classifier_from_config, load_model_config
    from trainables.strategies import get_strategy

    config = load_model_config(model)
    config.num_labels = 2
    problems: list[str] = []
    for pooling in poolings:
        with torch.device("meta"):  # structure only: no weights are allocated or read
            classifier = classifier_from_config(config, pooling)
        for name, configs in corners.items():
            for corner in configs:
                hp = Hyperparameters.model_construct(**{**Hyperparameters().model_dump(), **corner})
                for line in get_strategy(name).validate(classifier, hp, max_length=max_length):
                    if line not in problems:
                        problems.append(line)
    return problems


def _check_strategies(
    spec: SweepSpec, space: dict[str, list[Any]], fixed: dict[str, Any], errors: list[str]
) -> None:
    """Strategies against the model; torch answers once per model config, code and question (memo)."""
    from trainables.memo import memoized
    from trainables.models import config_sha256

    # in a fixed order: the question is a memo key, and the set's order changes between processes
    strategies = [s for s in STRATEGY_NAMES if s in possible_values("strategy", space, fixed)]
    poolings = [p for p in ("cls", "mean") if p in possible_values("pooling", space, fixed)]
    corners = {name: _corner_configs(name, space, fixed) for name in strategies}
    max_length = spec.data.max_length

    def compute() -> list[str]:
        return _strategy_problems(spec.model, max_length, poolings, corners)

    digest = config_sha256(spec.model)
    question = {"config.json": digest, "max_length": max_length, "poolings": poolings, "corners": corners}
    errors.extend(compute() if digest is None else memoized("strategies", question, compute))


def check_space(
    spec: SweepSpec, layers: int | None, pooling_auto: str | None, errors: list[str]
) -> ResolvedSpace:
    """Resolve and check ``spec.search.space`` against ``spec.train`` (see the module docstring)."""
    resolve = _Resolver(layers, pooling_auto)
    fixed: dict[str, Any] = {}
    for key in Hyperparameters.model_fields:
        try:
            fixed[key] = resolve(key, getattr(spec.train, key))
        except ValidationError as err:
            errors.append(f"train.{key}: {err.errors()[0]['msg']}")
    space: dict[str, list[Any]] = {}
    for key in spec.search.space:
        domains = []
        for i, domain in enumerate(spec.alternatives(key), 1):
            where = f"search.space.{key}" + (f" (domain {i})" if len(spec.alternatives(key)) > 1 else "")
            if layers is None and isinstance(domain, IntRange) and domain.high == "auto":
                continue  # the model error is already reported
            domain = resolve_auto(domain, layers) if layers is not None else domain
            domain = _domain_values(key, domain, resolve, where, errors)
            domain = domain and _resolve_when(key, domain, resolve, where, errors)
            if domain is not None:
                domains.append(domain)
        if domains:
            space[key] = domains
            _check_alternatives(key, domains, errors)
    try:
        sample_order(space)
    except ValueError as exc:
        errors.append(
            f"search.space.{exc}: its when conditions form a cycle; condition on knobs in one direction"
        )
        return ResolvedSpace(space, {}, {})
    k = fixed.get("freeze_layers")
    if "freeze_layers" not in space and layers is not None and isinstance(k, int) and k > layers:
        errors.append(f"train.freeze_layers: {fixed['freeze_layers']} exceeds the model's {layers} layers")
    _check_conditions(space, fixed, errors)
    _check_subknobs(spec, space, fixed, errors)
    if layers is not None and not errors:
        _check_strategies(spec, space, fixed, errors)
    return _split_fixed(space, fixed)


def _split_fixed(space: dict[str, list[Any]], fixed: dict[str, Any]) -> ResolvedSpace:
    """Constants for every trial vs. values that depend on what a trial samples."""
    strategy_searched = "strategy" in space
    always, fallback = {}, {}
    for key, value in fixed.items():
        owner = SUBKNOB_OWNERS.get(key)
        if key in space:
            if all(d.when for d in space[key]):
                fallback[key] = value  # used where no condition holds
        elif owner is not None and strategy_searched:
            fallback[key] = value  # passed only to trials of its strategy
        elif owner is None or owner == fixed.get("strategy"):
            always[key] = value
    return ResolvedSpace(space, always, fallback)
