"""``prompt``: trainable soft-prompt tokens prepended to the input embeddings (``peft`` prompt tuning) + the head.

The whole encoder is frozen (``freeze_layers`` must be the layer count: ``auto``). The prompt is
initialised from randomly sampled vocabulary embeddings (seeded), which trains far better than
``N(0, 1)`` vectors on small models.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from trainables.freezing import freeze_bottom_layers, locate_layers
from trainables.strategies._base import Strategy, register_strategy


class Prompt(Strategy):
    name = "prompt"
    knobs = ("prompt_tokens",)
    reads_frozen_prefix = False  # soft tokens are prepended to every block's input

    def _check(self, model, depth, cfg, *, max_length):
        n = locate_layers(model).num_blocks
        problems = []
        if depth != n:
            problems.append(
                f"strategy prompt trains no encoder block, so freeze_layers must be {n} (auto), not "
                f"{cfg.freeze_layers}; set freeze_layers: auto for prompt trials"
            )
        positions = getattr(model.config, "max_position_embeddings", None)
        if (
            max_length is not None
            and isinstance(positions, int)
            and max_length + cfg.prompt_tokens > positions
        ):
            problems.append(
                f"prompt_tokens: {cfg.prompt_tokens} soft tokens + max_length {max_length} exceed the model's "
                f"{positions} positions; lower prompt_tokens or data.max_length"
            )
        return problems

    def is_applied(self, model: torch.nn.Module) -> bool:
        config = getattr(model, "peft_config", None)
        return isinstance(config, dict) and any(c.peft_type == "PROMPT_TUNING" for c in config.values())

    def _apply(self, model: torch.nn.Module, depth: int, cfg: Any) -> torch.nn.Module:
        from peft import PromptTuningConfig, get_peft_model

        freeze_bottom_layers(model, depth)
        config = PromptTuningConfig(
            task_type="SEQ_CLS",
            num_virtual_tokens=cfg.prompt_tokens,
            prompt_tuning_init="SAMPLE_VOCAB",
            # given explicitly: peft guesses them from config field names some architectures lack
            token_dim=model.get_input_embeddings().embedding_dim,
            num_layers=depth,
            num_attention_heads=int(getattr(model.config, "num_attention_heads", 1) or 1),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return get_peft_model(model, config)  # freezes the model; the head stays trainable


register_strategy(Prompt())
