"""Hand the chosen checkpoint to deployment: export directory + MLflow registered model + alias.

Order of work, so that bad input never leaves anything half-registered:
  1. choose the candidate (``orchestrator.selection``), check the checkpoint's integrity;
  2. stage a self-contained export (weights, tokenizer, template, labels, demonstrations for
     few-shot templates, model card), re-evaluate the validation split (must reproduce the
     logged metric) and, if the sweep has ``data.test``, the test split once;
  3. only then log the pyfunc model, register a version and move the alias.
Promoting the same checkpoint under the same name again reuses its version (idempotent).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from orchestrator.selection import Candidate, SelectionError, candidates, find_sweep_run
from orchestrator.store import tracking_client
from orchestrator.tracking import TAGS, library_versions
from search_spaces.errors import UserError, cap
from trainables.checkpoints import write_standalone
from trainables.data import read_split, write_split
from trainables.predictor import DEMONSTRATIONS_FILE, CheckpointError, TextClassifier, check_checkpoint

__all__ = ["PromoteError", "Promotion", "check_export_target", "choose", "localize", "promote"]

SERVING_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "mlflow",
)  # what predict needs at run time
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
PACKAGE_DIRS = [Path(__file__).resolve().parents[1] / p for p in ("trainables", "search_spaces")]


class PromoteError(UserError):
    """Bad input for promotion (exit code 2); nothing was registered."""


@dataclass
class Promotion:
    name: str
    version: str
    alias: str
    candidate: Candidate
    reused: bool
    previous_alias_version: str | None
    export_dir: str | None
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    reproduced: str = ""  # how the re-evaluation matched the logged metric (trainables.reproduce)


def choose(ranked: list[Candidate], trial: str | None) -> Candidate:
    """The best candidate holding a checkpoint, or the best epoch of ``trial`` that holds one."""
    rows = ranked
    if trial is not None:
        rows = [c for c in ranked if c.trial_id == trial]
        if not rows:
            known = ", ".join(sorted({c.trial_id for c in ranked}))
            raise PromoteError(f"--trial {trial}: no such trial in this sweep; known: {known}")
    with_checkpoint = [c for c in rows if c.checkpoint]
    if not with_checkpoint:
        what = f"trial {trial} ({rows[0].outcome or rows[0].status.lower()})" if trial else "no trial"
        raise PromoteError(f"{what} holds no checkpoint to promote; pick another --trial")
    return with_checkpoint[0]


_STRATEGY_TEXT = {
    "full": "every parameter above the frozen prefix trained",
    "bitfit": "bias terms above the frozen prefix + the head trained",
    "lora": "low-rank adapters on the projections above the frozen prefix + the head",
    "prompt": "trainable soft-prompt tokens + the head; encoder frozen",
}
_POOLING_TEXT = {
    "cls": "the architecture's own head; decoders: the last non-pad token",
    "mean": "masked mean of the last hidden states, then a linear head",
}


def _usage(info: dict) -> str:
    """How to load this export: plain transformers where possible, else the project's loader."""
    hp = info["hyperparameters"]
    plain = hp.get("pooling", "cls") == "cls" and (
        hp.get("strategy") in ("full", "bitfit") or info.get("merged")
    )
    loader = """```python
# pip install ray-sweeps-orchestrator (or put its trainables/ and search_spaces/ on the path)
from trainables.checkpoints import load_classifier  # rebuilds pooling/strategy from trial.json
model = load_classifier(".")
```"""
    if plain:
        return (
            """```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(".")
tokenizer = AutoTokenizer.from_pretrained(".")
```
"""
            + "(decoder-only models: use the loader below.)\n"
            + loader
        )
    if hp.get("pooling") == "mean" and hp.get("strategy") != "prompt":
        return (
            loader
            + """
Without this package (plain `transformers` + `safetensors`, no remote code): `AutoModel.from_pretrained(".")`
loads the encoder; take the mean of its last hidden states over the attention mask, then apply
`classifier.weight` / `classifier.bias` from `model.safetensors` (logits = pooled @ W.T + b).
"""
        )
    return loader + "\n(soft prompts need `peft`; the loader applies them.)\n"


def _model_card(
    sweep: str, c: Candidate, sweep_run, val: dict, test: dict, info: dict, metric: str, check: Any
) -> str:
    hp_values = info["hyperparameters"]
    settings = (
        ", ".join(f"{k}={v}" for k, v in sorted(hp_values.items()) if k.startswith(("lora_", "prompt_")))
        or "no sub-knobs"
    )
    strategy, pooling = hp_values.get("strategy", "full"), hp_values.get("pooling", "cls")
    trainable = (
        f"{int(c.metrics['trainable_params']):,}" if "trainable_params" in c.metrics else "not recorded"
    )
    hp = "\n".join(f"| {k} | {v} |" for k, v in sorted(info["hyperparameters"].items()))
    hashes = "\n".join(
        f"- {k.removeprefix('data.').removesuffix('.sha256')}: `{v}`"
        for k, v in sorted(sweep_run.data.tags.items())
        if k.startswith("data.") and k.endswith(".sha256")
    )
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())

    def table(m: dict) -> str:
        return "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(m.items())) or "| (none) | |"

    return f"""# {info["model_source"]} fine-tuned: sweep `{sweep}`, trial `{c.trial_id}`, epoch {c.epoch}

Text classifier with labels: {", ".join(info["label_names"])}. Selected by `{metric}` on the
validation split over every epoch of every trial (MLflow run `{c.run_id}`, sweep run
`{sweep_run.info.run_id}`).

## How it was trained
- strategy: `{strategy}` ({_STRATEGY_TEXT.get(strategy, "")}); {settings}
- pooling: `{pooling}` ({_POOLING_TEXT.get(pooling, "")})
- freeze_layers: `{hp_values.get("freeze_layers", 0)}`; trainable parameters: {trainable}
- weights here: {"LoRA adapters merged into the weights they adapt (a plain model)" if info.get("merged") else "as trained"}

## Use
{_usage(info)}
Inputs must be wrapped with the context template below (`trial.json` holds it; few-shot
demonstrations come from `{DEMONSTRATIONS_FILE}` when present), as `orchestrator predict` does.

## Context template `{info["template_name"]}`
```json
{json.dumps(info["template"], indent=2)}
```
max_length: {info["max_length"]}

## Hyper-parameters
| knob | value |
|---|---|
{hp}

## Validation metrics (re-computed from these weights)
| metric | value |
|---|---|
{table(val)}

{check.describe() if check is not None else "The sweep logged no value of " + metric + " for this epoch."}

## Test metrics (held-out `data.test`, never used for selection)
| metric | value |
|---|---|
{table(test)}

## Data files (sha256)
{hashes or "- (no file hashes recorded)"}

## Library versions
{versions}
"""


def _check_reproduced(c: Candidate, classifier: TextClassifier, metric: str, val, labels, probs):
    """The re-evaluation must reproduce the logged metric (``trainables.reproduce`` says how exactly)."""
    from trainables.reproduce import Numerics, reproduction

    logged = c.metrics.get(metric)
    if logged is None:
        return None
    from trainables.device import describe_device

    hp, where = classifier.info["hyperparameters"], classifier.info.get("evaluated_on", {})
    trained = Numerics(
        where.get("device", "cpu"), where.get("precision", hp.get("precision", "fp32")), where.get("name")
    )
    here = describe_device(classifier.device, classifier.precision)
    evaluated = Numerics(here["device"], here["precision"], here["name"])
    check = reproduction(
        metric, logged, val[metric], trained=trained, evaluated=evaluated, labels=labels, probs=probs
    )
    if not check.ok:
        raise PromoteError(
            f"checkpoint {c.checkpoint}: {check.describe()}; the checkpoint does not match its run"
        )
    return check


def _stage(c: Candidate, sweep: str, sweep_run, out: Path, metric: str) -> tuple[dict, dict, dict, Any]:
    """Copy the checkpoint into ``out`` (no optimizer state), evaluate, write the model card."""
    source = localize(c.checkpoint, out.parent / "source")  # type: ignore[arg-type]
    try:
        info = check_checkpoint(source)
    except CheckpointError as exc:
        raise PromoteError(str(exc).replace(str(source), str(c.checkpoint))) from None
    write_standalone(source, out)  # LoRA merged into the weights; no optimizer state
    info = check_checkpoint(out)
    data_dir = f"{sweep_run.data.tags[TAGS.EXPERIMENT_PATH]}/data"
    if info["template"].get("shots", 0):
        write_split(read_split(f"{data_dir}/train.parquet"), str(out / DEMONSTRATIONS_FILE))
    classifier = TextClassifier(out)  # on the kind of device the trial evaluated on, where there is one
    val, labels, probs = classifier.evaluate_with_probabilities(
        read_split(f"{data_dir}/validation.parquet"), name="validation"
    )
    check = _check_reproduced(c, classifier, metric, val, labels, probs)
    test: dict[str, float] = {}
    test_split = _read_optional(f"{data_dir}/test.parquet")
    if test_split is not None:  # held-out: evaluated here, once per promoted checkpoint
        scores = classifier.evaluate(test_split, name="test")
        test = {k.replace("eval_", "test_"): v for k, v in scores.items()}
    (out / "README.md").write_text(_model_card(sweep, c, sweep_run, val, test, info, metric, check))
    return info, val, test, check


def localize(checkpoint: str, into: Path) -> Path:
    """A local directory with the checkpoint: itself if local, else a copy (s3://, gs://, ...)."""
    if "://" not in checkpoint:
        return Path(checkpoint)
    import pyarrow
    import pyarrow.fs as pafs

    into.mkdir(parents=True, exist_ok=True)
    try:
        pafs.copy_files(checkpoint.rstrip("/"), str(into.resolve()), use_threads=True)
    except (OSError, pyarrow.ArrowException) as exc:
        raise PromoteError(f"checkpoint {checkpoint}: cannot download ({exc})") from None
    return into


EXPORT_MANIFEST = ".orchestrator-export.json"  # the files an export wrote; only those may be replaced
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$")


def check_registry_names(name: str, alias: str) -> None:
    """``--name`` and ``--alias`` as MLflow will accept them, checked before anything is registered."""
    if not MODEL_NAME.match(name):
        raise PromoteError(
            f"--name {cap(name)!r}: use letters, digits, '.', '_' or '-' (at most 100), starting with a letter or digit"
        )
    if not ALIAS.match(alias):
        raise PromoteError(
            f"--alias {cap(alias)!r}: use letters, digits, '_' or '-' (at most 100), starting with a letter"
        )
    if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise PromoteError(f"--alias {alias}: reserved by MLflow (latest, v<N>); use e.g. champion or prod")


def _tree(root: Path) -> list[str] | None:
    """Relative paths of the files under ``root``; None when a symlink or special file is in it."""
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return None
        if path.is_file():
            files.append(path.relative_to(root).as_posix())
    return files


def check_export_target(export: str | Path | None) -> None:
    """``--export`` must be new, empty, or exactly a previous export (its manifest); never user data."""
    if export is None or not (Path(export).exists() or Path(export).is_symlink()):
        return
    target = Path(export)
    if target.is_symlink():
        raise PromoteError(f"--export {export}: is a symbolic link; give the real directory or a new one")
    if not target.is_dir():
        raise PromoteError(f"--export {export}: exists and is a file; choose a new directory")
    files = _tree(target)
    if files == []:
        return
    manifest = target / EXPORT_MANIFEST
    try:
        written = json.loads(manifest.read_text())["files"] if manifest.is_file() else None
    except (ValueError, KeyError, TypeError):
        written = None
    if files is None or written is None or sorted(written) != [f for f in files if f != EXPORT_MANIFEST]:
        raise PromoteError(
            f"--export {export}: directory holds other files (not exactly a previous export); "
            "choose a new or empty directory"
        )


def write_export(staged: Path, export: str | Path) -> str:
    """Copy ``staged`` to ``export`` atomically: build beside it, then swap by rename (never follows links)."""
    target = Path(export).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    old = None
    try:
        shutil.copytree(staged, building, dirs_exist_ok=True)
        (building / EXPORT_MANIFEST).write_text(json.dumps({"files": _tree(staged)}, indent=1))
        if target.exists():
            check_export_target(target)  # still exactly an export of ours (or empty)
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
        os.rename(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        if old is not None and not target.exists():
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old)  # rmtree unlinks symbolic links, it never follows them
    return str(target)


def _read_optional(uri: str):
    try:
        return read_split(uri)
    except (FileNotFoundError, OSError):
        return None


def _find_version(client: MlflowClient, name: str, checkpoint: str):
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.tags.get(TAGS.CHECKPOINT) == checkpoint and mv.status == "READY":
            return mv
    return None


def _check_name(client: MlflowClient, name: str, sweep: str) -> None:
    try:
        model = client.get_registered_model(name)
    except Exception:
        return  # does not exist yet
    owner = model.tags.get(TAGS.SWEEP)
    if owner is not None and owner != sweep:
        raise PromoteError(
            f"--name {name}: registered model holds sweep '{owner}', not '{sweep}'; use another --name"
        )


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:
        return None


def _signature(label_names: list[str]):
    """The pyfunc's input (one text column) and output (label, score, one score per label)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema(
            [ColSpec("string", "label"), ColSpec("double", "score")]
            + [ColSpec("double", f"score_{n}") for n in label_names]
        ),
    )


def promote(
    tracking_uri: str,
    *,
    sweep: str,
    trial: str | None = None,
    name: str | None = None,
    alias: str = "champion",
    export: str | Path | None = None,
) -> Promotion:
    import mlflow

    name = name or f"{sweep}-classifier"
    check_registry_names(name, alias)
    check_export_target(export)
    client = tracking_client(tracking_uri, registry_uri=tracking_uri)
    try:
        sweep_run = find_sweep_run(client, sweep)
        ranked = candidates(client, sweep_run)
    except SelectionError as exc:
        raise PromoteError(str(exc)) from None
    chosen = choose(ranked, trial)
    metric = sweep_run.data.params.get("metric", "eval_accuracy")
    _check_name(client, name, sweep)
    previous = _alias_version(client, name, alias)

    staging = Path(tempfile.mkdtemp(prefix="promote-"))
    try:
        info, val, test, check = _stage(chosen, sweep, sweep_run, staging / "model", metric)
        existing = _find_version(client, name, chosen.checkpoint)
        if existing is not None:
            version, reused = str(existing.version), True
        else:
            version, reused = (
                _register(
                    mlflow,
                    client,
                    tracking_uri,
                    name,
                    sweep,
                    sweep_run,
                    chosen,
                    staging / "model",
                    val,
                    test,
                    _signature(info["label_names"]),
                ),
                False,
            )
        try:
            client.set_registered_model_alias(name, alias, version)
        except Exception as exc:
            if not reused:  # never leave a new version without the alias it was registered for
                client.delete_model_version(name, version)
            raise PromoteError(
                f"--alias {alias}: MLflow refused it ({str(exc).splitlines()[0][:200]})"
            ) from None
        if not test and existing is not None:
            test = {
                k.removeprefix("test."): float(v) for k, v in existing.tags.items() if k.startswith("test.")
            }
        export_dir = write_export(staging / "model", export) if export is not None else None
        reproduced = check.describe() if check is not None else ""
        return Promotion(name, version, alias, chosen, reused, previous, export_dir, val, test, reproduced)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _register(
    mlflow, client, tracking_uri, name, sweep, sweep_run, c, model_dir, val, test, signature
) -> str:
    """Log the pyfunc model in a promotion run under the sweep and register it; undo on failure."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    run = client.create_run(
        sweep_run.info.experiment_id,
        run_name=f"promote-{c.trial_id}-epoch-{c.epoch}",
        tags={
            TAGS.PARENT: sweep_run.info.run_id,
            TAGS.ROLE: "promotion",
            TAGS.SWEEP: sweep,
            TAGS.TRIAL_ID: c.trial_id,
            TAGS.CHECKPOINT: c.checkpoint,
        },
    )
    version = None
    try:
        with mlflow.start_run(run_id=run.info.run_id):
            mlflow.log_params({"trial_id": c.trial_id, "epoch": c.epoch, "registered_model": name})
            mlflow.log_metrics({f"validation_{k.removeprefix('eval_')}": v for k, v in val.items()})
            if test:
                mlflow.log_metrics(test)
            model_info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_FILE),
                artifacts={"model_dir": str(model_dir)},
                code_paths=[str(p) for p in PACKAGE_DIRS],
                signature=signature,
                pip_requirements=[
                    f"{pkg}=={v}" for pkg, v in library_versions().items() if pkg in SERVING_LIBRARIES
                ]
                + ["pandas", "pyarrow", "pydantic>=2"],
            )
        tags = {
            TAGS.CHECKPOINT: c.checkpoint,
            TAGS.TRIAL_ID: c.trial_id,
            "sweep_run_id": sweep_run.info.run_id,
            "trial_run_id": c.run_id,
            "promotion_run_id": run.info.run_id,
            "epoch": str(c.epoch),
            **{f"validation.{k}": f"{v:.6f}" for k, v in val.items()},
            **{f"test.{k}": f"{v:.6f}" for k, v in test.items()},
        }
        with contextlib.suppress(Exception):  # exists already (ownership checked before)
            client.create_registered_model(name, tags={TAGS.SWEEP: sweep})
        version = mlflow.register_model(model_info.model_uri, name, tags=tags).version
        if test:  # the trial's own run shows its held-out score too
            for k, v in test.items():
                client.log_metric(c.run_id, k, v, step=c.epoch)
        return str(version)
    except Exception:
        if version is not None:
            client.delete_model_version(name, version)
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
