"""What counts as reproducing a logged metric across devices and precisions (``trainables.reproduce``).

The numbers come from a real tiny classifier evaluated twice through the project's ``evaluate``:
in bf16 autocast (as a bf16 trial logs its metrics) and in fp32 (as a machine re-evaluates when
it lacks the trial's numerics). Their difference is real rounding, not a planted one.
"""

from __future__ import annotations

import pytest
import torch
import transformers as hf

from search_spaces import objectives as M
from tests.test_freezing import SIZES
from trainables.metrics import evaluate
from trainables.models import classifier_from_config
from trainables.reproduce import Numerics, near_tie_tolerance, reproduction

CPU_FP32, CPU_BF16, CUDA_BF16 = (
    Numerics("cpu", "fp32", "x86_64"),
    Numerics("cpu", "bf16", "x86_64"),
    Numerics("cuda", "bf16", "NVIDIA H200"),
)


def _model(steps: int) -> torch.nn.Module:
    """A tiny classifier trained ``steps`` full-batch steps on the examples (so it is decided)."""
    from trainables.metrics import collate

    torch.manual_seed(0)
    config = hf.BertConfig(
        **SIZES, num_hidden_layers=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    config.num_labels = 3
    model = classifier_from_config(config, "mean")
    batch = collate(0)(_examples())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    return model.eval()


def _examples(n: int = 300) -> list:
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randint(3, 100, (int(k),), generator=g).tolist(), i % 3)
        for i, k in enumerate(torch.randint(4, 40, (n,), generator=g))
    ]


def _evaluate(model, precision: str):
    kept: list = []
    metrics = evaluate(
        model,
        _examples(),
        batch_size=32,
        pad_id=0,
        num_labels=3,
        device=torch.device("cpu"),
        precision=precision,
        keep=kept,
    )
    return metrics, torch.cat([k[0] for k in kept]), torch.cat([k[1] for k in kept])


@pytest.fixture(scope="module")
def runs():
    model = _model(40)
    return {p: _evaluate(model, p) for p in ("fp32", "bf16")}


def test_same_numerics_must_match_exactly(runs):
    metrics, labels, probs = runs["fp32"]
    again = _evaluate(_model(40), "fp32")[0]
    for metric in M.SELECTABLE_METRICS:
        check = reproduction(
            metric,
            metrics[metric],
            again[metric],
            trained=CPU_FP32,
            evaluated=CPU_FP32,
            labels=labels,
            probs=probs,
        )
        assert check.ok and check.tolerance == 1e-6, check.describe()
    off = reproduction(
        M.EVAL_ACCURACY,
        metrics[M.EVAL_ACCURACY] + 1 / 300,
        metrics[M.EVAL_ACCURACY],
        trained=CPU_FP32,
        evaluated=CPU_FP32,
        labels=labels,
        probs=probs,
    )
    assert not off.ok and "does NOT reproduce" in off.describe()


def test_a_bf16_trial_re_evaluated_in_fp32_reproduces_within_its_near_ties(runs):
    logged, _, bf16_probs = runs["bf16"]
    measured, labels, probs = runs["fp32"]
    flipped = int((bf16_probs.argmax(-1) != probs.argmax(-1)).sum())
    for metric in M.SELECTABLE_METRICS:
        check = reproduction(
            metric,
            logged[metric],
            measured[metric],
            trained=CUDA_BF16,
            evaluated=CPU_FP32,
            labels=labels,
            probs=probs,
        )
        assert check.ok, (check.describe(), flipped)
        assert "(trained on cuda bf16)" in check.describe()
    # the allowance is real (bf16 flips some rows), and bounded by the undecided rows
    ties = near_tie_tolerance(labels, probs, M.EVAL_ACCURACY, margin=0.02)
    assert 0 < ties < 1.0 and flipped / 300 <= ties


def test_another_checkpoint_does_not_pass_for_the_logged_one(runs):
    logged = runs["bf16"][0]
    measured, labels, probs = _evaluate(_model(30), "fp32")  # an earlier "epoch" of the same trial
    for metric in M.SELECTABLE_METRICS:
        check = reproduction(
            metric,
            logged[metric],
            measured[metric],
            trained=CUDA_BF16,
            evaluated=CPU_FP32,
            labels=labels,
            probs=probs,
        )
        assert not check.ok, check.describe()


def test_near_ties_count_only_undecided_rows():
    labels = torch.tensor([0, 1, 1, 0])
    probs = torch.tensor([[0.9, 0.1], [0.505, 0.495], [0.2, 0.8], [0.3, 0.7]])  # row 1 is a near tie
    assert near_tie_tolerance(labels, probs, M.EVAL_ACCURACY, margin=0.02) == pytest.approx(0.25)
    assert near_tie_tolerance(labels, probs, M.EVAL_ACCURACY, margin=0.001) == 0.0
    clear = reproduction(
        M.EVAL_ACCURACY, 0.75, 0.5, trained=CUDA_BF16, evaluated=CPU_FP32, labels=labels, probs=probs
    )
    assert clear.ok and clear.tolerance == pytest.approx(0.25 + 1e-6)
    two_off = reproduction(
        M.EVAL_ACCURACY, 1.0, 0.5, trained=CUDA_BF16, evaluated=CPU_FP32, labels=labels, probs=probs
    )
    assert not two_off.ok


def test_another_device_model_or_an_unrecorded_one_is_not_held_to_exact(runs):
    metrics, labels, probs = runs["fp32"]
    for trained in (Numerics("cpu", "fp32", None), Numerics("cpu", "fp32", "another CPU")):
        check = reproduction(
            M.EVAL_LOSS,
            metrics[M.EVAL_LOSS],
            metrics[M.EVAL_LOSS],
            trained=trained,
            evaluated=CPU_FP32,
            labels=labels,
            probs=probs,
        )
        assert check.ok and check.tolerance > 1e-6 and "(trained on cpu fp32)" in check.describe()
