"""``bitfit``: only bias terms above the frozen prefix, plus the head (Ben Zaken et al., 2022)."""

from __future__ import annotations

from typing import Any

import torch

from trainables.freezing import freeze_bottom_layers, head_parameter_names
from trainables.strategies._base import Strategy, register_strategy


class BitFit(Strategy):
    name = "bitfit"

    def _check(self, model, depth, cfg, *, max_length):
        head = set(head_parameter_names(model))  # once, not once per parameter
        if not any(n.endswith("bias") and n not in head for n, _ in model.named_parameters()):
            return [f"strategy bitfit: {type(model).__name__} has no bias terms to train; use lora or full"]
        return []

    def _apply(self, model: torch.nn.Module, depth: int, cfg: Any) -> torch.nn.Module:
        freeze_bottom_layers(model, depth)
        head = set(head_parameter_names(model))
        for name, param in model.named_parameters():
            if name not in head and not name.endswith("bias"):
                param.requires_grad_(False)
        return model


register_strategy(BitFit())
