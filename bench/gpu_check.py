"""GPU check: the project's own training step on one device, per strategy and precision.

Runs where Ray, MLflow and Optuna are not installed (the lent GPU machine has PyTorch,
transformers, peft and safetensors; pydantic travels as a wheel, see ``bench/gpu_pack.py``).
For every strategy x precision it builds the model with ``trainables.loop.build_model`` (the
strategy seam), trains with ``trainables.loop.train_epoch`` (autocast, fp16 loss scaling,
micro-batches) and evaluates with ``trainables.metrics.evaluate``, then reports:

- samples/s and tokens/s of the timed training steps (after warm-up, CUDA synchronised);
- peak GPU memory of those steps (``torch.cuda.max_memory_allocated``);
- model FLOPs of one step, counted by ``torch.utils.flop_counter`` (forward + backward as run,
  so a frozen prefix or LoRA counts only what it computes), and the model FLOP utilisation
  against the GPU's dense bf16 peak (``--peak-tflops``, 790 measured on an H200);
- the validation accuracy after the timed steps, and the train loss of the first and last step.

Two more checks: one row with ``train.micro_batch_size`` (same step, less memory), and with
``--oom-check`` a batch far beyond the GPU's memory, which must end in the one-line
``TrialOutOfMemory`` the trials report.

    python bench/gpu_check.py --out gpu_check.jsonl                 # on the GPU machine
    python bench/gpu_check.py --device cpu --model builtin:tiny-random-bert --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainables.device import grad_scaler, out_of_memory_as_error  # noqa: E402
from trainables.loop import build_model, make_optimizer, resolve_trial_config, train_epoch  # noqa: E402
from trainables.metrics import collate, eval_batch_size, evaluate  # noqa: E402
from trainables.models import load_tokenizer  # noqa: E402

STRATEGIES = {  # name in the report -> (strategy, freeze_layers, learning_rate)
    "full": ("full", 0, 5e-5),
    "head_only": ("full", "auto", 1e-3),
    "bitfit": ("bitfit", 0, 1e-3),
    "lora": ("lora", 0, 1e-3),
    "prompt": ("prompt", "auto", 1e-2),
}
LABELS = ["negative", "positive"]


def _rows(split: str) -> list[tuple[str, int]]:
    with (ROOT / "sweeps" / "data" / f"demo_{split}.csv").open() as f:
        return [(r["text"], LABELS.index(r["label"])) for r in csv.DictReader(f)]


def _encode(tokenizer, rows, max_length: int) -> list[tuple[list[int], int]]:
    ids = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length)["input_ids"]
    return list(zip(ids, [label for _, label in rows], strict=True))


def _batches(examples, batch_size: int, count: int, pad_id: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    pad = collate(pad_id)
    out = []
    while len(out) < count:
        order = torch.randperm(len(examples), generator=g).tolist()
        for i in range(0, len(order) - batch_size + 1, batch_size):
            out.append(pad([examples[j] for j in order[i : i + batch_size]]))
    return out[:count]


def _config(args, name: str, precision: str, micro: int | None):
    strategy, freeze, lr = STRATEGIES[name]
    return resolve_trial_config(
        {
            "strategy": strategy,
            "freeze_layers": freeze,
            "learning_rate": lr,
            "precision": precision,
            "batch_size": args.batch_size,
            "micro_batch_size": micro,
            "task": {
                "model": args.model,
                "train_data": "sweeps/data/demo_train.csv",
                "validation_data": "sweeps/data/demo_validation.csv",
                "label_names": LABELS,
                "max_length": args.max_length,
            },
        }
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_flops(model, batch, optimizer, scheduler, scaler, params, **step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_epoch(model, [dict(batch)], optimizer, scheduler, scaler, params, **step)
    return counter.get_total_flops()


def check_one(args, tokenizer, data, device, name: str, precision: str, micro: int | None = None) -> dict:
    """Build, warm up, time ``args.steps`` training steps, count one step's FLOPs, evaluate."""
    cfg = _config(args, name, precision, micro)
    model, _ = build_model(cfg, tokenizer)
    model.to(device)
    total = args.warmup + args.steps + 1
    optimizer, scheduler, params = make_optimizer(model, cfg, total)
    scaler = grad_scaler(precision, device)
    batches = _batches(data["train"], args.batch_size, total, tokenizer.pad_token_id, seed=0)
    step = dict(precision=precision, device=device, micro_batch_size=micro)
    losses = [
        train_epoch(model, [dict(b)], optimizer, scheduler, scaler, params, **step)[1] for b in batches[:1]
    ]
    train_epoch(
        model, [dict(b) for b in batches[1 : args.warmup]], optimizer, scheduler, scaler, params, **step
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = [dict(b) for b in batches[args.warmup : args.warmup + args.steps]]
    _sync(device)
    t0 = time.perf_counter()
    seen, loss_sum = train_epoch(model, timed, optimizer, scheduler, scaler, params, **step)
    _sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    losses.append(loss_sum / max(seen, 1))
    flops = _step_flops(model, batches[-1], optimizer, scheduler, scaler, params, **step)
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    metrics = evaluate(
        model,
        data["validation"],
        batch_size=eval_batch_size(args.batch_size, micro),
        pad_id=tokenizer.pad_token_id,
        num_labels=len(LABELS),
        device=device,
        precision=precision,
    )
    achieved = flops * args.steps / seconds
    return {
        "strategy": name,
        "precision": precision,
        "micro_batch_size": micro,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "samples_per_s": round(seen / seconds, 1),
        "tokens_per_s": round(tokens / seconds),
        "peak_gpu_mib": None if peak is None else round(peak),
        "step_gflop": round(flops / 1e9, 3),
        "achieved_tflops": round(achieved / 1e12, 2),
        "mfu_vs_bf16_peak": round(achieved / (args.peak_tflops * 1e12), 4) if device.type == "cuda" else None,
        "first_loss": round(losses[0] / args.batch_size, 4),
        "mean_loss_timed": round(losses[-1], 4),
        "eval_accuracy": round(metrics["eval_accuracy"], 4),
        "trainable_params": sum(p.numel() for p in params),
    }


def oom_check(args, tokenizer, device) -> dict:
    """A batch no GPU holds: the step must end in the trials' one-line out-of-memory error."""
    from trainables.device import TrialOutOfMemory

    cfg = _config(args, "full", "bf16", None)
    model, _ = build_model(cfg, tokenizer)
    model.to(device)
    rows = args.oom_batch
    ids = torch.full((1, 512), 1000, dtype=torch.long).expand(rows, 512)  # no memory until the model runs
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones(1, 512, dtype=torch.long).expand(rows, 512),
        "labels": torch.zeros(1, dtype=torch.long).expand(rows),
    }
    optimizer, scheduler, params = make_optimizer(model, cfg, 1)
    try:
        with out_of_memory_as_error(device, batch_size=rows, micro_batch_size=None):
            train_epoch(
                model,
                [batch],
                optimizer,
                scheduler,
                grad_scaler("bf16", device),
                params,
                precision="bf16",
                device=device,
            )
    except TrialOutOfMemory as exc:
        return {"oom_check": "reported", "message": str(exc)}
    return {"oom_check": "no out-of-memory error", "rows": rows}


def _environment(device: torch.device) -> dict:
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    try:
        import peft

        env["peft"] = peft.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:minilm-l6")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="dense bf16 peak (H200: about 790)")
    parser.add_argument("--oom-check", action="store_true")
    parser.add_argument("--oom-batch", type=int, default=2**20, help="rows of 512 tokens; far beyond any GPU")
    parser.add_argument("--out", default=None, help="JSON lines file (one line per row)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    data = {s: _encode(tokenizer, _rows(s), args.max_length) for s in ("train", "validation")}
    out = open(args.out, "w") if args.out else None  # noqa: SIM115
    rows = [{"environment": _environment(device)}]

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    emit(rows.pop())
    for precision in args.precisions.split(","):
        if precision == "fp16" and device.type != "cuda":
            emit({"precision": "fp16", "skipped": "fp16 autocast needs a GPU"})
            continue
        for name in args.strategies.split(","):
            emit(check_one(args, tokenizer, data, device, name, precision))
    emit(check_one(args, tokenizer, data, device, "full", "bf16", micro=max(1, args.batch_size // 4)))
    if args.oom_check:
        emit(oom_check(args, tokenizer, device))
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
