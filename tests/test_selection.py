"""Selection over every recorded epoch, with documented tie-breaks, on a real SQLite MLflow store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from orchestrator.promote import PromoteError, choose
from orchestrator.selection import candidates, find_sweep_run
from orchestrator.tracking import SweepRecorder, TrialRecorderCallback


@dataclass
class TrialStandIn:
    trial_id: str
    config: dict = field(default_factory=lambda: {"epochs": 3})
    last_result: dict | None = None

    def get_error(self):
        return "RuntimeError: worker died"


def _record(
    tmp_path: Path,
    trials: dict[str, list[dict]],
    *,
    metric="eval_accuracy",
    mode="max",
    failed=(),
    configs: dict[str, dict] | None = None,
):
    """Write a sweep with one child per trial; each dict is one epoch's metrics."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = SweepRecorder(uri, "sel", artifact_root=(tmp_path / "art").as_uri())
    parent = rec.open_parent(
        sweep="sel",
        experiment_path=str(tmp_path / "runs" / "sel"),
        params={"metric": metric, "mode": mode},
        tags={},
    )
    root = tmp_path / "runs" / "sel" / "checkpoints"
    cb = TrialRecorderCallback(uri, rec.experiment_id, parent, sweep="sel", train_root=str(root))
    for trial_id, epochs in trials.items():
        trial = TrialStandIn(trial_id, **({"config": configs[trial_id]} if configs else {}))
        cb.on_trial_start(0, [], trial)
        for epoch, metrics in enumerate(epochs, 1):
            (root / f"train-{trial_id}" / f"epoch-{epoch:03d}").mkdir(parents=True)
            cb.on_trial_result(0, [], trial, {"epoch": epoch, **metrics})
        trial.last_result = {"epoch": len(epochs)}
        cb.on_trial_complete(0, [], trial)
    for trial_id in failed:
        trial = TrialStandIn(trial_id)
        cb.on_trial_start(0, [], trial)
        cb.on_trial_error(0, [], trial)
    rec.close("FINISHED")
    client = rec.client
    return client, candidates(client, find_sweep_run(client, "sel")), root


def m(acc, f1=0.5, params=1000, loss=0.5):
    return {"eval_accuracy": acc, "eval_f1_macro": f1, "trainable_params": params, "eval_loss": loss}


def test_best_epoch_is_not_the_last_epoch(tmp_path):
    _, ranked, _ = _record(tmp_path, {"a": [m(0.6), m(0.9), m(0.7)], "b": [m(0.8), m(0.85)]})
    assert (ranked[0].trial_id, ranked[0].epoch) == ("a", 2)
    assert ranked[0].checkpoint.endswith("train-a/epoch-002")
    assert [(c.trial_id, c.epoch) for c in ranked[1:3]] == [("b", 2), ("b", 1)]


TIE_CASES = [
    ("secondary metric", {"a": [m(0.8, f1=0.70)], "b": [m(0.8, f1=0.75)]}, ("b", 1)),
    ("fewer trainable params", {"a": [m(0.8, params=900)], "b": [m(0.8, params=500)]}, ("b", 1)),
    ("earlier epoch", {"a": [m(0.5), m(0.8), m(0.8)]}, ("a", 2)),
    ("trial id", {"b": [m(0.8)], "a": [m(0.8)]}, ("a", 1)),
]


@pytest.mark.parametrize(("case", "trials", "expected"), TIE_CASES, ids=[c[0] for c in TIE_CASES])
def test_tie_breaks(tmp_path, case, trials, expected):
    _, ranked, _ = _record(tmp_path, trials)
    assert (ranked[0].trial_id, ranked[0].epoch) == expected


def test_min_mode_and_accuracy_as_secondary(tmp_path):
    trials = {"a": [m(0.7, loss=0.3)], "b": [m(0.9, loss=0.3)], "c": [m(0.99, loss=0.4)]}
    _, ranked, _ = _record(tmp_path, trials, metric="eval_loss", mode="min")
    assert [c.trial_id for c in ranked] == ["b", "a", "c"]


def test_failed_and_checkpointless_trials_are_listed_but_not_chosen(tmp_path):
    client, ranked, root = _record(tmp_path, {"a": [m(0.9)], "b": [m(0.7)]}, failed=["z"])
    assert ranked[-1].trial_id == "z" and ranked[-1].epoch == 0 and ranked[-1].checkpoint is None
    assert ranked[-1].outcome == "failed"
    (root / "train-a" / "epoch-001").rmdir()  # the best checkpoint is gone (deleted by hand)
    ranked = candidates(client, find_sweep_run(client, "sel"))
    assert ranked[0].trial_id == "a" and ranked[0].checkpoint is None
    assert choose(ranked, None).trial_id == "b"
    with pytest.raises(PromoteError, match="trial a .* holds no checkpoint"):
        choose(ranked, "a")
    with pytest.raises(PromoteError, match="trial z .* holds no checkpoint"):
        choose(ranked, "z")
    with pytest.raises(PromoteError, match="no such trial in this sweep; known: a, b, z"):
        choose(ranked, "nope")


def test_remote_checkpoints_are_copied_locally_for_promotion(tmp_path):
    from orchestrator.promote import localize

    remote = tmp_path / "bucket" / "train-a" / "epoch-001"
    remote.mkdir(parents=True)
    (remote / "model.safetensors").write_bytes(b"weights")
    (remote / "trial.json").write_text("{}")
    local = localize(remote.as_uri(), tmp_path / "local")  # file:// stands in for s3:// / gs://
    assert {p.name for p in local.iterdir()} == {"model.safetensors", "trial.json"}
    assert localize(str(remote), tmp_path / "unused") == remote  # local paths are used in place
    with pytest.raises(PromoteError, match="cannot download"):
        localize((tmp_path / "missing").as_uri(), tmp_path / "x")


def test_export_target_never_replaces_user_data(tmp_path):
    from orchestrator.promote import check_export_target, write_export

    check_export_target(None)
    check_export_target(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_export_target(tmp_path / "empty")
    staged = tmp_path / "staged"
    (staged / "sub").mkdir(parents=True)
    for name in ("trial.json", "model.safetensors", "README.md", "sub/config.json"):
        (staged / name).write_text("x")
    previous = tmp_path / "previous"
    write_export(staged, previous)
    check_export_target(previous)  # exactly a previous export: it may be replaced
    (staged / "README.md").write_text("new card")
    assert write_export(staged, previous) == str(previous.absolute())
    assert (previous / "README.md").read_text() == "new card"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".previous")]  # no leftovers

    (previous / "notes.txt").write_text("mine")  # a previous export plus a user's file: refused
    with pytest.raises(PromoteError, match="holds other files"):
        check_export_target(previous)
    with pytest.raises(PromoteError, match="holds other files"):
        write_export(staged, previous)
    assert (previous / "notes.txt").read_text() == "mine"
    (previous / "notes.txt").unlink()

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    (previous / "link").symlink_to(victim)  # a symlink inside: refused, never followed
    with pytest.raises(PromoteError, match="holds other files"):
        check_export_target(previous)
    (previous / "link").unlink()
    (tmp_path / "alias").symlink_to(previous)
    with pytest.raises(PromoteError, match="symbolic link"):
        check_export_target(tmp_path / "alias")
    assert (victim / "precious").read_text() == "keep"

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PromoteError, match="holds other files"):
        check_export_target(tmp_path)
    with pytest.raises(PromoteError, match="is a file"):
        check_export_target(tmp_path / "notes.txt")


def test_registry_names_checked_first():
    from orchestrator.promote import check_registry_names

    check_registry_names("demo-classifier", "champion")
    for name, alias, needle in [
        ("x'y", "champion", "--name"),
        ("a/b", "champion", "--name"),
        ("ok", "v1", "reserved"),
        ("ok", "Latest", "reserved"),
        ("ok", "has space", "--alias"),
    ]:
        with pytest.raises(PromoteError, match=needle):
            check_registry_names(name, alias)


def test_with_repeats_the_best_config_on_average_wins_over_the_luckiest_seed(tmp_path):
    """Config x: seeds at 0.9 and 0.5 (mean 0.7); config y: 0.8 and 0.78 (mean 0.79): y's best wins."""
    from orchestrator.selection import config_stats

    configs = {
        "a": {"epochs": 3, "learning_rate": 1e-3, "seed": 0},
        "b": {"epochs": 3, "learning_rate": 1e-3, "seed": 1},
        "c": {"epochs": 3, "learning_rate": 2e-3, "seed": 0},
        "d": {"epochs": 3, "learning_rate": 2e-3, "seed": 1},
    }
    trials = {"a": [m(0.9)], "b": [m(0.5)], "c": [m(0.8)], "d": [m(0.78)]}
    _, ranked, _ = _record(tmp_path, trials, configs=configs)
    assert [c.trial_id for c in ranked] == ["c", "d", "a", "b"]
    stats = config_stats(ranked, "eval_accuracy")
    best = stats[ranked[0].config_id]
    assert (best.n, best.trials) == (2, ("c", "d"))
    assert best.mean == pytest.approx(0.79) and best.std == pytest.approx(0.0141421, rel=1e-4)
    assert stats[ranked[2].config_id].mean == pytest.approx(0.7)
    assert choose(ranked, None).trial_id == "c"  # promote takes the same one


def test_a_promotion_run_is_not_a_candidate(tmp_path):
    """`promote` records its own child run of the sweep; `best` afterwards must not trip over it."""
    client, _, _ = _record(tmp_path, {"a": [m(0.8)], "b": [m(0.7)]})
    sweep_run = find_sweep_run(client, "sel")
    tags = {
        "mlflow.parentRunId": sweep_run.info.run_id,
        "orchestrator.role": "promotion",
        "orchestrator.trial_id": "a",
    }
    client.set_terminated(client.create_run(sweep_run.info.experiment_id, tags=tags).info.run_id)
    assert [c.trial_id for c in candidates(client, sweep_run)] == ["a", "b"]


def test_an_epoch_directory_that_was_never_recorded_is_never_a_candidate(tmp_path):
    """A checkpoint torn by a crash (copied only in part, never reported) is not selectable."""
    client, _, root = _record(tmp_path, {"a": [{"eval_accuracy": 0.6}, {"eval_accuracy": 0.7}]})
    torn = root / "train-a" / "epoch-003"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"\x00" * 10)
    ranked = candidates(client, find_sweep_run(client, "sel"))
    assert sorted(c.epoch for c in ranked) == [1, 2] and ranked[0].epoch == 2


def test_a_resumed_trial_is_recorded_in_the_run_it_continues(tmp_path):
    from orchestrator.plan import RESUME_KEY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = SweepRecorder(uri, "sel", artifact_root=(tmp_path / "art").as_uri())
    parent = rec.open_parent(sweep="sel", experiment_path="x", params={"metric": "eval_accuracy"}, tags={})
    cb = TrialRecorderCallback(uri, rec.experiment_id, parent, sweep="sel", train_root=str(tmp_path))
    first = TrialStandIn("a")
    cb.on_trial_start(0, [], first)
    cb.on_trial_result(0, [], first, {"epoch": 1, "eval_accuracy": 0.5})
    # the driver died; a new process, a new Tune trial "n0" that continues "a"
    cb = TrialRecorderCallback(uri, rec.experiment_id, parent, sweep="sel", train_root=str(tmp_path))
    again = TrialStandIn("n0", config={"epochs": 2, RESUME_KEY: "a"})
    cb.on_trial_start(0, [], again)
    cb.on_trial_result(0, [], again, {"epoch": 1, "eval_accuracy": 0.5})  # re-reported: kept once
    cb.on_trial_result(0, [], again, {"epoch": 2, "eval_accuracy": 0.6})
    again.last_result = {"epoch": 2}
    cb.on_trial_complete(0, [], again)
    children = rec.children()
    assert [c.data.tags["orchestrator.trial_id"] for c in children] == ["a"]
    assert children[0].info.status == "FINISHED" and RESUME_KEY not in children[0].data.params
    steps = [int(m.step) for m in rec.client.get_metric_history(children[0].info.run_id, "eval_accuracy")]
    assert steps == [1, 2]
