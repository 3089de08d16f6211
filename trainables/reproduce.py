"""When a re-evaluated checkpoint reproduces the metric its trial logged, across devices and precisions.

Promotion re-evaluates the chosen checkpoint to prove it is the one its run logged. The rule:

- **Same numerics** (re-evaluated on the same device model the trial evaluated on, in the same
  precision; promotion picks that kind of device when this machine has it): the metric must
  match to 1e-6. Evaluation splits, batches and pads the examples exactly as the trial's ranks
  did (``TextClassifier.evaluate``), so nothing else can move it.
- **Other numerics** (a GPU-trained trial re-evaluated on CPU or on another GPU model, fp16
  autocast replaced by fp32 where there is no GPU, or a checkpoint from before ``trial.json``
  recorded where it was evaluated): a prediction can only change where the model was almost
  undecided. An example is a *near tie* when its two most probable labels are closer than
  ``margin``: 0.02 in probability when either side ran a 16-bit autocast, 0.001 when both ran
  fp32. The allowed difference for accuracy and macro-F1 is the sum, over near ties, of how far
  the metric moves when that one prediction flips to its runner-up; with no near ties it is
  1e-6 again. For the loss (continuous in every logit) it is 2% of the logged value with 16-bit
  autocast on either side, 0.1% with fp32 on both.

A checkpoint of another epoch or trial differs in far more than its near ties, so it still fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from search_spaces import objectives as M
from trainables.metrics import classification_metrics

__all__ = ["EXACT", "Numerics", "Reproduction", "near_tie_tolerance", "reproduction"]

EXACT = 1e-6
SIXTEEN_BIT = frozenset({"bf16", "fp16"})


@dataclass(frozen=True)
class Numerics:
    """Where an evaluation ran: device kind (``cpu``/``cuda``), autocast precision, device model."""

    device: str
    precision: str
    name: str | None = None  # e.g. "NVIDIA H200"; None: not recorded

    def __str__(self) -> str:
        return f"{self.device} {self.precision}"

    def same_as(self, other: Numerics) -> bool:
        """Bit-for-bit comparable: the same kind, precision and (recorded) device model."""
        return self == other and self.name is not None


@dataclass(frozen=True)
class Reproduction:
    ok: bool
    metric: str
    logged: float
    measured: float
    tolerance: float
    trained: Numerics
    evaluated: Numerics

    def describe(self) -> str:
        """One line for the terminal and the model card."""
        how = "exactly" if self.tolerance <= EXACT else f"within {self.tolerance:.4g}"
        where = f"on {self.evaluated}" + (
            "" if self.trained.same_as(self.evaluated) else f" (trained on {self.trained})"
        )
        verdict = "reproduces" if self.ok else "does NOT reproduce"
        return (
            f"re-evaluated {where}: {self.metric}={self.measured:.6f} {verdict} the logged "
            f"{self.logged:.6f} {how}"
        )


def _confusion(labels: torch.Tensor, predicted: torch.Tensor, num_labels: int) -> torch.Tensor:
    confusion = torch.zeros((num_labels, num_labels), dtype=torch.float64)
    confusion.index_put_((labels, predicted), torch.ones(len(labels), dtype=torch.float64), accumulate=True)
    return confusion


def near_tie_tolerance(labels: torch.Tensor, probs: torch.Tensor, metric: str, *, margin: float) -> float:
    """How far ``metric`` (accuracy or macro-F1) moves if the near-tie predictions flip, one at a time, summed."""
    top = probs.float().topk(2, dim=-1)
    predicted, runner_up = top.indices[:, 0], top.indices[:, 1]
    ties = ((top.values[:, 0] - top.values[:, 1]) < margin).nonzero().flatten().tolist()
    confusion = _confusion(labels, predicted, probs.shape[-1])
    base = classification_metrics(confusion, 0.0)[metric]
    moved = 0.0
    for i in ties:
        flipped = confusion.clone()
        flipped[labels[i], predicted[i]] -= 1
        flipped[labels[i], runner_up[i]] += 1
        moved += abs(classification_metrics(flipped, 0.0)[metric] - base)
    return moved


def reproduction(
    metric: str,
    logged: float,
    measured: float,
    *,
    trained: Numerics,
    evaluated: Numerics,
    labels: torch.Tensor,
    probs: torch.Tensor,
) -> Reproduction:
    """Apply the rule above: ``probs`` are the re-evaluation's per-example label probabilities."""
    if trained.same_as(evaluated):
        tolerance = EXACT
    else:
        sixteen = bool({trained.precision, evaluated.precision} & SIXTEEN_BIT)
        if metric == M.EVAL_LOSS:
            tolerance = (0.02 if sixteen else 0.001) * abs(logged) + EXACT
        else:
            margin = 0.02 if sixteen else 0.001
            tolerance = near_tie_tolerance(labels, probs, metric, margin=margin) + EXACT
    ok = abs(measured - logged) <= tolerance
    return Reproduction(ok, metric, logged, measured, tolerance, trained, evaluated)
