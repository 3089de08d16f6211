"""Checkpoint directories: the unit that is reported to Ray, selected, exported and served.

Layout (no pickled objects anywhere)::

    model.safetensors                     # the state dict of the model as trained (peft wrappers
                                          # included), or merged adapters in an export
    config.json                           # the Hugging Face config, with id2label
    tokenizer.json, tokenizer_config.json, ...
    trial.json                            # hyper-parameters (pooling and strategy resolved),
                                          # labels, template, epoch, metrics, "merged"
    resume.pt                             # optimizer/scheduler/RNG state: tensors and plain
                                          # containers only, loaded with weights_only=True

:func:`load_classifier` rebuilds the structure from ``config.json`` + ``trial.json`` (pooling,
strategy) and loads the weights strictly. For ``pooling: cls`` with ``full`` or ``bitfit`` on an
encoder (and merged LoRA exports of those) the directory is also a plain Hugging Face model
directory: ``AutoModelForSequenceClassification.from_pretrained(ckpt)`` works on it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RESUME_FILE",
    "TRIAL_FILE",
    "WEIGHTS_FILE",
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
) -> None:
    """Write one checkpoint into an existing, empty ``directory`` (rank 0 only)."""
    from safetensors.torch import save_model

    from trainables.strategies import unwrap

    directory = Path(directory)
    unwrap(model).config.save_pretrained(directory)
    # save_model keeps one name per shared tensor; load_model restores the others
    save_model(model, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
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


def load_classifier(directory: str | Path) -> Any:
    """The trained classifier in ``directory`` (a checkpoint or an export), on the CPU, in eval mode."""
    from safetensors.torch import load_model
    from transformers import AutoConfig

    from trainables.models import classifier_from_config
    from trainables.strategies import get_strategy

    directory = Path(directory)
    info = read_trial_info(directory)
    pooling, hp = _structure(info)
    config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    model = classifier_from_config(config, pooling)
    if not info.get("merged", False):
        model = get_strategy(hp.strategy).apply(model, hp)  # adapters and prompts: same structure
    load_model(model, str(directory / WEIGHTS_FILE), strict=True)
    return model.eval()


def write_standalone(source: str | Path, out: str | Path) -> bool:
    """Write the checkpoint in ``source`` to ``out`` as deployable weights; True if adapters were merged.

    LoRA adapters are merged into the weights they adapt (a plain model again); other
    strategies are copied as they are. Optimizer state is never copied.
    """
    import shutil

    from trainables.strategies import get_strategy

    source, out = Path(source), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = read_trial_info(source)
    _, hp = _structure(info)
    merged = False
    strategy = get_strategy(hp.strategy)
    if strategy.mergeable and not info.get("merged", False):
        model, merged = strategy.standalone(load_classifier(source))
    for f in source.iterdir():
        if f.is_file() and f.name != RESUME_FILE and not (merged and f.name in (WEIGHTS_FILE, TRIAL_FILE)):
            shutil.copy2(f, out / f.name)
    if merged:
        from safetensors.torch import save_model

        save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
        (out / TRIAL_FILE).write_text(json.dumps({**info, "merged": True}, indent=2, sort_keys=True))
    return merged
