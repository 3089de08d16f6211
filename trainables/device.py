"""Device and numeric precision: the one place that decides CPU vs GPU behaviour.

Everything device-specific in the training loop goes through these functions, so the GPU
paths (CUDA autocast, fp16 loss scaling) are visible in one screen and testable on CPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = [
    "OUT_OF_MEMORY",
    "TrialOutOfMemory",
    "autocast",
    "describe_device",
    "grad_scaler",
    "is_out_of_memory",
    "out_of_memory_as_error",
    "resolve_precision",
    "train_device",
]

OUT_OF_MEMORY = "out of memory"  # how a trial's one-line error starts (tracking tags it by this)


def train_device() -> torch.device:
    """The device this Ray Train worker was given (CUDA when ``use_gpu``), CPU outside Ray."""
    try:
        import ray.train.torch

        return ray.train.torch.get_device()
    except Exception:  # not inside a Ray Train worker (unit tests, predict)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: torch.device, precision: str) -> dict[str, str]:
    """Where numbers were computed: device kind, its name, the autocast precision (for ``trial.json``)."""
    import platform

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    return {"device": device.type, "name": name, "precision": precision}


def resolve_precision(precision: str, device: torch.device) -> str:
    """Check that ``precision`` can run on ``device``; fp16 autocast is CUDA-only here."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a GPU worker (gpus_per_worker > 0); use bf16 or fp32 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use fp16 or fp32")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for forward passes; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaler: active only for fp16 on CUDA (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=(precision == "fp16" and device.type == "cuda"))


class TrialOutOfMemory(RuntimeError):
    """A trial ran out of (GPU or host) memory; the message is one line that says what to change."""


_OOM_TEXTS = ("can't allocate memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's caching allocator (``OutOfMemoryError``), a CUDA/cuBLAS allocation outside it, or the
    CPU allocator (those two are plain ``RuntimeError``s, recognised by their text)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OOM_TEXTS)


def _memory_note(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    peak, total = (
        torch.cuda.max_memory_allocated(device),
        torch.cuda.get_device_properties(device).total_memory,
    )
    return f", peak {peak / 2**30:.1f} of {total / 2**30:.1f} GiB"


@contextlib.contextmanager
def out_of_memory_as_error(device: torch.device, *, batch_size: int, micro_batch_size: int | None):
    """Turn an out-of-memory failure into :class:`TrialOutOfMemory`: one line, what to change.

    The cause stays chained (the full traceback is in the trial's ``error.txt``). The trial's
    Train run does not retry it (``orchestrator.trial``): the same step would fail again.
    """
    try:
        yield
    except Exception as exc:
        if not is_out_of_memory(exc) or isinstance(exc, TrialOutOfMemory):
            raise
        rows = min(batch_size, micro_batch_size or batch_size)
        fix = (
            f"set train.micro_batch_size to {rows // 2} (gradients are accumulated, batch_size stays "
            f"{batch_size}) or lower data.max_length"
            if rows > 1
            else "lower data.max_length, freeze more layers or use a lighter strategy"
        )
        where = f"{device}{_memory_note(device)}"
        per_pass = f"{rows} row{'s' if rows > 1 else ''} per pass"
        raise TrialOutOfMemory(f"{OUT_OF_MEMORY} on {where} with {per_pass}: {fix}") from exc
