"""Evaluation metrics from a confusion matrix (so they can be summed across ranks first)."""

from __future__ import annotations

import torch

from search_spaces import objectives as M

__all__ = ["classification_metrics"]


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
