"""``train.micro_batch_size``: gradient accumulation gives the step of the whole batch.

The project's own ``train_epoch`` runs a tiny BERT (dropout off, so the only difference is how
the batch is cut) once on whole batches and once on micro-batches, in one process and under
DDP with 2 gloo ranks (where only the last micro-batch of a step all-reduces: counted). The weights
after the epoch and the summed loss must agree to float tolerance.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import transformers as hf

from tests.conftest import free_port
from tests.test_freezing import SIZES
from trainables.config import Hyperparameters
from trainables.device import grad_scaler
from trainables.loop import micro_batches, train_epoch
from trainables.metrics import collate, eval_batch_size
from trainables.models import classifier_from_config


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = hf.BertConfig(
        **SIZES, num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    config.num_labels = 3
    return classifier_from_config(config, "mean")


def _batches(rank: int = 0, world: int = 1) -> list[dict[str, torch.Tensor]]:
    """Two batches of 7 rows of different lengths (padded as the training loader pads)."""
    g = torch.Generator().manual_seed(1)
    rows = [
        (torch.randint(3, 100, (int(n),), generator=g).tolist(), i % 3) for i, n in enumerate(range(4, 32, 2))
    ]
    rows = rows[rank::world]
    pad = collate(0)
    return [pad(rows[i : i + 7]) for i in range(0, len(rows), 7)]


def _epoch(model: torch.nn.Module, batches, micro: int | None) -> tuple[torch.Tensor, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    cpu = torch.device("cpu")
    seen, loss_sum = train_epoch(
        model,
        [dict(b) for b in batches],
        optimizer,
        scheduler,
        grad_scaler("fp32", cpu),
        params,
        precision="fp32",
        device=cpu,
        micro_batch_size=micro,
    )
    assert seen == sum(len(b["labels"]) for b in batches)
    return torch.cat([p.detach().flatten() for p in params]), loss_sum


def test_micro_batches_cut_rows_and_keep_the_padding_width():
    batch = _batches()[0]
    parts = micro_batches(batch, 3)
    assert [len(p["labels"]) for p in parts] == [3, 3, 1]
    assert all(p["input_ids"].shape[1] == batch["input_ids"].shape[1] for p in parts)
    assert torch.equal(torch.cat([p["input_ids"] for p in parts]), batch["input_ids"])
    assert micro_batches(batch, None) == [batch] and micro_batches(batch, 7) == [batch]


@pytest.mark.parametrize("micro", [1, 3])
def test_accumulated_micro_batches_take_the_whole_batch_step(micro):
    whole, whole_loss = _epoch(_model(), _batches(), None)
    accumulated, accumulated_loss = _epoch(_model(), _batches(), micro)
    moved = _epoch(_model(), _batches()[:1], None)[0]
    assert not torch.allclose(moved, whole)  # the second batch's step is visible in the weights
    torch.testing.assert_close(accumulated, whole, rtol=1e-5, atol=2e-6)
    assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)


def test_micro_batch_size_is_a_train_knob_not_a_search_knob():
    from orchestrator.spec import SearchSpec

    assert Hyperparameters(micro_batch_size=8).micro_batch_size == 8
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Hyperparameters(micro_batch_size=0)
    with pytest.raises(ValueError, match="set once per sweep; move it to train.micro_batch_size"):
        SearchSpec(num_trials=2, space={"micro_batch_size": {"type": "choice", "values": [4, 8]}})
    # evaluation (training, promotion, prediction alike) batches twice one pass's rows
    assert eval_batch_size(32) == 64 and eval_batch_size(32, 8) == 16 and eval_batch_size(4, 8) == 8


def _counting_allreduce(calls: list, bucket):
    """DDP's own gradient all-reduce, counted (one call per bucket per synchronised backward)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    calls[0] += 1
    return allreduce_hook(None, bucket)


def _rank(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        for micro in (None, 2):
            ddp = torch.nn.parallel.DistributedDataParallel(_model())  # as ray.train.torch.prepare_model
            calls = [0]
            ddp.register_comm_hook(calls, _counting_allreduce)
            flat, loss = _epoch(ddp, _batches(rank, 2), micro)
            gathered = [torch.zeros_like(flat) for _ in range(2)]
            dist.all_gather(gathered, flat)
            out[(rank, micro)] = (flat, loss, bool(torch.equal(gathered[0], gathered[1])), calls[0])
    finally:
        dist.destroy_process_group()


def test_micro_batches_under_ddp_match_whole_batches_and_keep_ranks_in_sync():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_rank, args=(free_port(), out), nprocs=2, join=True, start_method="spawn")
        result = dict(out)
    for rank in (0, 1):
        whole, whole_loss, whole_same, whole_calls = result[(rank, None)]
        accumulated, accumulated_loss, same, calls = result[(rank, 2)]
        assert whole_same and same, "ranks diverged"
        assert calls == whole_calls > 0  # no_sync: one all-reduce per optimizer step, not per micro-batch
        torch.testing.assert_close(accumulated, whole, rtol=1e-5, atol=2e-6)
        assert accumulated_loss == pytest.approx(whole_loss, rel=1e-5)
