"""A stop requested in a worker ends the project's training and evaluation loops at their next batch;
the ranks of a DDP group all end at the same training batch, whichever rank was asked."""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import free_port
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


def _rank(rank: int, port: int, out: dict) -> None:
    """Rank 1 alone is asked to stop, during its first step; both train and then evaluate."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=20))
    torch.set_num_threads(1)
    try:
        model = _model()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        cpu = torch.device("cpu")
        try:
            train_epoch(
                ddp, [dict(b) for b in _batches()], optimizer, scheduler, grad_scaler("fp32", cpu), params,
                precision="fp32", device=cpu, on_first_step=request_stop if rank == 1 else None,
            )  # fmt: skip
            out[(rank, "train")] = "finished"
        except TrialStopped:
            out[(rank, "train")] = f"stopped after {scheduler.last_epoch} step(s)"
        request_stop()  # both ranks now; evaluation shards are uneven: no rank stops alone there
        rows = [(list(range(3, 3 + n)), n % 3) for n in range(4, 4 + 5 + rank)]
        kwargs = dict(batch_size=2, pad_id=0, num_labels=3, device=cpu, precision="fp32")
        out[(rank, "eval")] = evaluate(model, rows, **kwargs)["eval_accuracy"] >= 0
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_stop_together_at_the_next_training_batch():
    """2 gloo ranks, 2 batches each: the stop asked of rank 1 during step 1 ends both ranks
    before step 2 (alone, rank 0 would wait forever in step 2's gradient all-reduce)."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_rank, args=(free_port(), out), nprocs=2, join=True, start_method="spawn")
        result = dict(out)
    assert result[(0, "train")] == result[(1, "train")] == "stopped after 1 step(s)"
    assert result[(0, "eval")] and result[(1, "eval")]
