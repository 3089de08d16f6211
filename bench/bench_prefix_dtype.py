"""Prefix-cache states stored in fp32, bf16 or fp16: the accuracy they give against seed noise.

    python bench/bench_prefix_dtype.py [--data-root ../shared/data] [--dataset cr] [--seeds 3]

The prefix cache (``trainables.prefix_cache``) stores the hidden states after the frozen blocks
in fp32. Half precision would halve its disk, memory and read time. This bench measures what that
costs in accuracy, against the seed-to-seed spread, with the project's own worker code and no Ray:
the states are computed once per config in fp32 (``prefix_features``), then each variant rounds
them to its dtype as storage would (``hidden.to(dtype)``; ``PrefixFeed`` casts them back to the
model's dtype), and every seed trains the same config on each variant. Variants: ``fp32``;
``bf16-train`` / ``fp16-train``, where only the training split's states are rounded and
validation stays fp32 (so the logged metric stays reproducible by a full forward pass);
``bf16-both``, where both splits are rounded.

Reports the final-epoch validation accuracy per variant (mean and std over seeds), and the largest
difference to fp32 with the same seed in accuracy and in validation loss (the finer measure). Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_strategies import CONFIGS, _task
from torch.utils.data import DataLoader

from trainables.config import TrainConfig
from trainables.device import grad_scaler
from trainables.freezing import resolve_depth
from trainables.loop import _indexed, build_model, encode_splits, make_optimizer, train_epoch
from trainables.metrics import collate, eval_batch_size, evaluate
from trainables.models import load_tokenizer
from trainables.prefix_cache import Features, PrefixFeed, prefix_features
from trainables.strategies import unwrap

BENCH_CONFIGS = {
    "head-only": CONFIGS["head-only"],
    "bitfit, freeze 4": {**CONFIGS["bitfit"], "freeze_layers": 4},
}
VARIANTS = {
    "fp32": (None, None),
    "bf16-train": (torch.bfloat16, None),
    "fp16-train": (torch.float16, None),
    "bf16-both": (torch.bfloat16, torch.bfloat16),
}
CPU = torch.device("cpu")


def _states(cfg: TrainConfig, tokenizer, splits: dict[str, list], cache_dir: str) -> tuple[int, dict]:
    """The frozen prefix's fp32 states for both splits, computed once (as the first trial would)."""
    model, _ = build_model(cfg, tokenizer)
    depth = resolve_depth(cfg.freeze_layers, unwrap(model))
    use = prefix_features(
        model,
        splits,
        depth,
        cache_dir=cache_dir,
        max_bytes=0,  # compute, do not store
        key_of=lambda j: f"depth-{j}",
        batch_size=eval_batch_size(cfg.batch_size),
        pad_id=tokenizer.pad_token_id,
        device=CPU,
    )
    assert use is not None
    return depth, use.features


def _rounded(features: dict[str, Features], train: torch.dtype | None, val: torch.dtype | None) -> dict:
    out = {}
    for split, dtype in (("train", train), ("validation", val)):
        f = features[split]
        out[split] = f if dtype is None else Features(f.hidden.to(dtype), f.offsets)
    return out


def _train(cfg: TrainConfig, tokenizer, splits: dict[str, list], depth: int, features: dict) -> tuple:
    """One seed of one config on one variant: the final epoch's validation (accuracy, loss)."""
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, tokenizer)
    feed = PrefixFeed(model, depth, features)
    pad = tokenizer.pad_token_id
    loader = DataLoader(
        splits["train"],
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=collate(pad),
    )
    optimizer, scheduler, params = make_optimizer(model, cfg, cfg.epochs * len(loader))
    scaler = grad_scaler("fp32", CPU)
    for _ in range(cfg.epochs):
        train_epoch(
            model, loader, optimizer, scheduler, scaler, params, precision="fp32", device=CPU, feed=feed
        )
    metrics = evaluate(
        model,
        splits["validation"],
        batch_size=eval_batch_size(cfg.batch_size),
        pad_id=pad,
        num_labels=len(cfg.task.label_names),
        device=CPU,
        precision="fp32",
        feed=feed,
    )
    return metrics["eval_accuracy"], metrics["eval_loss"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--dataset", default="cr")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(BENCH_CONFIGS), choices=list(BENCH_CONFIGS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dtype-") as tmp:
        task, _ = _task(args.data_root, args.dataset, Path(tmp), None)
        tokenizer = load_tokenizer(task.model)
        rows = []
        for name in args.configs:
            knobs = BENCH_CONFIGS[name]
            base = TrainConfig(**knobs, pooling="mean", epochs=args.epochs, batch_size=32, task=task)
            train, val, _, _ = encode_splits(base, tokenizer)
            splits = {"train": _indexed(train), "validation": _indexed(val)}
            t0 = time.perf_counter()
            depth, features = _states(base, tokenizer, splits, str(Path(tmp) / "cache"))
            print(f"{name}: states after block {depth} in {time.perf_counter() - t0:.0f} s", flush=True)
            runs: dict[str, list[tuple]] = {}
            for variant, (train_dtype, val_dtype) in VARIANTS.items():
                rounded = _rounded(features, train_dtype, val_dtype)
                for seed in range(args.seeds):
                    cfg = base.model_copy(update={"seed": seed})
                    runs.setdefault(variant, []).append(_train(cfg, tokenizer, splits, depth, rounded))
                print(f"  {variant}: {runs[variant]}", flush=True)
            rows.append((name, runs))
    print(
        f"\n| config | variant | val accuracy, mean ± std over {args.seeds} seeds | accuracy diff to fp32, "
        "same seed (max abs) | val loss diff to fp32, same seed (max abs) |"
    )
    print("|---|---|---|---|---|")
    for name, runs in rows:
        for variant, values in runs.items():
            accs = [a for a, _ in values]
            acc_diff = max(abs(a - b[0]) for a, b in zip(accs, runs["fp32"], strict=True))
            loss_diff = max(abs(v[1] - b[1]) for v, b in zip(values, runs["fp32"], strict=True))
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(
                f"| {name} | {variant} | {statistics.mean(accs):.4f} ± {spread:.4f} | {acc_diff:.4f} "
                f"| {loss_diff:.1e} |"
            )


if __name__ == "__main__":
    main()
