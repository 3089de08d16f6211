"""A stop requested in a worker ends the project's training and evaluation loops at their next batch."""

from __future__ import annotations

import pytest
import torch

from tests.test_micro_batches import _batches, _epoch, _model
from trainables.device import grad_scaler
from trainables.loop import train_epoch
from trainables.metrics import evaluate
from trainables.stopping import TrialStopped, clear_stop, request_stop


@pytest.fixture(autouse=True)
def _no_stop_left():
    clear_stop()
    yield
    clear_stop()


def test_train_epoch_and_evaluation_end_at_the_next_batch_once_a_stop_is_requested():
    model, batches = _model(), _batches()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    cpu = torch.device("cpu")
    with pytest.raises(TrialStopped):  # asked during the first step: the second never starts
        train_epoch(
            model, [dict(b) for b in batches], optimizer, scheduler, grad_scaler("fp32", cpu), params,
            precision="fp32", device=cpu, on_first_step=request_stop,
        )  # fmt: skip
    assert scheduler.last_epoch == 1  # exactly one optimizer step of the two batches
    rows = [
        (b["input_ids"][i].tolist(), int(b["labels"][i])) for b in batches for i in range(len(b["labels"]))
    ]
    kwargs = dict(batch_size=4, pad_id=0, num_labels=3, device=cpu, precision="fp32")
    with pytest.raises(TrialStopped):
        evaluate(model, rows, **kwargs)
    clear_stop()  # what a parked worker gets before its next run
    _epoch(model, batches, None)
    assert set(evaluate(model, rows, **kwargs)) >= {"eval_accuracy", "eval_loss"}
