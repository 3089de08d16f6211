"""The flat configuration one trial's workers train with.

``Hyperparameters`` is exactly the ``train:`` section of a sweep file: every field may instead
appear in ``search.space`` under the same name, and the same name is the Tune ``param_space``
key, the Optuna parameter and the MLflow param. ``TrainConfig`` adds what the driver fixes for
the whole sweep (``task``) and per trial (``trial_id``). Workers call
``TrainConfig.model_validate(config)``; nothing else parses the trial config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["AUTO", "NOT_SEARCHABLE", "SUBKNOB_OWNERS", "Hyperparameters", "TaskConfig", "TrainConfig"]

Precision = Literal["fp32", "bf16", "fp16"]
Pooling = Literal["auto", "cls", "mean"]
StateDtype = Literal["fp32", "bf16", "fp16"]
AUTO = "auto"

# The registered strategies' names (``trainables.strategies``, which imports torch), known here so a
# sweep file is checked without it; the contract suite keeps the two equal.
STRATEGY_NAMES: tuple[str, ...] = ("full", "bitfit", "lora", "prompt")

# Strategy sub-knobs: each is used by exactly one strategy (``trainables.strategies``); it is passed
# to a trial, logged and validated only where that strategy is the trial's strategy.
SUBKNOB_OWNERS: dict[str, str] = {
    "lora_r": "lora",
    "lora_alpha": "lora",
    "lora_dropout": "lora",
    "prompt_tokens": "prompt",
}

# Set per sweep in ``train:``, never sampled: they change what is kept or how much memory a step
# takes, not what is learned.
NOT_SEARCHABLE = frozenset({"keep_checkpoints", "micro_batch_size"})


class Hyperparameters(BaseModel):
    """Per-trial knobs (the ``train:`` section). Any of them may be searched."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    learning_rate: float = Field(5.0e-5, gt=0, description="peak AdamW learning rate")
    freeze_layers: int | Literal["auto"] = Field(
        0,
        description="frozen-layer depth: 0 = nothing frozen; k = embeddings + bottom k blocks frozen; "
        "auto = all blocks (the model's layer count)",
    )
    strategy: str = Field(
        "full",
        description="what is trained above the frozen prefix: full, bitfit, lora or prompt "
        "(see trainables.strategies)",
    )
    pooling: Pooling = Field(
        "auto",
        description="cls = the model's own head (decoders: last non-pad token); mean = masked mean of the "
        "last hidden states; auto = mean where the checkpoint was trained for it, else cls",
    )
    lora_r: int = Field(8, ge=1, le=1024, description="LoRA rank (strategy: lora)")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator, alpha / r (strategy: lora)")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input (strategy: lora)")
    prompt_tokens: int = Field(20, ge=1, le=512, description="soft-prompt length (strategy: prompt)")
    context_template: str = Field("plain", description="name of a template (sweep file or preset library)")
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, description="per-worker batch size")
    micro_batch_size: int | None = Field(
        None,
        ge=1,
        description="most examples per forward/backward pass: each batch is split into micro-batches "
        "of this size and their gradients accumulated, so the optimizer step (what is learned) stays "
        "batch_size; lowers activation memory. null = batch_size",
    )
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps with linear warm-up")
    precision: Precision = Field("fp32", description="fp32, or bf16 / fp16 autocast (fp16 needs a GPU)")
    seed: int = Field(0, ge=0, lt=2**32, description="model init, data order and dropout seed")
    keep_checkpoints: int | Literal["all"] = Field(
        1,
        description="epoch checkpoints kept per trial: the best N by the sweep's metric, plus the "
        "latest; all = every epoch",
    )

    @field_validator("freeze_layers")
    @classmethod
    def _freeze(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 (0 = nothing frozen) or auto (all blocks)")
        return v

    @field_validator("keep_checkpoints")
    @classmethod
    def _keep(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 (the best epoch; the latest is always kept too) or all")
        return v

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        if v not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy '{v}'; use one of {', '.join(STRATEGY_NAMES)}")
        return v

    def for_trial(self) -> dict:
        """The knobs as one trial sees them: sub-knobs of other strategies left out."""
        values = {k: getattr(self, k) for k in Hyperparameters.model_fields}
        return {k: v for k, v in values.items() if SUBKNOB_OWNERS.get(k, self.strategy) == self.strategy}


class TaskConfig(BaseModel):
    """Fixed for the whole sweep: which model, which prepared data, which templates."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str  # builtin:<name>, a local directory or a hub id (resolved by trainables.models)
    train_data: str  # prepared parquet split (columns: text, label:int), local path or URI
    validation_data: str
    label_names: list[str] = Field(min_length=2)
    max_length: int = Field(ge=8)
    templates: dict[str, str | dict] = {}  # user templates; presets fill in the rest
    data_seed: int = 0  # seeds the demonstrations drawn for few-shot templates
    keep_resume_state: bool = True
    # The sweep's cache (storage): frozen base weights (base/) and encoded splits (tokens/), each
    # written once. None: every trial encodes for itself and writes full checkpoints.
    cache_dir: str | None = None
    prefix_cache_bytes: int = 0  # frozen-prefix features stored up to this many bytes (0: not cached)
    prefix_cache_dtype: StateDtype = "fp32"  # the training split's stored states (validation: fp32)


class TrainConfig(Hyperparameters):
    """Everything a worker needs: hyper-parameters + task + trial identity."""

    task: TaskConfig
    trial_id: str = "local"
    trial_started_at: float | None = None  # time.time() when the trial driver started
