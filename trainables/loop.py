"""The training loop every Ray Train worker runs: read it top to bottom.

Contract: ``train_loop_per_worker(config)`` is given to ``TorchTrainer`` with the flat trial
config (see ``trainables.config.TrainConfig``). Every rank calls ``ray.train.report`` once per
epoch with identical metric keys (see ``search_spaces.objectives``); only rank 0 writes a
checkpoint. It never talks to MLflow or Tune: the driver records what it reports.
"""

from __future__ import annotations

import random
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from search_spaces import objectives as M
from search_spaces.presets import resolve_template
from trainables.checkpoints import load_resume_state, read_trial_info, save_checkpoint
from trainables.config import TrainConfig
from trainables.context import ContextEncoder
from trainables.data import read_split
from trainables.device import autocast, grad_scaler, resolve_precision, train_device
from trainables.freezing import count_trainable_parameters, freeze_bottom_layers
from trainables.metrics import all_reduce, collate, eval_batch_size, evaluate
from trainables.models import build_classifier, load_tokenizer

__all__ = ["train_loop_per_worker"]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from transformers import get_linear_schedule_with_warmup

    started = time.time()
    cfg = TrainConfig.model_validate(config)
    task = cfg.task
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = train_device()
    precision = resolve_precision(cfg.precision, device)
    _seed_everything(cfg.seed)

    # Data: the same prepared rows on every rank; the template renders context around each text.
    tokenizer = load_tokenizer(task.model)
    train, val = read_split(task.train_data), read_split(task.validation_data)
    template = resolve_template(cfg.context_template, task.templates)
    encoder = ContextEncoder(
        tokenizer,
        template,
        label_names=task.label_names,
        train_texts=train.texts,
        train_labels=train.labels,
        max_length=task.max_length,
        seed=task.data_seed,
    )
    enc_train = encoder.encode(train.texts, split="train")
    enc_val = encoder.encode(val.texts, split="validation")
    truncated = enc_train.truncated + enc_val.truncated
    train_examples = list(zip(enc_train.input_ids, train.labels, strict=True))
    val_shard = list(zip(enc_val.input_ids, val.labels, strict=True))[rank::world]

    # Model: resume from the latest checkpoint Ray hands us, else build fresh; freeze before DDP wrap.
    checkpoint = ray.train.get_checkpoint()
    resume, resumed_metrics = None, None
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            model = build_classifier(
                ckpt_dir, task.label_names, pad_token_id=tokenizer.pad_token_id, seed=cfg.seed
            )
            resume = load_resume_state(ckpt_dir)
            resumed_metrics = read_trial_info(ckpt_dir).get("metrics")
    else:
        model = build_classifier(
            task.model, task.label_names, pad_token_id=tokenizer.pad_token_id, seed=cfg.seed
        )
    freeze_bottom_layers(model, cfg.freeze_layers)
    trainable_params = count_trainable_parameters(model)
    ddp_model = ray.train.torch.prepare_model(model)  # moves to device; DDP when world > 1
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(
            train_examples,
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=collate(tokenizer.pad_token_id),
        )
    )

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    scaler = grad_scaler(precision, device)
    start_epoch = 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        start_epoch = int(resume["epoch"])

    if resumed_metrics is not None:
        # The report of this checkpoint may not have reached Tune before the failure (or Ctrl-C);
        # repeat it, without a new checkpoint, so the history is complete even when no epoch is
        # left to train. The driver records each epoch once.
        ray.train.report({**resumed_metrics, M.RESUMED_FROM_EPOCH: start_epoch})

    trial_started = cfg.trial_started_at or started
    startup_seconds = None
    for epoch in range(start_epoch + 1, cfg.epochs + 1):  # 1-based: the counter ASHA schedules on
        if world > 1:
            loader.sampler.set_epoch(epoch)
        ddp_model.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        for batch in loader:
            with autocast(precision, device):
                loss = ddp_model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if startup_seconds is None:
                startup_seconds = time.time() - trial_started
            seen += len(batch["labels"])
            loss_sum += loss.item() * len(batch["labels"])
        epoch_seconds = time.time() - t0
        totals = all_reduce(torch.tensor([seen, loss_sum], dtype=torch.float64, device=device)).tolist()

        metrics = evaluate(
            model,
            val_shard,
            batch_size=eval_batch_size(cfg.batch_size),
            pad_id=tokenizer.pad_token_id,
            num_labels=len(task.label_names),
            device=device,
            precision=precision,
        )
        metrics.update(
            {
                M.EPOCH: epoch,
                M.TRAIN_LOSS: totals[1] / max(totals[0], 1),
                M.TRAINABLE_PARAMS: trainable_params,
                M.STARTUP_SECONDS: startup_seconds or 0.0,
                M.EPOCH_SECONDS: epoch_seconds,
                M.SAMPLES_PER_SECOND: totals[0] / max(epoch_seconds, 1e-9),
                M.TRUNCATED_EXAMPLES: truncated,
                M.RESUMED_FROM_EPOCH: start_epoch,
            }
        )

        # Rank 0 alone writes the checkpoint; every rank reports (report() is a barrier).
        ckpt = None
        if rank == 0:
            ckpt_dir = tempfile.mkdtemp(prefix="ckpt-")
            save_checkpoint(
                ckpt_dir,
                model=model,
                tokenizer=tokenizer,
                trial_info={
                    "trial_id": cfg.trial_id,
                    "epoch": epoch,
                    "hyperparameters": cfg.model_dump(exclude={"task", "trial_id", "trial_started_at"}),
                    "label_names": task.label_names,
                    "template_name": cfg.context_template,
                    "template": template.model_dump(),
                    "model_source": task.model,
                    "max_length": task.max_length,
                    "data_seed": task.data_seed,
                    "metrics": metrics,
                },
                resume_state={
                    "epoch": epoch,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                }
                if task.keep_resume_state
                else None,
            )
            ckpt = ray.train.Checkpoint.from_directory(ckpt_dir)
        ray.train.report(
            metrics,
            checkpoint=ckpt,
            checkpoint_dir_name=f"epoch-{epoch:03d}",
            delete_local_checkpoint_after_upload=True,
        )
