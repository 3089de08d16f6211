from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from trainables.metrics import classification_metrics


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 4, 50)
    y_pred = np.where(rng.random(50) < 0.6, y_true, rng.integers(0, 3, 50))
    confusion = torch.zeros((4, 4))
    for t, p in zip(y_true, y_pred, strict=True):
        confusion[t, p] += 1
    m = classification_metrics(confusion, loss_sum=25.0)
    assert m["eval_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["eval_f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert m["eval_loss"] == pytest.approx(0.5)
