"""Inference from a checkpoint or export directory, with the trial's own context template.

A directory is usable when it holds ``model.safetensors`` + ``config.json`` + tokenizer files +
``trial.json`` (a checkpoint), and, for few-shot templates, ``demonstrations.parquet`` (the
training rows demonstrations are drawn from; an export includes it). No MLflow here: the
pyfunc wrapper in ``orchestrator.pyfunc_model`` and the CLI both call this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from search_spaces.errors import UserError
from search_spaces.templates import parse_template
from trainables.checkpoints import read_trial_info
from trainables.context import ContextEncoder
from trainables.data import Split, read_split
from trainables.metrics import classification_metrics, collate, eval_batch_size, evaluation_sums

__all__ = [
    "DEMONSTRATIONS_FILE",
    "CheckpointError",
    "TextClassifier",
    "check_checkpoint",
    "evaluation_device",
]

DEMONSTRATIONS_FILE = "demonstrations.parquet"
REQUIRED = ("config.json", "model.safetensors", "trial.json")


class CheckpointError(UserError):
    """A directory is not a usable checkpoint; the message says what is missing or broken."""


def check_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Cheap integrity check (files present, trial.json readable, safetensors header valid)."""
    from safetensors import safe_open

    directory = Path(directory)
    missing = [f for f in REQUIRED if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"{directory}: not a checkpoint (missing {', '.join(missing)})")
    try:
        info = read_trial_info(directory)
        with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
            if not list(f.keys()):
                raise ValueError("no tensors")
    except Exception as exc:
        raise CheckpointError(f"{directory}: corrupt checkpoint ({type(exc).__name__}: {exc})") from None
    for key in ("label_names", "template", "template_name", "max_length", "hyperparameters"):
        if key not in info:
            raise CheckpointError(f"{directory}: trial.json lacks '{key}'")
    return info


class TextClassifier:
    """Load once, then ``predict`` texts or ``evaluate`` a labelled split."""

    def __init__(
        self, directory: str | Path, *, demonstrations: Split | None = None, device: str | None = None
    ):
        """``device``: None = the kind the trial evaluated on (its ``trial.json``) where this machine
        has it, else CPU."""
        from transformers import AutoConfig

        from trainables.checkpoints import load_classifier
        from trainables.models import load_tokenizer
        from trainables.stored_tokenizer import tokenizer_dir

        directory = Path(directory)
        self.info = check_checkpoint(directory)
        self.label_names: list[str] = list(self.info["label_names"])
        self.template = parse_template(self.info["template_name"], self.info["template"])
        if demonstrations is None and (directory / DEMONSTRATIONS_FILE).exists():
            demonstrations = read_split(str(directory / DEMONSTRATIONS_FILE))
        if self.template.shots and demonstrations is None:
            raise CheckpointError(
                f"{directory}: template '{self.info['template_name']}' needs {DEMONSTRATIONS_FILE} "
                "(use an exported directory, or pass the training split)"
            )
        demos = demonstrations or Split([], [])
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
        self.tokenizer = load_tokenizer(str(tokenizer_dir(directory, self.info)), config=config)
        self.device = evaluation_device(self.info, device)
        self.model = load_classifier(directory).to(self.device)  # pooling and strategy from trial.json
        hp = self.info["hyperparameters"]
        precision = hp.get("precision", "fp32")
        # fp16 autocast is CUDA-only: fp32 elsewhere (trainables.reproduce says what then counts as equal)
        self.precision = precision if precision != "fp16" or self.device.type == "cuda" else "fp32"
        self.batch_size = eval_batch_size(int(hp.get("batch_size", 16)), hp.get("micro_batch_size"))
        self.encoder = ContextEncoder(
            self.tokenizer,
            self.template,
            label_names=self.label_names,
            train_texts=demos.texts,
            train_labels=demos.labels,
            max_length=int(self.info["max_length"]),
            seed=int(self.info.get("data_seed", 0)),
        )

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One dict per text: ``label``, ``score`` (its probability) and ``scores`` per label name."""
        ids = self.encoder.encode(list(texts), split="test").input_ids
        loader = torch.utils.data.DataLoader(
            [(x, 0) for x in ids], batch_size=self.batch_size, collate_fn=collate(self.tokenizer.pad_token_id)
        )
        out = []
        for batch in loader:
            batch.pop("labels")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            probs = torch.softmax(self.model(**batch).logits.float(), dim=-1).cpu()
            for row in probs.tolist():
                best = max(range(len(row)), key=row.__getitem__)
                out.append(
                    {
                        "label": self.label_names[best],
                        "score": row[best],
                        "scores": dict(zip(self.label_names, row, strict=True)),
                    }
                )
        return out

    def evaluate(self, split: Split, *, name: str = "validation") -> dict[str, float]:
        """Accuracy, macro-F1 and loss on a labelled split, batched exactly as during training."""
        return self.evaluate_with_probabilities(split, name=name)[0]

    def evaluate_with_probabilities(
        self, split: Split, *, name: str = "validation"
    ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """:meth:`evaluate`, plus the labels and each example's label probabilities (CPU tensors).

        The examples are split as the trial's ranks split them (``evaluated_on.ranks`` in
        ``trial.json``), each shard batched on its own, and the sums added: the same batches,
        padding and sums as the logged metric.
        """
        enc = self.encoder.encode(split.texts, split=name)  # type: ignore[arg-type]
        examples = list(zip(enc.input_ids, split.labels, strict=True))
        ranks = int(self.info.get("evaluated_on", {}).get("ranks", 1))
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        n = len(self.label_names)
        confusion, loss_sum = torch.zeros((n, n), dtype=torch.float64), 0.0
        for rank in range(ranks):
            c, loss = evaluation_sums(
                self.model,
                examples[rank::ranks],
                batch_size=self.batch_size,
                pad_id=self.tokenizer.pad_token_id,
                num_labels=n,
                device=self.device,
                precision=self.precision,
                keep=kept,
            )
            confusion, loss_sum = confusion + c.cpu(), loss_sum + loss.item()
        labels = torch.cat([k[0] for k in kept]) if kept else torch.zeros(0, dtype=torch.long)
        probs = torch.cat([k[1] for k in kept]) if kept else torch.zeros((0, n))
        return classification_metrics(confusion, loss_sum), labels, probs


def evaluation_device(info: dict[str, Any], device: str | None = None) -> torch.device:
    """``device`` if given; else the kind of device the trial evaluated on, where this machine has
    it (a CUDA-trained checkpoint on a machine without a GPU is evaluated on CPU)."""
    if device is not None:
        return torch.device(device)
    trained = info.get("evaluated_on", {}).get("device", "cpu")
    return torch.device("cuda" if trained == "cuda" and torch.cuda.is_available() else "cpu")
