"""``lora``: low-rank adapters (``peft``) on the projections of the blocks above the frozen prefix + the head.

Targets are every ``Linear`` (and GPT-2's ``Conv1D``) inside the unfrozen blocks: attention
query/key/value/output and the MLP projections, found generically (no per-architecture table).
With ``freeze_layers`` = the layer count there is no block left to adapt, and only the head trains.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from trainables.freezing import freeze_bottom_layers, head_parameter_names, locate_layers
from trainables.strategies._base import Strategy, register_strategy


def _projection_types() -> tuple[type, ...]:
    from transformers.pytorch_utils import Conv1D

    return (torch.nn.Linear, Conv1D)


def lora_targets(model: torch.nn.Module, depth: int) -> list[str]:
    """Full names of the projection modules in blocks ``depth..n-1``."""
    layer_map = locate_layers(model)
    blocks = model.get_submodule(layer_map.blocks_path)
    kinds = _projection_types()
    return [
        f"{layer_map.blocks_path}.{i}.{sub}"
        for i, block in enumerate(blocks)
        if i >= depth
        for sub, module in block.named_modules()
        if sub and isinstance(module, kinds)
    ]


class Lora(Strategy):
    name = "lora"
    knobs = ("lora_r", "lora_alpha", "lora_dropout")
    mergeable = True

    def _check(self, model, depth, cfg, *, max_length):
        if not lora_targets(model, 0):
            return [
                f"strategy lora: no attention/MLP projection (Linear) modules found in the blocks of "
                f"{type(model).__name__}; use strategy full or bitfit"
            ]
        return []

    def is_applied(self, model: torch.nn.Module) -> bool:
        config = getattr(model, "peft_config", None)
        return isinstance(config, dict) and any(c.peft_type == "LORA" for c in config.values())

    def _apply(self, model: torch.nn.Module, depth: int, cfg: Any) -> torch.nn.Module:
        from peft import LoraConfig, get_peft_model
        from transformers.pytorch_utils import Conv1D

        freeze_bottom_layers(model, depth)
        head = set(head_parameter_names(model))
        targets = lora_targets(model, depth)
        if not targets:  # nothing above the prefix: head only
            for name, param in model.named_parameters():
                param.requires_grad_(name in head)
            return model
        config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            fan_in_fan_out=any(isinstance(model.get_submodule(t), Conv1D) for t in targets),
            bias="none",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peft's notes on fan_in_fan_out / custom models
            wrapped = get_peft_model(model, config)
        for name, param in model.named_parameters():  # peft froze everything but the adapters
            if name in head:
                param.requires_grad_(True)
        return wrapped

    def standalone(self, model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
        if not self.is_applied(model):
            return model, True
        return model.merge_and_unload(), True


register_strategy(Lora())
