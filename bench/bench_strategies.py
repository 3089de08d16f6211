"""Lightweight fine-tuning strategies x pooling on real data, side by side in one run.

    python bench/bench_strategies.py [--data-root ../shared/data] [--datasets cr subj] [--epochs 2]

For each dataset (``cr``, ``subj``: text,label CSVs with train/validation/test splits) and each
configuration (head-only, freeze-3, bitfit, lora, prompt, full) x (cls, mean pooling), trains
MiniLM-L6 (``builtin:minilm-l6``) with the project's own worker code (``trainables.loop``:
``build_model`` -> strategy, ``make_optimizer``, ``train_epoch``; ``trainables.metrics.evaluate``),
without Ray, on this machine's CPU threads. Each configuration keeps the epoch with the best
validation accuracy and reports test accuracy at that epoch only (selection on validation).

Prints a Markdown table (and writes JSON with ``--out``) for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trainables.config import TaskConfig, TrainConfig
from trainables.data import prepare_splits, write_split
from trainables.device import grad_scaler
from trainables.freezing import count_trainable_parameters
from trainables.loop import build_model, encode_splits, make_optimizer, train_epoch
from trainables.metrics import collate, eval_batch_size, evaluate
from trainables.models import load_tokenizer

# name -> train knobs (a fair learning rate per strategy: adapters and heads want larger ones)
CONFIGS: dict[str, dict] = {
    "head-only": {"strategy": "full", "freeze_layers": "auto", "learning_rate": 3e-3},
    "freeze-3": {"strategy": "full", "freeze_layers": 3, "learning_rate": 1e-4},
    "bitfit": {"strategy": "bitfit", "freeze_layers": 0, "learning_rate": 3e-3},
    "lora": {"strategy": "lora", "freeze_layers": 0, "learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16},
    "prompt": {"strategy": "prompt", "freeze_layers": "auto", "learning_rate": 3e-2, "prompt_tokens": 16},
    "full": {"strategy": "full", "freeze_layers": 0, "learning_rate": 1e-4},
}


def _clean(src: Path, dst: Path) -> Path:
    """Drop rows with an empty text (the distributed CR files have a few) and say how many."""
    import pandas as pd

    frame = pd.read_csv(src)
    keep = frame["text"].fillna("").astype(str).str.strip() != ""
    if (~keep).sum():
        print(f"{src}: dropped {(~keep).sum()} empty rows", flush=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    frame[keep].to_csv(dst, index=False)
    return dst


def _task(root: Path, dataset: str, work: Path, train_rows: int | None) -> tuple[TaskConfig, str]:
    out = work / dataset
    folder = out / "csv"
    for split in ("train", "validation", "test"):
        _clean(root / dataset / f"{split}.csv", folder / f"{split}.csv")
    data = prepare_splits(
        train=str(folder / "train.csv"),
        validation=str(folder / "validation.csv"),
        test=str(folder / "test.csv"),
        validation_fraction=0.2,
        text_column="text",
        label_column="label",
        seed=0,
    )
    train = data.train
    if train_rows is not None and train_rows < len(train):
        train = type(train)(train.texts[:train_rows], train.labels[:train_rows])  # the CSVs are pre-shuffled
    write_split(train, str(out / "train.parquet"))
    write_split(data.validation, str(out / "validation.parquet"))
    write_split(data.test, str(out / "test.parquet"))
    return TaskConfig(
        model="builtin:minilm-l6",
        train_data=str(out / "train.parquet"),
        validation_data=str(out / "validation.parquet"),
        label_names=data.label_names,
        max_length=64,
    ), str(out / "test.parquet")


def run_config(task: TaskConfig, test_path: str, knobs: dict, pooling: str, epochs: int, batch: int) -> dict:
    cfg = TrainConfig(**knobs, pooling=pooling, epochs=epochs, batch_size=batch, task=task)
    tokenizer = load_tokenizer(task.model)
    torch.manual_seed(cfg.seed)
    train, val, _, _ = encode_splits(cfg, tokenizer)
    test_cfg = cfg.model_copy(update={"task": task.model_copy(update={"validation_data": test_path})})
    _, test, _, _ = encode_splits(test_cfg, tokenizer)
    model, _ = build_model(cfg, tokenizer)
    trainable = count_trainable_parameters(model)
    loader = DataLoader(
        train,
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=collate(tokenizer.pad_token_id),
    )
    optimizer, scheduler, params = make_optimizer(model, cfg, epochs * len(loader))
    scaler = grad_scaler("fp32", torch.device("cpu"))
    ev = dict(
        batch_size=eval_batch_size(batch),
        pad_id=tokenizer.pad_token_id,
        num_labels=len(task.label_names),
        device=torch.device("cpu"),
        precision="fp32",
    )
    best: dict = {"val": -1.0}
    seconds, seen_total = 0.0, 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        seen, _ = train_epoch(
            model, loader, optimizer, scheduler, scaler, params, precision="fp32", device=torch.device("cpu")
        )
        seconds += time.perf_counter() - t0
        seen_total += seen
        val_acc = evaluate(model, val, **ev)["eval_accuracy"]
        if val_acc > best["val"]:
            best = {"val": val_acc, "test": evaluate(model, test, **ev)["eval_accuracy"], "epoch": epoch}
    return {**best, "trainable_params": trainable, "samples_per_second": seen_total / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--datasets", nargs="+", default=["cr", "subj"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--poolings", nargs="+", default=["cls", "mean"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-rows", type=int, default=3000, help="cap on training rows (CPU budget)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for dataset in args.datasets:
            task, test_path = _task(args.data_root, dataset, Path(work), args.train_rows)
            for name in args.configs:
                for pooling in args.poolings:
                    t0 = time.perf_counter()
                    result = run_config(task, test_path, CONFIGS[name], pooling, args.epochs, args.batch_size)
                    row = {"dataset": dataset, "config": name, "pooling": pooling, **result}
                    row["wall_seconds"] = time.perf_counter() - t0
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.out:
                        args.out.write_text(json.dumps(rows, indent=2))

    print(
        "\n| data | config | pooling | val acc | test acc | best epoch | trainable params | train samples/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['config']} | {r['pooling']} | {r['val']:.3f} | {r['test']:.3f} | "
            f"{r['epoch']} | {r['trainable_params']:,} | {r['samples_per_second']:.0f} |"
        )


if __name__ == "__main__":
    main()
