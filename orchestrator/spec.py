"""The sweep file: schema, loading with ``--set`` overrides, and one-line error messages.

``load_spec`` only checks the file's shape (types, unknown keys, ranges). Checks that need
the data or the model config live in ``orchestrator.resolve``; both run before Ray starts.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from search_spaces import objectives as M
from search_spaces.domains import Domain
from search_spaces.errors import MAX_ECHO, UserError, cap
from trainables.config import NOT_SEARCHABLE, Hyperparameters

__all__ = ["SpecError", "SweepSpec", "apply_overrides", "load_spec"]


class SpecError(UserError):
    """Bad input in the sweep file. ``str(err)`` is one or more lines, each naming a field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataSpec(_Strict):
    train: str = Field(description="csv, tsv, json, jsonl or parquet file; or hf:<dataset>[:<config>]")
    validation: str | None = Field(
        None, description="optional; else validation_fraction of train is held out"
    )
    test: str | None = Field(None, description="optional held-out test file, never used for selection")
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    text_column: str = "text"
    label_column: str = "label"
    max_length: int = Field(128, ge=8, le=8192, description="tokens per example, context included")
    drop_empty_rows: bool = Field(
        False, description="skip rows with an empty text or a missing label (counted) instead of refusing"
    )

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataSpec:
        if self.text_column == self.label_column:
            raise ValueError(
                f"text_column and label_column are both '{cap(self.text_column)}'; the label must be its own column"
            )
        return self


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


# A knob's domains: one domain in the sweep file is read as a list of one.
Alternatives = Annotated[list[Domain], BeforeValidator(_as_list), Field(min_length=1)]


class SchedulerSpec(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: int = Field(3, ge=2)


class SearchSpec(_Strict):
    metric: str = M.EVAL_ACCURACY
    mode: Literal["max", "min"] | None = Field(None, description="defaults to the metric's natural mode")
    num_trials: int = Field(8, ge=1, description="trials (training runs), every seed of every config counted")
    repeats: int = Field(
        1,
        ge=1,
        le=1000,
        description="seeds per sampled config: each config trains once per seed (paired seeds)",
    )
    max_concurrent_trials: int | Literal["auto"] = "auto"
    seed: int = Field(0, ge=0, lt=2**32, description="TPE, data split and demonstrations seed")
    scheduler: SchedulerSpec = SchedulerSpec()
    space: dict[str, Alternatives] = Field(
        {}, description="knob -> domain, or a list of domains with exclusive `when` conditions"
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        if v not in M.SELECTABLE_METRICS:
            raise ValueError(f"unknown metric '{v}'; use one of {', '.join(M.SELECTABLE_METRICS)}")
        return v

    @field_validator("max_concurrent_trials")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or auto")
        return v

    @field_validator("space")
    @classmethod
    def _known_knobs(cls, v: dict[str, Any]) -> dict[str, Any]:
        searchable = [k for k in Hyperparameters.model_fields if k not in NOT_SEARCHABLE]
        for key in v:
            if key in NOT_SEARCHABLE:
                raise ValueError(f"'{key}' is set once per sweep; move it to train.{key}")
            if key not in Hyperparameters.model_fields:
                raise ValueError(f"'{key}' is not a train knob; searchable: {', '.join(searchable)}")
        return v

    @model_validator(mode="after")
    def _mode(self) -> SearchSpec:
        natural = M.SELECTABLE_METRICS[self.metric]
        if self.mode is None:
            self.mode = natural  # type: ignore[assignment]
        elif self.mode != natural:
            raise ValueError(
                f"mode '{self.mode}' would optimise {self.metric} the wrong way; use mode: {natural}"
            )
        return self


class ResourcesSpec(_Strict):
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers (DDP ranks) per trial")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)


class TrackingSpec(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<workdir>/mlflow.db")


class CacheSpec(_Strict):
    enabled: bool | Literal["auto"] = Field(
        "auto",
        description="frozen-prefix features stored once per sweep: auto = when the size estimate fits max_gb, "
        "true = store entries while they fit, false = never",
    )
    max_gb: float = Field(4.0, gt=0, le=100_000, description="the most the prefix cache may hold, in GB")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "bf16",
        description="how the training split's states are stored: bf16/fp16 halve them (accuracy unchanged "
        "within seed noise, see BENCHMARKS.md); validation states are always fp32",
    )


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SweepSpec(_Strict):
    name: str = Field(description="MLflow experiment name and the sweep's directory name")
    model: str = "builtin:minilm-l6"
    data: DataSpec
    templates: dict[str, str | dict[str, Any]] = {}
    search: SearchSpec = SearchSpec()
    train: Hyperparameters = Hyperparameters()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec = TrackingSpec()
    cache: CacheSpec = CacheSpec()
    storage: str | None = Field(None, description="Ray storage_path; default <workdir>/runs")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(
                "use letters, digits, '.', '_' or '-' (at most 100), starting with a letter or digit"
            )
        return v

    @model_validator(mode="after")
    def _train_or_space(self) -> SweepSpec:
        # a conditional knob's train value is what trials outside every condition use
        both = sorted(
            k for k in set(self.train.model_fields_set) & set(self.search.space) if not self.conditional(k)
        )
        if both:
            raise ValueError(
                f"train.{both[0]} is also in search.space; keep it in one place "
                "(or give the search domain a when: condition)"
            )
        sched, epochs = self.search.scheduler, self.train.epochs
        if sched.type == "asha" and "epochs" not in self.search.space and sched.grace_period > epochs:
            raise ValueError(
                f"search.scheduler.grace_period ({sched.grace_period}) exceeds train.epochs ({epochs}); lower it"
            )
        return self

    def alternatives(self, key: str) -> list[Any]:
        """The domains of searched knob ``key`` (a list even when the sweep file gives one)."""
        return list(self.search.space.get(key, []))

    def conditional(self, key: str) -> bool:
        """True when every domain of ``key`` has a ``when`` condition."""
        domains = self.alternatives(key)
        return bool(domains) and all(d.when for d in domains)


def _loc(loc: tuple[Any, ...]) -> str:
    # pydantic puts the union member's tag in the path (space.lr.loguniform.low); drop those,
    # and name the n-th domain of a knob that lists several as "(domain n)"
    parts: list[str] = []
    for p in loc:
        if p in {"loguniform", "uniform", "int", "choice"}:
            continue
        if isinstance(p, int) and len(parts) >= 2 and parts[-2] == "space":
            if p:
                parts[-1] += f" (domain {p + 1})"
            continue
        parts.append(str(p))
    return ".".join(parts) or "(top level)"


_ECHO = reprlib.Repr()  # echoes a bad value without walking all of it
_ECHO.maxlevel, _ECHO.maxlist, _ECHO.maxdict = 3, 8, 8
_ECHO.maxstring = _ECHO.maxother = MAX_ECHO


def format_validation_error(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        where = _loc(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key; remove it or check its spelling")
        elif e["type"] == "missing":
            lines.append(f"{where}: required; add it")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"{where}.type: use one of loguniform, uniform, int, choice")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] != "value_error":
                msg = f"{msg} (got {cap(_ECHO.repr(e.get('input')))})"
            lines.append(msg if where == "(top level)" else f"{where}: {msg}")
    return lines


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides with dotted keys (``search.num_trials=4``); VALUE is YAML."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item}: expected KEY=VALUE, e.g. --set search.num_trials=4")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError(f"--set {item}: '{part}' is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(value)
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML itself keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:  # the keys written here; merged ones (<<: *anchor) may be overridden
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SpecError(
                f"line {key_node.start_mark.line + 1}: a key must be a plain name, not {type(key).__name__}"
            )
        if key in seen:
            raise SpecError(
                f"line {key_node.start_mark.line + 1}: key '{cap(key)}' appears twice in one section; keep one"
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)  # flattens the merge keys itself


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)

MAX_SPEC_BYTES = 1_000_000  # a sweep file is a page of YAML
MAX_SPEC_NODES = 100_000  # values once anchors are expanded (an alias bomb expands to billions)


def _expanded_size(value: Any, budget: list[int]) -> None:
    """Count values as a tree walk would see them (aliases re-counted); stop once over budget."""
    budget[0] -= 1
    if budget[0] < 0:
        return
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        _expanded_size(child, budget)
        if budget[0] < 0:
            return


def _read_yaml(path: Path) -> Any:
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {path.stat().st_size} bytes is not a sweep file (at most {MAX_SPEC_BYTES})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file; a sweep file is YAML") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except SpecError as exc:
        raise SpecError(f"{path} {exc.lines[0]}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply; a sweep file is a few levels of sections") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    budget = [MAX_SPEC_NODES]
    _expanded_size(raw, budget)
    if budget[0] < 0:
        raise SpecError(
            f"{path}: more than {MAX_SPEC_NODES} values once anchors (&, *) are expanded; simplify it"
        )
    return raw


def load_spec(path: str | Path, overrides: list[str] | None = None) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such sweep file")
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of sections (name, model, data, search, ...)")
    raw = apply_overrides(raw, overrides or [])
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(format_validation_error(err)) from None
