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


def test_evaluation_leaves_the_model_in_the_mode_it_found():
    """Training continues in train mode after an epoch's evaluation; a predictor's model stays in
    eval mode (no dropout in the predictions after ``promote``'s re-evaluation)."""
    import torch

    from tests.test_micro_batches import _batches, _model
    from trainables.metrics import evaluate

    rows = [
        (b["input_ids"][i].tolist(), int(b["labels"][i])) for b in _batches() for i in range(len(b["labels"]))
    ]
    kwargs = dict(batch_size=4, pad_id=0, num_labels=3, device=torch.device("cpu"), precision="fp32")
    model = _model()
    for mode in (True, False):
        model.train(mode)
        evaluate(model, rows, **kwargs)
        assert model.training is mode
