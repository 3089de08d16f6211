"""Checkpoint directories: the unit that is reported to Ray, selected, exported and served.

Layout (no pickled objects anywhere)::

    model.safetensors, config.json        # save_pretrained: weights + config with id2label
    tokenizer.json, tokenizer_config.json, ...
    trial.json                            # hyper-parameters, labels, template, epoch, metrics
    resume.pt                             # optimizer/scheduler/RNG state: tensors and plain
                                          # containers only, loaded with weights_only=True

A checkpoint directory is also a valid Hugging Face model directory, so
``AutoModelForSequenceClassification.from_pretrained(ckpt)`` works on it directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["RESUME_FILE", "TRIAL_FILE", "load_resume_state", "read_trial_info", "save_checkpoint"]

TRIAL_FILE = "trial.json"
RESUME_FILE = "resume.pt"


def save_checkpoint(
    directory: str | Path,
    *,
    model: Any,
    tokenizer: Any,
    trial_info: dict[str, Any],
    resume_state: dict[str, Any] | None,
) -> None:
    """Write one checkpoint into an existing, empty ``directory`` (rank 0 only)."""
    directory = Path(directory)
    model.save_pretrained(directory)  # safetensors
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
