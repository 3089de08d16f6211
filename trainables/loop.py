"""The training loop every Ray Train worker runs: read it top to bottom.

Contract: ``train_loop_per_worker(config)`` is given to ``TorchTrainer`` with the flat trial
config (see ``trainables.config.TrainConfig``). Every rank calls ``ray.train.report`` once per
epoch with identical metric keys (see ``search_spaces.objectives``); only rank 0 writes a
checkpoint. It never talks to MLflow or Tune: the driver records what it reports.
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from search_spaces import objectives as M
from search_spaces.presets import resolve_template
from trainables.base_weights import DeltaPlan, plan_delta, write_base
from trainables.checkpoints import load_checkpoint, load_resume_state, read_trial_info, save_checkpoint
from trainables.config import TrainConfig
from trainables.device import (
    autocast,
    describe_device,
    grad_scaler,
    out_of_memory_as_error,
    resolve_precision,
    train_device,
)
from trainables.encoded import encoded_splits
from trainables.freezing import count_trainable_parameters, resolve_depth
from trainables.metrics import all_reduce, collate, eval_batch_size, evaluate, to_device
from trainables.models import build_classifier, load_tokenizer, resolved_pooling
from trainables.prefix_cache import PrefixFeed, feature_key, prefix_features
from trainables.stopping import raise_if_stopped
from trainables.stored import StoredRef
from trainables.stored_tokenizer import store_tokenizer
from trainables.strategies import get_strategy

__all__ = [
    "GIL_SWITCH_INTERVAL_S",
    "build_model",
    "encode_splits",
    "make_optimizer",
    "micro_batches",
    "resolve_trial_config",
    "train_epoch",
    "train_loop_per_worker",
    "trial_record",
]

GIL_SWITCH_INTERVAL_S = 0.1  # in a trial's worker process (Python's default: 0.005)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_trial_config(config: dict[str, Any]) -> TrainConfig:
    """Validate the flat trial config; ``pooling: auto`` is decided from the model source here too."""
    cfg = TrainConfig.model_validate(config)
    if cfg.pooling == "auto":
        cfg = cfg.model_copy(update={"pooling": resolved_pooling(cfg.task.model, "auto")})
    return cfg


def encode_splits(cfg: TrainConfig, tokenizer: Any) -> tuple[list, list, int, Any]:
    """(train examples, validation examples, truncated count, template): ``(input_ids, label)`` pairs.

    Read from the sweep's cache when this template was encoded before (see ``trainables.encoded``).
    """
    template = resolve_template(cfg.context_template, cfg.task.templates)
    encoded = encoded_splits(cfg.task, template, tokenizer)
    return encoded.train, encoded.validation, encoded.truncated, template


def build_model(
    cfg: TrainConfig, tokenizer: Any, *, store_base: bool = False
) -> tuple[torch.nn.Module, DeltaPlan]:
    """The pretrained classifier with ``cfg.strategy`` applied (frozen prefix, adapters, prompts).

    With ``store_base`` (rank 0 of a sweep's trial) and a ``task.cache_dir``, the frozen base
    weights are stored there once, and the plan lets checkpoints hold only what is trained.
    """
    model = build_classifier(
        cfg.task.model,
        cfg.task.label_names,
        pooling=cfg.pooling,
        pad_token_id=tokenizer.pad_token_id,
        seed=cfg.seed,
    )
    strategy = get_strategy(cfg.strategy)
    model, plan, base = plan_delta(model, lambda m: strategy.apply(m, cfg))
    if store_base and cfg.task.cache_dir and plan.from_base:
        plan.ref = write_base(base, f"{cfg.task.cache_dir.rstrip('/')}/base")
    return model, plan


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int) -> tuple[Any, Any, list]:
    """AdamW over the trainable parameters with linear warm-up and decay: (optimizer, scheduler, params)."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler, params


def micro_batches(batch: dict[str, torch.Tensor], size: int | None) -> list[dict[str, torch.Tensor]]:
    """``batch`` cut into consecutive row slices of at most ``size`` (None: the batch itself).

    Slices keep the batch's padding width, so every row is computed exactly as in the whole batch.
    """
    rows = len(batch["labels"])
    if size is None or size >= rows:
        return [batch]
    return [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, rows, size)]


def _no_sync(model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's gradient all-reduce only on the last micro-batch of a step (one all-reduce per step)."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def train_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    scaler,
    params,
    *,
    precision,
    device,
    on_first_step=None,
    feed=None,
    micro_batch_size=None,
):
    """One pass over ``loader``; returns (examples seen, summed loss). Frozen modules stay in eval mode.

    With a ``feed`` the frozen prefix's stored states are read instead of computed. With a
    ``micro_batch_size`` each batch's gradient is accumulated over micro-batches, each loss
    weighted by its share of the batch: the same step as the whole batch, in less memory.
    """
    model.train()
    seen, loss_sum = 0, 0.0
    for batch in loader:
        raise_if_stopped(ranks_in_step=True, device=device)  # ranks get equal numbers of batches
        rows = len(batch["labels"])
        optimizer.zero_grad(set_to_none=True)
        parts = micro_batches(batch, micro_batch_size)
        for i, part in enumerate(parts):
            part = to_device(part, device, feed)
            with _no_sync(model, last=i == len(parts) - 1):
                with autocast(precision, device):
                    loss = model(**part).loss
                scaler.scale(loss * (len(part["labels"]) / rows)).backward()
            loss_sum += loss.item() * len(part["labels"])
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if on_first_step is not None and seen == 0:
            on_first_step()
        seen += rows
    return seen, loss_sum


def trial_record(
    cfg: TrainConfig, template: Any, epoch: int, metrics: dict[str, Any], *, evaluated_on: dict[str, str]
) -> dict[str, Any]:
    """``trial.json`` of a checkpoint: what loading, promotion and serving need to know.

    ``evaluated_on`` (device kind and name, precision) tells promotion where the logged metrics
    were computed (see ``trainables.reproduce``).
    """
    task = cfg.task
    return {
        "trial_id": cfg.trial_id,
        "epoch": epoch,
        "hyperparameters": cfg.for_trial(),
        "label_names": task.label_names,
        "template_name": cfg.context_template,
        "template": template.model_dump(),
        "model_source": task.model,
        "max_length": task.max_length,
        "data_seed": task.data_seed,
        "merged": False,
        "metrics": metrics,
        "evaluated_on": evaluated_on,
    }


@dataclass
class _Start:
    """Where a trial's workers start: a fresh model, or the latest checkpoint Ray hands back."""

    model: torch.nn.Module
    plan: DeltaPlan
    epoch: int = 0  # the last epoch already trained (0: none)
    resume: dict | None = None  # optimizer/scheduler/RNG state of that epoch, when it was kept
    metrics: dict | None = None  # what that epoch reported


def _restore_or_build(cfg: TrainConfig, tokenizer: Any) -> _Start:
    """The latest checkpoint Ray hands us, else a fresh model (its frozen base stored once).

    Either way the strategy (freezing, adapters, prompts) is applied before the DDP wrap.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        # every rank: the base's sha256 names the prefix cache's entries (the first one writes it)
        return _Start(*build_model(cfg, tokenizer, store_base=True))
    with checkpoint.as_directory() as ckpt_dir:
        info = read_trial_info(ckpt_dir)
        model, plan = load_checkpoint(ckpt_dir)
        return _Start(model, plan, int(info["epoch"]), load_resume_state(ckpt_dir), info.get("metrics"))


def _indexed(rows: list) -> list:
    """``(input_ids, label, index)``: the index is what stored prefix states are looked up by."""
    return [(ids, label, i) for i, (ids, label) in enumerate(rows)]


def _prefix_feed(
    cfg: TrainConfig,
    model: torch.nn.Module,
    plan: DeltaPlan,
    encoded: Any,
    splits: dict[str, list],
    *,
    device: Any,
    pad_id: int,
    rank: int,
) -> tuple[PrefixFeed | None, dict[str, int]]:
    """The frozen prefix's states from the sweep's cache (computed once per key), or None.

    Rank 0 reads or computes the entry first; the other ranks then map it (each touches only the
    rows its loader's shard asks for). Every rank reports what rank 0 found.
    """
    import torch.distributed as dist

    from trainables.strategies import unwrap

    depth = resolve_depth(cfg.freeze_layers, unwrap(model))
    task, none = cfg.task, {M.CACHE_HIT: 0, M.CACHED_DEPTH: 0, M.CACHE_TRAIN_BITS: 0}
    usable = task.prefix_cache_bytes > 0 and task.cache_dir and encoded.key and plan.ref
    if not usable or depth == 0 or not get_strategy(cfg.strategy).reads_frozen_prefix:
        return None, none
    distributed = dist.is_available() and dist.is_initialized()
    eval_batch = eval_batch_size(
        cfg.batch_size, cfg.micro_batch_size
    )  # validation states in evaluation's own batches
    if distributed and rank != 0:
        dist.barrier()  # rank 0 has stored the entry (or found it)
    use = prefix_features(
        model,
        splits,
        depth,
        cache_dir=task.cache_dir,
        max_bytes=task.prefix_cache_bytes,
        key_of=lambda j: feature_key(plan.ref.sha256, encoded.key, j, eval_batch, task.prefix_cache_dtype),
        batch_size=eval_batch,
        pad_id=pad_id,
        device=device,
        train_dtype=task.prefix_cache_dtype,
    )
    if distributed and rank == 0:
        dist.barrier()
    if use is None:  # blocks that return more than a tensor: run the prefix every step
        return None, none
    bits = use.features["train"].hidden.element_size() * 8
    found = torch.tensor([int(use.read_depth > 0), use.read_depth, bits], device=device)
    if distributed:
        dist.broadcast(found, src=0)
    hit, read_depth, bits = (int(x) for x in found.tolist())
    return PrefixFeed(model, depth, use.features), {
        M.CACHE_HIT: hit,
        M.CACHED_DEPTH: read_depth,
        M.CACHE_TRAIN_BITS: bits,
    }


def _resume_optimizer(
    start: _Start, optimizer: Any, scheduler: Any, generator: torch.Generator, steps: int
) -> int:
    """Restore optimizer, schedule and RNG state after ``start.epoch``; return that epoch.

    Without saved state (``keep_resume_state: false``) training goes on from the checkpoint's
    weights with fresh optimizer moments, the schedule moved to where the epoch left it.
    """
    if start.resume is None:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start.epoch * steps):
                scheduler.step()
        return start.epoch
    optimizer.load_state_dict(start.resume["optimizer"])
    scheduler.load_state_dict(start.resume["scheduler"])
    generator.set_state(start.resume["generator"])
    torch.set_rng_state(start.resume["torch_rng"])
    return int(start.resume["epoch"])


def _report_epoch(
    cfg: TrainConfig,
    *,
    rank: int,
    model: torch.nn.Module,
    plan: DeltaPlan,
    tokenizer: Any,
    tokenizer_ref: StoredRef | None,
    template: Any,
    metrics: dict[str, Any],
    state: dict[str, Any],
) -> None:
    """Rank 0 alone writes the checkpoint; every rank reports (report() is a barrier).

    ``state`` holds the device and where the metrics were computed (``evaluated_on``) and the live optimizer,
    scheduler and data-order generator; their state goes into
    the checkpoint (with the torch RNG) when the task keeps resume state and the trial has epochs
    left (after its last epoch nothing resumes). The driver deletes older epochs' resume state.
    """
    import ray.train

    epoch = metrics[M.EPOCH]
    # stopped while evaluating: write no checkpoint nobody will read
    raise_if_stopped(ranks_in_step=True, device=state["device"])
    ckpt = None
    if rank == 0:
        ckpt_dir = tempfile.mkdtemp(prefix="ckpt-")
        save_checkpoint(
            ckpt_dir,
            model=model,
            tokenizer=tokenizer,
            trial_info=trial_record(cfg, template, epoch, metrics, evaluated_on=state["evaluated_on"]),
            resume_state={
                "epoch": epoch,
                "optimizer": state["optimizer"].state_dict(),
                "scheduler": state["scheduler"].state_dict(),
                "generator": state["generator"].get_state(),
                "torch_rng": torch.get_rng_state(),
            }
            if cfg.task.keep_resume_state and epoch < cfg.epochs
            else None,
            plan=plan,
            tokenizer_ref=tokenizer_ref,
        )
        ckpt = ray.train.Checkpoint.from_directory(ckpt_dir)
    ray.train.report(
        metrics,
        checkpoint=ckpt,
        checkpoint_dir_name=f"epoch-{epoch:03d}",
        delete_local_checkpoint_after_upload=True,
    )


def _train_loader(examples: list, cfg: TrainConfig, pad_id: int) -> tuple[Any, torch.Generator]:
    """The shuffled training loader (sharded across ranks by Ray) and its seeded data-order generator."""
    import ray.train.torch

    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        examples, batch_size=cfg.batch_size, shuffle=True, generator=generator, collate_fn=collate(pad_id)
    )
    return ray.train.torch.prepare_data_loader(loader), generator


def _trial_constants(
    cfg: TrainConfig, marks: dict[str, float], *, model: Any, truncated: int, start_epoch: int, cache: dict
) -> dict[str, Any]:
    """Metrics that stay the same every epoch of a run: where start-up went, what the trial is."""
    trial_started = cfg.trial_started_at or marks["entry"]
    return {  # the rest of start-up: prefix states, optimizer, first batch
        M.STARTUP_LAUNCH_SECONDS: marks["entry"] - trial_started,  # Train controller, worker process, imports
        M.STARTUP_DATA_SECONDS: marks["data"] - marks["entry"],  # tokenizer, encoded splits
        M.STARTUP_MODEL_SECONDS: marks["model"] - marks["data"],  # build or restore, strategy, DDP wrap
        M.TRAINABLE_PARAMS: count_trainable_parameters(model),
        M.TRUNCATED_EXAMPLES: truncated,
        M.RESUMED_FROM_EPOCH: start_epoch,
        **cache,
    }


def _train_metrics(
    epoch: int, totals: list[float], seconds: float, first_step: list[float], device: Any
) -> dict[str, Any]:
    """One epoch's training side: ``totals`` = (examples, summed loss) over all ranks."""
    import resource

    out = {
        M.EPOCH: epoch,
        M.TRAIN_LOSS: totals[1] / max(totals[0], 1),
        M.STARTUP_SECONDS: first_step[0] if first_step else 0.0,
        M.EPOCH_SECONDS: seconds,
        M.SAMPLES_PER_SECOND: totals[0] / max(seconds, 1e-9),
        M.PEAK_MEMORY_MB: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
    }
    if device.type == "cuda":
        out[M.GPU_PEAK_MEMORY_MB] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _trial_data(cfg: TrainConfig, rank: int) -> tuple[Any, Any, Any, dict[str, list], Any]:
    """Tokenizer, template, the sweep's encoded splits (indexed rows) and the stored tokenizer's ref.

    The same prepared rows on every rank; the template renders context around each text. Rank 0
    stores the tokenizer's files once per sweep; checkpoints refer to them.
    """
    task = cfg.task
    tokenizer = load_tokenizer(task.model)
    template = resolve_template(cfg.context_template, task.templates)
    encoded = encoded_splits(task, template, tokenizer)  # once per sweep and template
    splits = {"train": _indexed(encoded.train), "validation": _indexed(encoded.validation)}
    tokenizer_ref = store_tokenizer(tokenizer, task.cache_dir) if rank == 0 and task.cache_dir else None
    return tokenizer, template, encoded, splits, tokenizer_ref


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One trial on one rank: data, model, prefix states, then an epoch loop reporting each epoch.

    Running out of memory anywhere in it ends the trial with one line saying what to change.
    The worker's GIL switch interval is raised to ``GIL_SWITCH_INTERVAL_S``: a Ray worker's main
    thread takes the GIL every 10 ms to check for signals, and at Python's default 5 ms it
    forces the training thread to hand the GIL over mid-forward; at 0.1 s it mostly waits for
    the training thread's own releases (backward, which runs without the GIL).
    """
    marks = {"entry": time.time()}
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    cfg = resolve_trial_config(config)
    device = train_device()
    with out_of_memory_as_error(device, batch_size=cfg.batch_size, micro_batch_size=cfg.micro_batch_size):
        _train(cfg, device, marks)


def _train(cfg: TrainConfig, device: torch.device, marks: dict[str, float]) -> None:
    import ray.train
    import ray.train.torch

    task = cfg.task
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    precision = resolve_precision(cfg.precision, device)
    _seed_everything(cfg.seed)

    tokenizer, template, encoded, splits, tokenizer_ref = _trial_data(cfg, rank)
    pad_id = tokenizer.pad_token_id
    marks["data"] = time.time()

    start = _restore_or_build(cfg, tokenizer)
    model = start.model
    ddp_model = ray.train.torch.prepare_model(model)  # moves to device; DDP when world > 1
    marks["model"] = time.time()
    feed, cache_metrics = _prefix_feed(
        cfg, model, start.plan, encoded, splits, device=device, pad_id=pad_id, rank=rank
    )
    loader, generator = _train_loader(splits["train"], cfg, pad_id)
    optimizer, scheduler, params = make_optimizer(model, cfg, cfg.epochs * len(loader))
    start_epoch = _resume_optimizer(start, optimizer, scheduler, generator, len(loader))
    if start.metrics is not None:
        # The report of this checkpoint may not have reached Tune before the failure (or Ctrl-C);
        # repeat it, without a new checkpoint, so the history is complete even when no epoch is
        # left to train. The driver records each epoch once.
        ray.train.report({**start.metrics, M.RESUMED_FROM_EPOCH: start_epoch})

    step_args = dict(precision=precision, device=device, feed=feed)
    eval_args = dict(
        batch_size=eval_batch_size(cfg.batch_size, cfg.micro_batch_size),
        pad_id=pad_id,
        num_labels=len(task.label_names),
        **step_args,
    )
    constants = _trial_constants(
        cfg, marks, model=model, truncated=encoded.truncated, start_epoch=start_epoch, cache=cache_metrics
    )
    trial_started = cfg.trial_started_at or marks["entry"]
    scaler = grad_scaler(precision, device)
    first_step: list[float] = []
    for epoch in range(start_epoch + 1, cfg.epochs + 1):  # 1-based: the counter ASHA schedules on
        if world > 1:
            loader.sampler.set_epoch(epoch)
        t0 = time.time()
        seen, loss_sum = train_epoch(
            ddp_model,
            loader,
            optimizer,
            scheduler,
            scaler,
            params,
            on_first_step=lambda: first_step or first_step.append(time.time() - trial_started),
            micro_batch_size=cfg.micro_batch_size,
            **step_args,
        )
        epoch_seconds = time.time() - t0
        totals = all_reduce(torch.tensor([seen, loss_sum], dtype=torch.float64, device=device)).tolist()
        metrics = evaluate(model, splits["validation"][rank::world], **eval_args)
        metrics.update(_train_metrics(epoch, totals, epoch_seconds, first_step, device), **constants)
        state = {
            "optimizer": optimizer,
            "scheduler": scheduler,
            "generator": generator,
            "evaluated_on": {**describe_device(device, precision), "ranks": world},
            "device": device,
        }
        _report_epoch(
            cfg,
            rank=rank,
            model=model,
            plan=start.plan,
            tokenizer=tokenizer,
            tokenizer_ref=tokenizer_ref,
            template=template,
            metrics=metrics,
            state=state,
        )
