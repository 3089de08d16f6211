"""Cross-checks that need the data and the model config, run before any Ray resource starts.

``resolve_sweep`` turns a shape-valid ``SweepSpec`` into a ``ResolvedSweep``: data read, checked
row by row and split; ``high: auto`` resolved from the model config; every corner of the space
validated against the train knobs; every template parsed and every template name resolvable.
All problems found are reported together, one line each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.spec import SpecError, SweepSpec
from search_spaces.domains import Choice, IntRange, resolve_auto
from search_spaces.presets import PRESETS
from search_spaces.templates import TemplateError, check_labels, parse_template
from trainables.config import Hyperparameters
from trainables.data import DataError, PreparedData, prepare_splits
from trainables.models import ModelSourceError, load_model_config, num_layers

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
    space: dict[str, Any]  # domains, with auto resolved and choice values coerced
    num_layers: int

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.spec.name}"


def _data_path(value: str | None, base: Path) -> str | None:
    if value is None or value.startswith("hf:") or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def _coerce(key: str, value: Any) -> Any:
    """Validate ``value`` as the train knob ``key``; return it with the knob's type."""
    return getattr(Hyperparameters.model_validate({key: value}), key)


def _check_space(spec: SweepSpec, layers: int | None, errors: list[str]) -> dict[str, Any]:
    space: dict[str, Any] = {}
    for key, domain in spec.search.space.items():
        where = f"search.space.{key}"
        if layers is None and isinstance(domain, IntRange) and domain.high == "auto":
            space[key] = domain
            continue  # the model error is already reported
        if layers is not None:
            domain = resolve_auto(domain, layers)
        try:
            corners = [_coerce(key, v) for v in domain.corners()]
        except ValidationError as err:
            first = err.errors()[0]
            errors.append(f"{where}: {first['input']!r} is not a valid {key} ({first['msg']})")
            continue
        if isinstance(domain, Choice):
            domain = Choice(type="choice", values=corners)
        if key == "freeze_layers" and layers is not None and max(corners) > layers:
            errors.append(f"{where}: {max(corners)} exceeds the model's {layers} layers; use high: auto")
        space[key] = domain
    if "freeze_layers" not in space and layers is not None and spec.train.freeze_layers > layers:
        errors.append(f"train.freeze_layers: {spec.train.freeze_layers} exceeds the model's {layers} layers")
    return space


def _template_names(spec: SweepSpec) -> list[tuple[str, str]]:
    domain = spec.search.space.get("context_template")
    if domain is None:
        return [("train.context_template", spec.train.context_template)]
    if not isinstance(domain, Choice):
        return []  # a non-choice domain for a name is rejected by _check_space already
    return [("search.space.context_template", str(v)) for v in domain.values]


def resolve_sweep(spec: SweepSpec, spec_path: str | Path, workdir: str | Path) -> ResolvedSweep:
    spec_path = Path(spec_path).resolve()
    base = spec_path.parent
    workdir = Path(workdir).resolve()
    errors: list[str] = []

    layers: int | None = None
    try:
        layers = num_layers(load_model_config(spec.model))
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

    space = _check_space(spec, layers, errors)
    precisions = space["precision"].values if "precision" in space else [spec.train.precision]
    if "fp16" in precisions and spec.resources.gpus_per_worker == 0:
        errors.append("precision: fp16 needs GPU workers; set resources.gpus_per_worker or use bf16/fp32")

    if errors:
        raise SpecError(errors)
    assert data is not None and layers is not None
    storage = spec.storage or str(workdir / "runs")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    tracking = spec.tracking.uri or f"sqlite:///{workdir / 'mlflow.db'}"
    return ResolvedSweep(
        spec=spec,
        spec_path=spec_path,
        workdir=workdir,
        storage=storage,
        tracking_uri=tracking,
        data=data,
        data_files={k: v for k, v in files.items() if v is not None},
        space=space,
        num_layers=layers,
    )
