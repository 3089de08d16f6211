"""What a trial pays through the platform against the same configs in a plain loop, side by side.

    python bench/bench_pay_once.py [--data-root ../shared/data] [--out bench/results/pay_once.json]

On ``subj`` (600 train / 200 validation rows, MiniLM-L6, batch 32, max_length 64, 2 epochs):

1. a 4-trial sweep through the real CLI (``orchestrator run``: local Ray, Optuna, SQLite MLflow;
   2 trials at a time, 1 CPU each, FIFO so every trial runs both epochs), ``freeze_layers``
   enumerated over {0, 2, 4, 6}: a complete enumeration under FIFO runs its costliest configs
   first (0 and 2, then 4 and 6);
1b. the same sweep in Optuna's sampled order (seed 28: 4 and 2, then 0 and 6), through ASHA with
   ``grace_period`` = ``max_t`` = the epochs (it stops nothing; ASHA sweeps are never reordered):
   what the ordering is worth;
2. the configs the sweep ran, back to back in a plain PyTorch loop with the project's own
   worker functions (no Ray, no MLflow; a full safetensors checkpoint per epoch), with
   2 threads and with 1 thread (what each trial's worker gets);
3. the same configs in two 1-thread processes at once, each taking the next config when done,
   in the order the sweep started them: the sweep's layout without the platform (same threads,
   same sharing of cores and memory).

Reports: sweep wall / plain wall (ratio), start-up p50 and its breakdown, in-trial samples/s
against the plain loop at the same thread count (ratio), freeze-k epoch-2 time against
(L-k)/L of the full fine-tune's epoch-2 time, head-only epoch time against a full epoch, and
the sweep's bytes on disk. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

LAYERS = 6
EPOCHS, BATCH, MAX_LENGTH, LR = 2, 32, 64, 1.0e-4


def _subset(root: Path, work: Path, train_rows: int, val_rows: int) -> tuple[Path, Path]:
    import pandas as pd

    train = pd.read_csv(root / "subj" / "train.csv").head(train_rows)  # the CSVs are pre-shuffled
    val = pd.read_csv(root / "subj" / "validation.csv").head(val_rows)
    train.to_csv(work / "train.csv", index=False)
    val.to_csv(work / "validation.csv", index=False)
    return work / "train.csv", work / "validation.csv"


def _sweep_file(work: Path, train: Path, val: Path, *, as_sampled: bool = False) -> Path:
    spec = {
        "name": "pay-once",
        "model": "builtin:minilm-l6",
        "data": {"train": str(train), "validation": str(val), "max_length": MAX_LENGTH},
        "search": {
            "num_trials": 4,
            "max_concurrent_trials": 2,
            "seed": 28,
            "scheduler": (
                {"type": "asha", "grace_period": EPOCHS, "reduction_factor": 2}  # stops nothing
                if as_sampled
                else {"type": "fifo"}
            ),
            "space": {"freeze_layers": {"type": "choice", "values": [0, 2, 4, 6]}},
        },
        "train": {"learning_rate": LR, "epochs": EPOCHS, "batch_size": BATCH, "pooling": "mean"},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    }
    path = work / ("sweep-as-sampled.yaml" if as_sampled else "sweep.yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(work: Path, sweep: Path) -> dict:
    """Run it through the CLI; wall, disk and each trial's metrics, in the order the trials started."""
    exe = Path(sys.executable).with_name("orchestrator")
    workdir = work / f"work-{sweep.stem}"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(exe), "run", str(sweep), "--workdir", str(workdir)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pay-once")
    runs = sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)
    parent = next(r for r in runs if r.data.tags.get("orchestrator.role") == "sweep")
    trials = []
    for run in (r for r in runs if r.data.tags.get("orchestrator.role") == "trial"):

        def history(key: str, run_id: str = run.info.run_id) -> list[float]:
            return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

        trials.append(
            {
                "freeze_layers": int(run.data.params["freeze_layers"]),
                "startup": run.data.metrics["startup_seconds"],
                "launch": run.data.metrics["startup_launch_seconds"],
                "data": run.data.metrics["startup_data_seconds"],
                "model": run.data.metrics["startup_model_seconds"],
                "epoch_seconds": history("epoch_seconds"),
                "samples_per_second": history("samples_per_second"),
                "eval_accuracy": history("eval_accuracy"),
                "cached_depth": history("cached_depth"),
            }
        )
    return {"wall": wall, "disk_bytes": parent.data.metrics["disk_bytes"], "trials": trials}


def plain_config(task, freeze: int, threads: int, out: Path) -> dict:
    """One config through the worker's own functions, without Ray or MLflow; a full checkpoint per epoch."""
    import torch
    from torch.utils.data import DataLoader

    from trainables.checkpoints import save_checkpoint
    from trainables.config import TrainConfig
    from trainables.device import grad_scaler
    from trainables.loop import build_model, encode_splits, make_optimizer, train_epoch
    from trainables.metrics import collate, eval_batch_size, evaluate
    from trainables.models import load_tokenizer

    torch.set_num_threads(threads)
    started = time.perf_counter()
    cfg = TrainConfig(
        learning_rate=LR, freeze_layers=freeze, epochs=EPOCHS, batch_size=BATCH, pooling="mean", task=task
    )
    tokenizer = load_tokenizer(task.model)
    train, val, _, _ = encode_splits(cfg, tokenizer)
    model, _ = build_model(cfg, tokenizer)
    loader = DataLoader(
        train,
        batch_size=BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=collate(tokenizer.pad_token_id),
    )
    optimizer, scheduler, params = make_optimizer(model, cfg, EPOCHS * len(loader))
    scaler = grad_scaler("fp32", torch.device("cpu"))
    first: list[float] = []
    epochs, rates, accs = [], [], []
    for epoch in range(1, EPOCHS + 1):
        t0 = time.perf_counter()
        seen, _ = train_epoch(
            model,
            loader,
            optimizer,
            scheduler,
            scaler,
            params,
            precision="fp32",
            device=torch.device("cpu"),
            on_first_step=lambda: first or first.append(time.perf_counter() - started),
        )
        seconds = time.perf_counter() - t0
        epochs.append(seconds)
        rates.append(seen / seconds)
        metrics = evaluate(
            model,
            val,
            batch_size=eval_batch_size(BATCH),
            pad_id=tokenizer.pad_token_id,
            num_labels=len(task.label_names),
            device=torch.device("cpu"),
            precision="fp32",
        )
        accs.append(metrics["eval_accuracy"])
        ckpt = out / f"f{freeze}-t{threads}-e{epoch}"  # a full checkpoint per epoch, as before delta ones
        ckpt.mkdir(parents=True)
        save_checkpoint(ckpt, model=model, tokenizer=tokenizer, trial_info={}, resume_state=None)
    return {
        "freeze_layers": freeze,
        "threads": threads,
        "startup": first[0],
        "epoch_seconds": epochs,
        "samples_per_second": rates,
        "eval_accuracy": accs,
        "wall": time.perf_counter() - started,
    }


def run_plain(work: Path, train: Path, val: Path, freezes: list[int]) -> dict:
    from trainables.config import TaskConfig
    from trainables.data import prepare_splits, write_split

    data = prepare_splits(
        train=str(train),
        validation=str(val),
        test=None,
        validation_fraction=0.2,
        text_column="text",
        label_column="label",
        seed=0,
    )
    write_split(data.train, str(work / "train.parquet"))
    write_split(data.validation, str(work / "validation.parquet"))
    task = TaskConfig(
        model="builtin:minilm-l6",
        train_data=str(work / "train.parquet"),
        validation_data=str(work / "validation.parquet"),
        label_names=data.label_names,
        max_length=MAX_LENGTH,
    )
    out: dict = {}
    for threads in (2, 1):
        t0 = time.perf_counter()
        runs = [plain_config(task, k, threads, work / "plain") for k in freezes]
        out[threads] = {"wall": time.perf_counter() - t0, "runs": runs}
    # The sweep's own layout without the platform: two 1-thread processes at once, each taking
    # the next config when it is done (same order). Same thread count *and* the same sharing of
    # the two cores and memory bandwidth as two concurrent trials.
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        runs = pool.starmap(plain_config, [(task, k, 1, work / "plain2x1") for k in freezes], chunksize=1)
    out["2x1"] = {"wall": time.perf_counter() - t0, "runs": runs}
    return out


def _table(sweep: dict, sampled: dict, plain: dict) -> str:
    by_k = {t["freeze_layers"]: t for t in sweep["trials"]}
    plain1 = {r["freeze_layers"]: r for r in plain[1]["runs"]}
    plain2x1 = {r["freeze_layers"]: r for r in plain["2x1"]["runs"]}
    full = by_k.get(0)
    lines = [
        f"sweep wall {sweep['wall']:.0f} s; plain loop back to back: {plain[2]['wall']:.0f} s (2 threads), "
        f"{plain[1]['wall']:.0f} s (1 thread); ratio sweep / plain(2 threads) = "
        f"{sweep['wall'] / plain[2]['wall']:.2f}x; two 1-thread loops at once (the sweep's layout): "
        f"{plain['2x1']['wall']:.0f} s, ratio {sweep['wall'] / plain['2x1']['wall']:.2f}x",
        f"the same sweep in Optuna's sampled order {[t['freeze_layers'] for t in sampled['trials']]}: "
        f"{sampled['wall']:.0f} s, ratio {sampled['wall'] / plain[2]['wall']:.2f}x the 2-thread loop "
        f"(costliest first: {[t['freeze_layers'] for t in sweep['trials']]})",
        f"start-up p50 {statistics.median(t['startup'] for t in sweep['trials']):.1f} s (plain loop: "
        f"{statistics.median(r['startup'] for r in plain[1]['runs']):.1f} s); of which launch "
        f"{statistics.median(t['launch'] for t in sweep['trials']):.1f} s, data "
        f"{statistics.median(t['data'] for t in sweep['trials']):.1f} s, model "
        f"{statistics.median(t['model'] for t in sweep['trials']):.1f} s",
        f"disk {sweep['disk_bytes'] / 1e6:.1f} MB",
        "",
        "| freeze_layers | read from cache (depth) | sweep epoch-1 s | sweep epoch-2 s | (L-k)/L x full epoch-2 s "
        "| sweep samples/s (epoch 2) | plain 1-thread samples/s (epoch 2) | ratio "
        "| plain 2x1-thread samples/s (epoch 2) | ratio | sweep eval_accuracy | plain eval_accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in sorted(by_k):
        t, p = by_k[k], plain1.get(k)
        scaled = f"{(LAYERS - k) / LAYERS * full['epoch_seconds'][-1]:.1f}" if full else ""
        q = plain2x1[k]
        rate = t["samples_per_second"][-1]
        lines.append(
            f"| {k} | {int(t['cached_depth'][0])} | {t['epoch_seconds'][0]:.1f} | {t['epoch_seconds'][-1]:.1f} "
            f"| {scaled} | {rate:.1f} | {p['samples_per_second'][-1]:.1f} "
            f"| {rate / p['samples_per_second'][-1]:.2f} | {q['samples_per_second'][-1]:.1f} "
            f"| {rate / q['samples_per_second'][-1]:.2f} | {t['eval_accuracy'][-1]:.3f} | {p['eval_accuracy'][-1]:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    parser.add_argument("--train-rows", type=int, default=600)
    parser.add_argument("--validation-rows", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pay-once-") as tmp:
        work = Path(tmp)
        train, val = _subset(args.data_root, work, args.train_rows, args.validation_rows)
        sweep = run_sweep(work, _sweep_file(work, train, val))
        print(json.dumps(sweep), flush=True)
        sampled = run_sweep(work, _sweep_file(work, train, val, as_sampled=True))
        print(json.dumps(sampled), flush=True)
        plain = run_plain(work, train, val, [t["freeze_layers"] for t in sweep["trials"]])
        print(json.dumps(plain), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"sweep": sweep, "as_sampled": sampled, "plain": plain}, indent=2))
    print(_table(sweep, sampled, plain))


if __name__ == "__main__":
    main()
