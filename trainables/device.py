"""Device and numeric precision: the one place that decides CPU vs GPU behaviour.

Everything device-specific in the training loop goes through these functions, so the GPU
paths (CUDA autocast, fp16 loss scaling) are visible in one screen and testable on CPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["autocast", "grad_scaler", "resolve_precision", "train_device"]


def train_device() -> torch.device:
    """The device this Ray Train worker was given (CUDA when ``use_gpu``), CPU outside Ray."""
    try:
        import ray.train.torch

        return ray.train.torch.get_device()
    except Exception:  # not inside a Ray Train worker (unit tests, predict)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
