"""Cross-checks that need the data and the model config, run before any Ray resource starts.

``resolve_sweep`` turns a shape-valid ``SweepSpec`` into a ``ResolvedSweep``: data read, checked
row by row and split; the search space resolved and checked (``orchestrator.space``: auto values,
conditions, strategies against the model); every template parsed and every name resolvable.
All problems found are reported together, one line each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.locations import check_tracking_uri, credential_problem
from orchestrator.plan import TrialPlan, plan_trials
from orchestrator.space import check_space, sample_order
from orchestrator.spec import SpecError, SweepSpec
from search_spaces.domains import Choice
from search_spaces.presets import PRESETS
from search_spaces.templates import TemplateError, check_labels, parse_template
from trainables.data import DataError, PreparedData, prepare_splits
from trainables.models import ModelFacts, ModelSourceError, model_facts, resolved_pooling

__all__ = ["ResolvedSweep", "resolve_sweep"]


@dataclass
class ResolvedSweep:
    spec: SweepSpec
    spec_path: Path
    workdir: Path
    storage: str  # Ray storage_path root: absolute local path or URI
    tracking_uri: str
    data: PreparedData
    data_files: dict[str, str]  # data.<field> -> absolute path (or hf: id)
    space: dict[str, list[Any]]  # knob -> domains (alternatives), auto resolved, values coerced
    fixed: dict[str, Any]  # train knobs every trial gets (auto resolved)
    fallback: dict[str, Any]  # train values of conditional knobs and strategy sub-knobs
    num_layers: int
    pooling_auto: str  # what pooling: auto means for this model
    plan: TrialPlan  # configs x seeds = the trials it trains

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.spec.name}"


def _data_path(value: str | None, base: Path) -> str | None:
    if value is None or value.startswith("hf:") or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _plan(spec: SweepSpec, resolved: Any, errors: list[str]) -> TrialPlan:
    """What the sweep trains; ``repeats`` must divide ``num_trials`` and own the seeds."""
    search = spec.search
    k, n = search.repeats, search.num_trials
    if k > 1 and resolved.space:
        if "seed" in resolved.space:
            errors.append("search.space.seed: seeds come from search.repeats; remove seed from the space")
        if n % k:
            lower = f"{k * (n // k)} or " if n > k else ""
            errors.append(
                f"search.num_trials: {n} is not a multiple of search.repeats ({k}); use {lower}{k * (n // k + 1)}"
            )
    try:
        order = sample_order(resolved.space)
    except ValueError:  # a dependency cycle, already reported by check_space
        order = list(resolved.space)
    return plan_trials(
        resolved.space,
        resolved.fixed,
        order,
        num_trials=n,
        repeats=max(1, min(k, n)),
        train_seed=spec.train.seed,
        search_seed=search.seed,
    )


def _template_names(spec: SweepSpec) -> list[tuple[str, str]]:
    names = [
        ("search.space.context_template", str(v))
        for d in spec.alternatives("context_template")
        if isinstance(d, Choice)
        for v in d.values
    ]
    if not spec.alternatives("context_template") or spec.conditional("context_template"):
        names.append(("train.context_template", spec.train.context_template))
    return names


def _locations(
    spec: SweepSpec, workdir: Path, files: dict[str, str | None], errors: list[str]
) -> tuple[str, str]:
    """The storage root and tracking URI, after checking they are usable and carry no credentials."""
    storage = spec.storage or str(workdir / "runs")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    tracking = spec.tracking.uri or f"sqlite:///{workdir / 'mlflow.db'}"
    if spec.tracking.uri:
        errors.extend(check_tracking_uri(spec.tracking.uri))
    for field, value in [("storage", storage), *((f"data.{k}", v) for k, v in files.items() if v)]:
        problem = credential_problem(field, value)
        if problem:
            errors.append(problem)
    return storage, tracking


def _check_positions(spec: SweepSpec, facts: ModelFacts, errors: list[str]) -> None:
    positions = facts.positions
    if positions is not None and spec.data.max_length > positions:
        errors.append(
            f"data.max_length: {spec.data.max_length} exceeds the model's {positions} positions; "
            f"use at most {positions}"
        )


def resolve_sweep(spec: SweepSpec, spec_path: str | Path, workdir: str | Path) -> ResolvedSweep:
    spec_path = Path(spec_path).resolve()
    base = spec_path.parent
    workdir = Path(workdir).resolve()
    errors: list[str] = []

    layers: int | None = None
    pooling_auto: str | None = None
    try:
        facts = model_facts(spec.model)
        layers = facts.num_layers
        pooling_auto = resolved_pooling(spec.model, "auto")
        _check_positions(spec, facts, errors)
    except ModelSourceError as exc:
        errors.append(str(exc))

    files = {k: _data_path(getattr(spec.data, k), base) for k in ("train", "validation", "test")}
    data: PreparedData | None = None
    try:
        data = prepare_splits(
            train=files["train"],
            validation=files["validation"],
            test=files["test"],
            validation_fraction=spec.data.validation_fraction,
            text_column=spec.data.text_column,
            label_column=spec.data.label_column,
            seed=spec.search.seed,
            drop_empty_rows=spec.data.drop_empty_rows,
        )
    except DataError as exc:
        errors.append(str(exc))

    for name, value in spec.templates.items():
        try:
            template = parse_template(name, value)
            if data is not None:
                check_labels(name, template, data.label_names)
        except TemplateError as exc:
            errors.append(str(exc))
    for where, name in _template_names(spec):
        if name not in spec.templates and name not in PRESETS:
            errors.append(
                f"{where}: unknown template '{name}'; define it under templates: or use a preset "
                f"({', '.join(sorted(PRESETS))})"
            )

    resolved = check_space(spec, layers, pooling_auto, errors)
    precisions = [spec.train.precision] + [
        v for d in resolved.space.get("precision", []) for v in d.corners()
    ]
    if "fp16" in precisions and spec.resources.gpus_per_worker == 0:
        errors.append("precision: fp16 needs GPU workers; set resources.gpus_per_worker or use bf16/fp32")

    plan = _plan(spec, resolved, errors)
    storage, tracking = _locations(spec, workdir, files, errors)
    if errors:
        raise SpecError(errors)
    assert data is not None and layers is not None and pooling_auto is not None
    return ResolvedSweep(
        spec=spec,
        spec_path=spec_path,
        workdir=workdir,
        storage=storage,
        tracking_uri=tracking,
        data=data,
        data_files={k: v for k, v in files.items() if v is not None},
        space=resolved.space,
        fixed=resolved.fixed,
        fallback=resolved.fallback,
        num_layers=layers,
        pooling_auto=pooling_auto,
        plan=plan,
    )
