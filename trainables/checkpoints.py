"""Checkpoint directories: the unit that is reported to Ray, selected, exported and served.

Layout (no pickled objects anywhere)::

    model.safetensors                     # what the trial trained (see trainables.base_weights):
                                          # every state-dict entry (peft wrappers included) but
                                          # the frozen base tensors; everything in an export
    config.json                           # the Hugging Face config, with id2label
    tokenizer.json, tokenizer_config.json, ...  # only outside a sweep and in exports
    trial.json                            # hyper-parameters (pooling and strategy resolved),
                                          # labels, template, epoch, metrics, "merged",
                                          # "base": {sha256, uri} of the frozen base weights and
                                          # "tokenizer": {sha256, uri} of the sweep's tokenizer
                                          # files (trainables.stored_tokenizer)
    resume.pt                             # optimizer/scheduler/RNG state: tensors and plain
                                          # containers only, loaded with weights_only=True;
                                          # only in the latest checkpoint of an unfinished trial

:func:`load_classifier` rebuilds the structure from ``config.json`` + ``trial.json`` (pooling,
strategy), loads the base (checked against its sha256), then the delta, and checks that every
tensor came from one of them. A trial checkpoint with a ``base`` is therefore not a plain Hugging
Face directory; :func:`write_standalone` (what ``orchestrator promote --export`` runs) writes one
with the full weights. For ``pooling: cls`` with ``full`` or ``bitfit`` on an encoder (and merged
LoRA exports of those) that export, and a checkpoint without a base, is a plain Hugging Face model
directory: ``AutoModelForSequenceClassification.from_pretrained(export)`` works on it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainables.base_weights import DeltaPlan, check_complete, load_base, plan_delta
from trainables.stored import StoredRef
from trainables.stored_tokenizer import TOKENIZER_KEY, unpack_into

__all__ = [
    "RESUME_FILE",
    "TRIAL_FILE",
    "WEIGHTS_FILE",
    "load_checkpoint",
    "load_classifier",
    "load_resume_state",
    "read_trial_info",
    "save_checkpoint",
    "write_standalone",
]

TRIAL_FILE = "trial.json"
RESUME_FILE = "resume.pt"
WEIGHTS_FILE = "model.safetensors"


def save_checkpoint(
    directory: str | Path,
    *,
    model: Any,
    tokenizer: Any,
    trial_info: dict[str, Any],
    resume_state: dict[str, Any] | None,
    plan: DeltaPlan | None = None,
    tokenizer_ref: StoredRef | None = None,
) -> None:
    """Write one checkpoint into an existing, empty ``directory`` (rank 0 only).

    With a ``plan`` that has a base, only the delta is written and ``trial.json`` records the base;
    with a ``tokenizer_ref`` (the sweep's stored tokenizer files), no tokenizer file is written.
    """
    from safetensors.torch import save_file, save_model

    from trainables.strategies import unwrap

    directory = Path(directory)
    unwrap(model).config.save_pretrained(directory)
    if plan is not None and plan.ref is not None:
        save_file(plan.state(model), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
        trial_info = {**trial_info, "base": plan.ref.to_json()}
    else:  # save_model keeps one name per shared tensor; load_model restores the others
        save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    if tokenizer_ref is not None:
        trial_info = {**trial_info, TOKENIZER_KEY: tokenizer_ref.to_json()}
    else:
        tokenizer.save_pretrained(directory)
    (directory / TRIAL_FILE).write_text(json.dumps(trial_info, indent=2, sort_keys=True))
    if resume_state is not None:
        torch.save(resume_state, directory / RESUME_FILE)


def read_trial_info(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / TRIAL_FILE).read_text())


def load_resume_state(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / RESUME_FILE
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def _structure(info: dict[str, Any]) -> tuple[str, Any]:
    """(pooling, hyper-parameters) a checkpoint was trained with; older checkpoints were ``cls`` + ``full``."""
    from trainables.config import Hyperparameters

    hp = dict(info["hyperparameters"])
    pooling = hp.get("pooling", "cls")
    hp["pooling"] = "cls" if pooling == "auto" else pooling
    return hp["pooling"], Hyperparameters.model_validate(hp)


def load_checkpoint(directory: str | Path) -> tuple[Any, DeltaPlan]:
    """The trained model in ``directory`` (a checkpoint or an export) on the CPU, and its delta plan.

    Raises ``StoredFileError`` when the base is missing or changed, ``ValueError`` when the
    weights do not fit the structure ``trial.json`` describes.
    """
    from safetensors.torch import load_file, load_model
    from transformers import AutoConfig

    from trainables.models import classifier_from_config
    from trainables.strategies import get_strategy

    directory = Path(directory)
    info = read_trial_info(directory)
    pooling, hp = _structure(info)
    config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    model = classifier_from_config(config, pooling)
    ref = StoredRef.from_json(info.get("base"))
    if ref is not None:
        load_base(model, ref)  # before the strategy wraps it: the base's names are the plain ones
    strategy = get_strategy(hp.strategy)
    apply = (lambda m: m) if info.get("merged", False) else (lambda m: strategy.apply(m, hp))
    model, plan, _ = plan_delta(model, apply)  # adapters and prompts: the structure trained
    plan.ref = ref
    if ref is None:
        load_model(model, str(directory / WEIGHTS_FILE), strict=True)
        return model, plan
    delta = load_file(str(directory / WEIGHTS_FILE))
    result = model.load_state_dict(delta, strict=False)
    missing = check_complete(model, set(delta), plan)
    if result.unexpected_keys or missing:
        odd = (result.unexpected_keys or missing)[:3]
        raise ValueError(f"{directory}: weights do not fit the trial's structure (e.g. {', '.join(odd)})")
    return model, plan


def load_classifier(directory: str | Path) -> Any:
    """The trained classifier in ``directory`` (a checkpoint or an export), on the CPU, in eval mode."""
    return load_checkpoint(directory)[0].eval()


def write_standalone(source: str | Path, out: str | Path) -> bool:
    """Write the checkpoint in ``source`` to ``out`` as deployable weights; True if adapters were merged.

    LoRA adapters are merged into the weights they adapt (a plain model again); other
    strategies keep their structure. A delta checkpoint gets its base folded in and the sweep's
    tokenizer files copied in, so the export holds everything and refers to nothing. Optimizer
    state is never copied.
    """
    import shutil

    from trainables.strategies import get_strategy

    source, out = Path(source), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = read_trial_info(source)
    _, hp = _structure(info)
    merged = False
    strategy = get_strategy(hp.strategy)
    rewrite = bool(info.get("base")) or (strategy.mergeable and not info.get("merged", False))
    if rewrite:
        model = load_classifier(source)
        if strategy.mergeable and not info.get("merged", False):
            model, merged = strategy.standalone(model)
    tokenizer = StoredRef.from_json(info.get(TOKENIZER_KEY))
    rewritten = {WEIGHTS_FILE, TRIAL_FILE} if rewrite else {TRIAL_FILE} if tokenizer else set()
    for f in source.iterdir():
        if f.is_file() and f.name != RESUME_FILE and f.name not in rewritten:
            shutil.copy2(f, out / f.name)
    if rewrite:
        from safetensors.torch import save_model

        save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    if tokenizer is not None:
        unpack_into(tokenizer, out)
    if TRIAL_FILE in rewritten:
        standalone = {k: v for k, v in info.items() if k not in ("base", TOKENIZER_KEY)}
        standalone["merged"] = merged or bool(info.get("merged", False))
        (out / TRIAL_FILE).write_text(json.dumps(standalone, indent=2, sort_keys=True))
    return merged
