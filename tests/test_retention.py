"""Retention without Ray running: resume state pruning, Ray's own checkpoint policy, resume after deletion."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from orchestrator.retention import ResumeStateRetention, disk_usage_line
from orchestrator.trial import checkpoint_config, train_run_name
from trainables.stored import tree_bytes


def _train_run(root, trial_id: str, epochs: int):
    run = root / train_run_name(trial_id)
    for e in range(1, epochs + 1):
        d = run / f"epoch-{e:03d}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"w" * 10)
        (d / "resume.pt").write_bytes(b"r" * 20)
    return run


def test_resume_state_only_in_the_latest_checkpoint_until_the_trial_ends(tmp_path):
    run = _train_run(tmp_path, "t1", 3)
    other = _train_run(tmp_path, "t2", 2)
    retention = ResumeStateRetention(str(tmp_path))
    trial = SimpleNamespace(trial_id="t1")
    retention.on_trial_result(0, [], trial, {"checkpoint_path": str(run / "epoch-003")})
    assert sorted(p.parent.name for p in run.rglob("resume.pt")) == ["epoch-003"]
    assert all((run / f"epoch-{e:03d}" / "model.safetensors").exists() for e in (1, 2, 3))
    retention.on_trial_result(0, [], trial, {"epoch": 3})  # a repeated report: no checkpoint, no change
    assert (run / "epoch-003" / "resume.pt").exists()
    assert len(list(other.rglob("resume.pt"))) == 2  # another trial is not touched
    retention.on_trial_complete(0, [], trial)
    assert not list(run.rglob("resume.pt"))
    retention.on_trial_complete(0, [], SimpleNamespace(trial_id="never-started"))  # nothing there: no error


def test_ray_keeps_the_best_n_by_the_sweep_metric():
    cfg = checkpoint_config(1, "eval_loss", "min")
    assert (cfg.num_to_keep, cfg.checkpoint_score_attribute, cfg.checkpoint_score_order) == (
        1,
        "eval_loss",
        "min",
    )
    assert checkpoint_config("all", "eval_accuracy", "max").num_to_keep is None


def test_keep_checkpoints_is_validated_and_not_searchable():
    from orchestrator.spec import SearchSpec
    from trainables.config import Hyperparameters

    assert Hyperparameters().keep_checkpoints == 1
    with pytest.raises(ValueError, match="keep_checkpoints"):
        Hyperparameters(keep_checkpoints=0)
    with pytest.raises(ValueError, match="move it to train.keep_checkpoints"):
        SearchSpec(space={"keep_checkpoints": {"type": "choice", "values": [1, 2]}})


def test_resume_without_optimizer_state_continues_the_schedule():
    """A checkpoint without resume.pt: go on after its epoch, the schedule where that epoch left it."""
    from trainables.loop import _resume_optimizer, _Start

    def schedule():
        from transformers import get_linear_schedule_with_warmup

        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([param], lr=1.0)
        return optimizer, get_linear_schedule_with_warmup(optimizer, 2, 30)

    optimizer, scheduler = schedule()
    start = _Start(model=torch.nn.Linear(1, 1), plan=None, epoch=2)  # type: ignore[arg-type]
    assert _resume_optimizer(start, optimizer, scheduler, torch.Generator(), steps=10) == 2
    ref_opt, ref = schedule()
    for _ in range(20):
        ref_opt.step()
        ref.step()
    assert scheduler.get_last_lr() == pytest.approx(ref.get_last_lr())


def test_disk_usage(tmp_path):
    _train_run(tmp_path, "t1", 2)
    assert tree_bytes(str(tmp_path)) == 60
    assert tree_bytes(str(tmp_path / "missing")) == 0
    assert disk_usage_line(312_400_000) == "312.4 MB" and disk_usage_line(999) == "999 B"
