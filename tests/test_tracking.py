"""MLflow recording against a real SQLite store: statuses, re-attach without duplicates.

The Tune side is represented by the few attributes the callback reads from a trial
(``trial_id``, ``config``, ``last_result``, ``get_error``); MLflow itself is real.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from orchestrator.tracking import TAGS, SweepRecorder, TrialRecorderCallback


def _oom_line() -> str:
    """The last line of a trial that ran out of memory, as a real allocation failure makes it."""
    import torch

    from trainables.device import out_of_memory_as_error

    try:
        with out_of_memory_as_error(torch.device("cpu"), batch_size=8, micro_batch_size=None):
            torch.empty(2**50, dtype=torch.uint8)
    except RuntimeError as exc:
        return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    raise AssertionError("no allocation failure")


OOM_LINE = _oom_line()


@dataclass
class TrialStandIn:
    trial_id: str
    config: dict = field(default_factory=lambda: {"learning_rate": 1e-4, "freeze_layers": 1, "epochs": 3})
    last_result: dict | None = None
    error: str | None = None

    def get_error(self):
        return self.error


def _result(epoch: int, acc: float) -> dict:
    return {
        "epoch": epoch,
        "eval_accuracy": acc,
        "eval_loss": 1 - acc,
        "checkpoint_path": f"/ck/epoch-{epoch:03d}",
    }


def _open(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rec = SweepRecorder(uri, "exp", artifact_root=(tmp_path / "art").as_uri())
    parent = rec.open_parent(
        sweep="exp", experiment_path="/runs/exp", params={"metric": "eval_accuracy"}, tags={}
    )
    cb = TrialRecorderCallback(
        uri, rec.experiment_id, parent, sweep="exp", train_root="/runs/exp/checkpoints"
    )
    return uri, rec, parent, cb


def test_statuses_and_metrics(tmp_path):
    uri, rec, parent, cb = _open(tmp_path)
    done, stopped, failed = (
        TrialStandIn("a_1"),
        TrialStandIn("b_2"),
        TrialStandIn("c_3", error="Traceback\nValueError: boom"),
    )
    # rank 0 ran out of memory; rank 1 then failed in the collective, and is listed last
    oom = TrialStandIn(
        "d_4", error=f"Traceback\n{OOM_LINE}\nTraceback\nRuntimeError: Connection closed by peer\n"
    )
    for t in (done, stopped, failed, oom):
        cb.on_trial_start(0, [], t)
    for epoch in (1, 2, 3):
        cb.on_trial_result(0, [], done, _result(epoch, 0.5 + epoch / 10))
    done.last_result = _result(3, 0.8)
    cb.on_trial_complete(0, [], done)
    cb.on_trial_result(0, [], stopped, _result(1, 0.4))
    stopped.last_result = _result(1, 0.4)
    cb.on_trial_complete(0, [], stopped)
    cb.on_trial_error(0, [], failed)
    cb.on_trial_error(0, [], oom)
    rec.close("FINISHED")

    client = MlflowClient(uri)
    runs = {r.data.tags[TAGS.TRIAL_ID]: r for r in rec.children()}
    assert set(runs) == {"a_1", "b_2", "c_3", "d_4"}
    assert runs["a_1"].info.status == "FINISHED" and runs["a_1"].data.tags[TAGS.OUTCOME] == "completed"
    assert runs["b_2"].info.status == "KILLED" and runs["b_2"].data.tags[TAGS.OUTCOME] == "early_stopped"
    assert runs["c_3"].info.status == "FAILED" and runs["c_3"].data.tags[TAGS.ERROR] == "ValueError: boom"
    assert runs["c_3"].data.tags[TAGS.ERROR_KIND] == "error"
    assert runs["d_4"].data.tags[TAGS.ERROR_KIND] == "out_of_memory"
    assert runs["d_4"].data.tags[TAGS.ERROR] == OOM_LINE.split(": ", 1)[1]
    history = client.get_metric_history(runs["a_1"].info.run_id, "eval_accuracy")
    assert [(m.step, round(m.value, 2)) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.8)]
    assert runs["a_1"].data.params["freeze_layers"] == "1"
    assert runs["a_1"].data.tags[TAGS.CHECKPOINT] == "/ck/epoch-003"
    assert runs["a_1"].data.tags[TAGS.TRAIN_RUN] == "/runs/exp/checkpoints/train-a_1"
    assert client.get_run(parent).info.status == "FINISHED"


def test_resume_reattaches_without_duplicates(tmp_path):
    uri, rec, parent, cb = _open(tmp_path)
    trial = TrialStandIn("a_1")
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, _result(1, 0.6))
    rec.close("KILLED")  # e.g. Ctrl-C: nothing may stay RUNNING
    assert [r.info.status for r in rec.children()] == ["KILLED"]

    # A new driver process: Tune unpickles the callback, the parent is found again by its tag.
    rec2 = SweepRecorder(uri, "exp", artifact_root=None)
    assert rec2.open_parent(sweep="exp", experiment_path="/runs/exp", params={}, tags={}) == parent
    cb2 = copy.deepcopy(cb)  # same __getstate__/__setstate__ path Tune uses when it pickles callbacks
    cb2.on_trial_start(0, [], trial)
    cb2.on_trial_result(0, [], trial, _result(1, 0.6))  # re-reported epoch: skipped
    cb2.on_trial_result(0, [], trial, _result(2, 0.7))
    trial.config["epochs"] = 2
    trial.last_result = _result(2, 0.7)
    cb2.on_trial_complete(0, [], trial)
    rec2.close("FINISHED")

    children = rec2.children()
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in MlflowClient(uri).get_metric_history(children[0].info.run_id, "eval_accuracy")]
    assert steps == [1, 2]
    parents = MlflowClient(uri).search_runs(
        [rec.experiment_id], filter_string=f"tags.`{TAGS.ROLE}` = 'sweep'"
    )
    assert len(parents) == 1


def test_a_child_run_killed_before_its_params_gets_them_when_its_trial_resumes(tmp_path):
    """kill -9 between creating a trial's run and logging its params (the driver starting the
    next trial as the previous one finished): the resumed trial re-attaches and logs them."""
    uri, rec, parent, cb = _open(tmp_path)
    client = MlflowClient(uri)
    bare = client.create_run(  # what the killed driver left: the run and its tags, no params
        rec.experiment_id,
        run_name="b_2",
        tags={TAGS.PARENT: parent, TAGS.ROLE: "trial", TAGS.SWEEP: "exp", TAGS.TRIAL_ID: "b_2"},
    ).info.run_id
    cb.on_trial_start(0, [], TrialStandIn("b_2"))
    assert client.get_run(bare).data.params == {
        "epochs": "3",
        "freeze_layers": "1",
        "learning_rate": "0.0001",
    }
    cb2 = copy.deepcopy(cb)
    cb2.on_trial_start(0, [], TrialStandIn("b_2"))  # re-attached again: nothing logged twice or changed
    assert client.get_run(bare).data.params["learning_rate"] == "0.0001"


def test_trials_that_ended_just_before_a_kill_are_closed_on_resume(tmp_path):
    """kill -9 between the searcher saving a trial as ended and the callback closing its run."""
    uri, rec, _, cb = _open(tmp_path)
    done, stopped, pending = TrialStandIn("a_1"), TrialStandIn("b_2"), TrialStandIn("c_3")
    for t in (done, stopped, pending):
        cb.on_trial_start(0, [], t)
    for epoch in (1, 2, 3):
        cb.on_trial_result(0, [], done, _result(epoch, 0.5 + epoch / 10))
    cb.on_trial_result(0, [], stopped, _result(1, 0.4))  # ASHA stopped it after epoch 1
    cb.on_trial_result(0, [], pending, _result(1, 0.5))  # still running: it resumes

    rec2 = SweepRecorder(uri, "exp", artifact_root=None)  # the next `run`
    rec2.open_parent(sweep="exp", experiment_path="/runs/exp", params={}, tags={})
    assert rec2.settle_ended({"c_3"}, epochs=3) == 2
    runs = {r.data.tags[TAGS.TRIAL_ID]: r for r in rec2.children()}
    assert runs["a_1"].info.status == "FINISHED" and runs["a_1"].data.tags[TAGS.OUTCOME] == "completed"
    assert runs["b_2"].info.status == "KILLED" and runs["b_2"].data.tags[TAGS.OUTCOME] == "early_stopped"
    assert runs["c_3"].info.status == "RUNNING"  # the resumed trial closes it itself
    assert rec2.settle_ended({"c_3"}, epochs=3) == 0  # idempotent


def _record_runs(uri: str, name: str, runs: int) -> int:
    from orchestrator.tracking import SweepRecorder

    recorder = SweepRecorder(uri, name, artifact_root=None)
    for i in range(runs):
        run = recorder.client.create_run(recorder.experiment_id, run_name=f"{name}-{i}")
        recorder.client.log_metric(run.info.run_id, "m", float(i))
        recorder.client.set_terminated(run.info.run_id)
    return runs


def test_many_writers_on_a_fresh_sqlite_store_lose_nothing(tmp_path):
    """8 processes open one fresh mlflow.db at once (MLflow's schema creation races without the lock)."""
    import multiprocessing

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        done = pool.starmap(_record_runs, [(uri, f"sweep{i % 2}", 5) for i in range(8)])
    assert done == [5] * 8
    client = MlflowClient(uri)
    experiments = [client.get_experiment_by_name(f"sweep{i}").experiment_id for i in range(2)]
    runs = client.search_runs(experiments, max_results=1000)
    assert len(runs) == 40 and all(r.data.metrics["m"] >= 0 for r in runs)


def _read_store(uri: str) -> int:
    from orchestrator.store import tracking_client

    return len(tracking_client(uri).search_experiments())


def test_readers_beside_a_writer_on_a_fresh_store_wait_for_it(tmp_path):
    """`best`/`ui`/`promote` open the store through tracking_client: they never race its creation."""
    import multiprocessing

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        readers = [pool.apply_async(_read_store, (uri,)) for _ in range(3)]
        writer = pool.apply_async(_record_runs, (uri, "sweep", 3))
        assert writer.get(timeout=300) == 3
        assert all(r.get(timeout=300) >= 1 for r in readers)  # at least MLflow's Default experiment


def test_a_sweep_snapshot_from_before_cache_dtype_resumes_as_fp32():
    """Older versions stored fp32 prefix states and did not name cache.dtype: resume them as such."""
    from orchestrator.runner import _as_now, _digest

    spec = {"name": "x", "cache": {"enabled": "auto", "max_gb": 4.0}}
    files = {"train": "ab12"}
    old = {"spec": spec, "data_sha256": files, "fingerprint": _digest(spec, files)}
    now = _as_now(old)
    assert now["spec"]["cache"]["dtype"] == "fp32"
    assert now["fingerprint"] == _digest({**spec, "cache": {**spec["cache"], "dtype": "fp32"}}, files)
    assert _as_now(now) is now  # a snapshot that names it is taken as it is


def test_a_sweep_snapshot_from_before_micro_batches_resumes_with_whole_batches():
    """A real sweep's snapshot as the version before ``train.micro_batch_size`` wrote it."""
    from orchestrator.runner import _as_now, _changed_keys, _digest
    from orchestrator.spec import SweepSpec
    from tests.conftest import sweep_dict

    spec = SweepSpec.model_validate(sweep_dict()).model_dump(mode="json")
    before = {**spec, "train": {k: v for k, v in spec["train"].items() if k != "micro_batch_size"}}
    files = {"train": "ab12"}
    old = {"spec": before, "data_sha256": files, "fingerprint": _digest(before, files)}
    assert _as_now(old)["fingerprint"] == _digest(spec, files)
    # a key one side lacks is named as changed, even when the other side holds null
    assert _changed_keys(before["train"], spec["train"]) == ["micro_batch_size"]
