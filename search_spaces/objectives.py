"""Metric names and their optimisation modes: the one vocabulary shared by workers, Tune and MLflow.

Workers report exactly these keys (see ``trainables.loop``); the sweep spec accepts only
``SELECTABLE_METRICS`` as ``search.metric``. Keeping them here (the bottom layer) lets every
other package import them without pulling torch or ray.
"""

from __future__ import annotations

# Time attribute for ASHA: a 1-based epoch counter reported by the worker. Tune's own
# ``training_iteration`` restarts after a restore, so the scheduler must not use it.
EPOCH = "epoch"

EVAL_ACCURACY = "eval_accuracy"
EVAL_F1_MACRO = "eval_f1_macro"
EVAL_LOSS = "eval_loss"
TRAIN_LOSS = "train_loss"

TRAINABLE_PARAMS = "trainable_params"
STARTUP_SECONDS = "startup_seconds"  # trial start (the trial driver) to the first optimizer step
# ... of which: trial driver to worker entry (Train controller, placement group, worker process,
# imports), tokenizer + encoded splits, and model build/restore + DDP wrap (the rest: reading or
# computing the frozen prefix's states, the optimizer, the first batch)
STARTUP_LAUNCH_SECONDS = "startup_launch_seconds"
STARTUP_DATA_SECONDS = "startup_data_seconds"
STARTUP_MODEL_SECONDS = "startup_model_seconds"
EPOCH_SECONDS = "epoch_seconds"
SAMPLES_PER_SECOND = "samples_per_second"  # training samples per wall second, summed over workers
TRUNCATED_EXAMPLES = "truncated_examples"  # examples whose context was cut to fit max_length
CACHE_HIT = "cache_hit"  # 1 when the frozen prefix's states were read from the sweep's cache
CACHED_DEPTH = "cached_depth"  # how many frozen blocks those states covered (0: none read)
# bits per value of the stored training-split states the trial trained on (16: bf16/fp16, 32: fp32,
# 0: no stored prefix), read from the tensors themselves
CACHE_TRAIN_BITS = "cache_train_bits"
RESUMED_FROM_EPOCH = "resumed_from_epoch"  # epoch of the checkpoint this run resumed from; 0 = never resumed
PEAK_MEMORY_MB = "peak_memory_mb"  # the worker process's peak resident memory so far (rank 0's)
GPU_PEAK_MEMORY_MB = "gpu_peak_memory_mb"  # peak CUDA memory allocated by the worker (GPU trials only)

# metric -> the mode that makes it better
SELECTABLE_METRICS: dict[str, str] = {
    EVAL_ACCURACY: "max",
    EVAL_F1_MACRO: "max",
    EVAL_LOSS: "min",
}

REPORTED_METRICS: tuple[str, ...] = (
    EPOCH,
    EVAL_ACCURACY,
    EVAL_F1_MACRO,
    EVAL_LOSS,
    TRAIN_LOSS,
    TRAINABLE_PARAMS,
    STARTUP_SECONDS,
    STARTUP_LAUNCH_SECONDS,
    STARTUP_DATA_SECONDS,
    STARTUP_MODEL_SECONDS,
    EPOCH_SECONDS,
    SAMPLES_PER_SECOND,
    TRUNCATED_EXAMPLES,
    CACHE_HIT,
    CACHED_DEPTH,
    CACHE_TRAIN_BITS,
    RESUMED_FROM_EPOCH,
    PEAK_MEMORY_MB,
    GPU_PEAK_MEMORY_MB,
)
