"""Every strategy under DistributedDataParallel (2 gloo ranks, as Ray Train wraps a multi-worker trial).

DDP needs every trainable parameter to receive a gradient each step (Ray's ``prepare_model`` uses
``find_unused_parameters=False``), and the ranks must stay identical after their all-reduced
steps. Checked on the real strategy code with a tiny BERT, for both poolings.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import free_port
from tests.test_strategies import ARCHS, _batch, _build, _cfg
from trainables.strategies import STRATEGIES, get_strategy

BERT = next(a for a in ARCHS if a.id == "bert")


CASES = [(s, p) for s in sorted(STRATEGIES) for p in ("cls", "mean")]


def _rank(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    try:
        for strategy, pooling in CASES:
            out[(rank, strategy, pooling)] = _steps(rank, strategy, pooling)
    finally:
        dist.destroy_process_group()


def _steps(rank: int, strategy: str, pooling: str) -> dict:
    model = get_strategy(strategy).apply(_build(BERT, pooling), _cfg(strategy))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # what ray.train.torch.prepare_model does
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch()
    shard = {k: v[rank::2] for k, v in batch.items()}  # each rank its own examples
    ddp.train()
    for _ in range(2):
        optimizer.zero_grad()
        ddp(**shard).loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"no gradient for {missing[:3]}"
        optimizer.step()
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    moved = sum(not torch.equal(before[n], after[n]) for n in after)
    flat = torch.cat([after[n].flatten() for n in sorted(after)])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    return {"moved": moved, "total": len(after), "same": bool(torch.equal(gathered[0], gathered[1]))}


def test_every_strategy_trains_in_sync_under_ddp():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_rank, args=(free_port(), out), nprocs=2, join=True, start_method="spawn")
        result = dict(out)
    for strategy, pooling in CASES:
        for rank in (0, 1):
            r = result[(rank, strategy, pooling)]
            assert r["same"], f"{strategy}/{pooling}: ranks diverged"
            assert r["moved"] == r["total"] > 0, (strategy, pooling, r)
