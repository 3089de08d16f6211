"""``full``: every parameter above the frozen prefix trains (``freeze_layers: 0`` = full fine-tuning)."""

from __future__ import annotations

from typing import Any

import torch

from trainables.freezing import freeze_bottom_layers
from trainables.strategies._base import Strategy, register_strategy


class Full(Strategy):
    name = "full"

    def _apply(self, model: torch.nn.Module, depth: int, cfg: Any) -> torch.nn.Module:
        freeze_bottom_layers(model, depth)
        return model


register_strategy(Full())
