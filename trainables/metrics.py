"""Evaluation: batching, metrics from a confusion matrix (summable across ranks), the eval pass.

Training, promotion and prediction all evaluate through :func:`evaluate`, with the same
batching, so a reloaded checkpoint reproduces the metric logged during the sweep exactly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from search_spaces import objectives as M
from trainables.device import autocast
from trainables.stopping import raise_if_stopped

__all__ = [
    "all_reduce",
    "classification_metrics",
    "collate",
    "eval_batch_size",
    "evaluate",
    "evaluation_sums",
    "to_device",
]


def eval_batch_size(train_batch_size: int, micro_batch_size: int | None = None) -> int:
    """Evaluation batch size: twice the rows of one training pass (no gradients are kept).

    One definition for training, promotion and prediction, so all of them batch alike.
    """
    return 2 * min(train_batch_size, micro_batch_size or train_batch_size)


def collate(pad_id: int):
    """Pad ``(input_ids, label)`` pairs to the longest in the batch (right padding + attention mask).

    Items may carry a third element, the example's index in its split (``index`` in the batch):
    what ``trainables.prefix_cache`` looks stored states up by.
    """

    def collate_batch(batch: list[tuple]) -> dict[str, torch.Tensor]:
        width = max(len(item[0]) for item in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, : len(item[0])] = torch.tensor(item[0])
            attention[row, : len(item[0])] = 1
        out = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": torch.tensor([item[1] for item in batch]),
        }
        if len(batch[0]) > 2:
            out["index"] = torch.tensor([item[2] for item in batch])
        return out

    return collate_batch


def to_device(
    batch: dict[str, torch.Tensor], device, feed=None, split: str = "train"
) -> dict[str, torch.Tensor]:
    """The model's inputs on ``device``; a prefix feed (if any) gets the batch's stored ``split`` states."""
    index = batch.pop("index", None)
    if feed is not None:
        feed.load(split, index, batch["input_ids"].shape[1])
    return {k: v.to(device) for k, v in batch.items()}


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks when running distributed; identity otherwise."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def classification_metrics(confusion: torch.Tensor, loss_sum: float) -> dict[str, float]:
    """Accuracy, macro-F1 and mean loss; ``confusion[true, predicted]`` holds counts.

    Macro-F1 averages over the labels that occur in the truth or the predictions (as
    scikit-learn's ``f1_score(average="macro")`` does); a label with no true positives scores 0.
    """
    confusion = confusion.double()
    total = confusion.sum().item()
    tp = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = torch.where(present, 2 * tp / (support + predicted).clamp(min=1), torch.zeros_like(tp))
    return {
        M.EVAL_ACCURACY: tp.sum().item() / total if total else 0.0,
        M.EVAL_F1_MACRO: f1[present].mean().item() if present.any() else 0.0,
        M.EVAL_LOSS: loss_sum / total if total else 0.0,
    }


@torch.no_grad()
def evaluation_sums(
    model,
    examples,
    *,
    batch_size: int,
    pad_id: int,
    num_labels: int,
    device,
    precision: str,
    feed=None,
    keep: list | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(confusion matrix, summed loss) over ``examples`` on this process: what ranks add up.

    ``keep`` (a list) receives each batch's (labels, label probabilities) on CPU.
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros((num_labels, num_labels), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in DataLoader(examples, batch_size=batch_size, collate_fn=collate(pad_id)):
        raise_if_stopped()
        batch = to_device(batch, device, feed, "validation")
        with autocast(precision, device):
            out = model(**batch)
        loss_sum += torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"], reduction="sum")
        pred = out.logits.argmax(-1)
        if keep is not None:
            keep.append((batch["labels"].cpu(), torch.softmax(out.logits.float(), dim=-1).cpu()))
        confusion.index_put_(
            (batch["labels"], pred), torch.ones_like(pred, dtype=torch.float64), accumulate=True
        )
    model.train(was_training)  # a predictor's model stays in eval mode (no dropout in predict)
    return confusion, loss_sum


def evaluate(model, examples, **kwargs) -> dict[str, float]:
    """Loss, accuracy and macro-F1 over ``examples`` (this rank's shard), summed over ranks.

    Pass the unwrapped model: uneven shards then need no DDP collective in forward. With a
    ``feed`` (``trainables.prefix_cache.PrefixFeed``) the frozen prefix is read, not computed.
    Keyword arguments as :func:`evaluation_sums`.
    """
    confusion, loss_sum = evaluation_sums(model, examples, **kwargs)
    all_reduce(confusion)
    all_reduce(loss_sum)
    return classification_metrics(confusion.cpu(), loss_sum.item())
