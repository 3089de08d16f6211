"""Run (or resume) a resolved sweep: Ray Tune + Optuna (TPE) + ASHA, recorded in MLflow.

Re-running the same command on the same work directory is idempotent: an interrupted sweep
resumes (a new Tuner around the searcher's JSON state: unfinished and failed trials continue
their own Train runs from their latest checkpoints, in their own MLflow runs; nothing Tune
pickled is read), and a finished one just prints its leaderboard again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console

from orchestrator.browse import mark_experiment, view_state
from orchestrator.cluster import auto_concurrency, check_shared_storage, local_resources
from orchestrator.console import styled
from orchestrator.locations import check_writable
from orchestrator.plan import relative_cost
from orchestrator.progress import ProgressCallback, SweepProgress, showing
from orchestrator.ray_session import RaySession
from orchestrator.reaper import reaping
from orchestrator.resolve import ResolvedSweep
from orchestrator.retention import ResumeStateRetention, disk_usage_line
from orchestrator.searcher import STATE_FILE
from orchestrator.selection import Candidate, best_per_trial, candidates, config_stats
from orchestrator.spec import SpecError
from orchestrator.store import prepare_store
from orchestrator.sweep_cache import drop_prefix_features, prepare_sweep_cache
from orchestrator.tracking import (
    TAGS,
    SweepRecorder,
    TrialRecorderCallback,
    artifact_root_for,
    library_versions,
)
from orchestrator.trial import TrialSetup, driver_resources, run_trial
from orchestrator.tune_space import DefineByRun
from orchestrator.warm_workers import reuse_enabled
from trainables.config import TaskConfig
from trainables.data import file_sha256, filesystem, write_split
from trainables.stored import tree_bytes

__all__ = ["SweepOutcome", "run_sweep"]

SNAPSHOT = "orchestrator-sweep.json"


def _digest(spec: dict[str, Any], files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps([spec, files], sort_keys=True).encode()).hexdigest()


def _fingerprint(r: ResolvedSweep) -> dict[str, Any]:
    files = {k: file_sha256(v) for k, v in r.data_files.items() if not v.startswith("hf:") and "://" not in v}
    spec = r.spec.model_dump(mode="json")
    return {"spec": spec, "data_sha256": files, "fingerprint": _digest(spec, files)}


def _as_now(old: dict[str, Any]) -> dict[str, Any]:
    """A snapshot written by an older version, with the settings it ran under that it did not name."""
    spec = dict(old["spec"])
    cache, train = spec.get("cache", {}), spec.get("train")
    if "dtype" not in cache:
        spec["cache"] = {**cache, "dtype": "fp32"}  # before cache.dtype: fp32 states
    if isinstance(train, dict) and "micro_batch_size" not in train:
        spec["train"] = {**train, "micro_batch_size": None}  # before micro-batches: whole batches
    if spec == old["spec"]:
        return old
    return {**old, "spec": spec, "fingerprint": _digest(spec, old.get("data_sha256", {}))}


_MISSING = object()


def _changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, _MISSING), new.get(k, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(prefix + k)
    return keys


def _read_text(uri: str) -> str | None:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _git_commit(start: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def _parent_params(r: ResolvedSweep, concurrency: int) -> dict[str, Any]:
    s = r.spec
    params: dict[str, Any] = {
        "model": s.model,
        "metric": s.search.metric,
        "mode": s.search.mode,
        "num_trials": s.search.num_trials,
        "repeats": len(r.plan.seeds),
        "planned_trials": r.plan.trials,
        "planned_configs": r.plan.configs,
        "space_size": "" if r.plan.space_size is None else r.plan.space_size,
        "seeds": ",".join(str(x) for x in r.plan.seeds),
        "max_concurrent_trials": concurrency,
        "seed": s.search.seed,
        "scheduler": json.dumps(s.search.scheduler.model_dump()),
        "max_length": s.data.max_length,
        "workers_per_trial": s.resources.workers_per_trial,
        "cpus_per_worker": s.resources.cpus_per_worker,
        "gpus_per_worker": s.resources.gpus_per_worker,
        "num_layers": r.num_layers,
        "labels": ",".join(r.data.label_names),
        "train_rows": len(r.data.train),
        "validation_rows": len(r.data.validation),
        **{f"dropped_rows.{k.removeprefix('data.')}": n for k, n in r.data.dropped.items()},
    }
    for key, domains in r.space.items():
        dumped = [d.model_dump(exclude_none=True) for d in domains]
        params[f"space.{key}"] = json.dumps(dumped[0] if len(dumped) == 1 else dumped)
    params["pooling_auto"] = r.pooling_auto  # what pooling: auto resolved to for this model
    return params


@dataclass
class SweepOutcome:
    status: str  # the parent run's final MLflow status: FINISHED, KILLED (interrupted) or FAILED
    board: list[Candidate]  # each trial's best epoch, best first
    ranked: list[Candidate] = field(default_factory=list)  # every (trial, epoch), best first


def _check_resume(r: ResolvedSweep, snapshot: dict[str, Any]) -> bool:
    """True when the work directory holds this very sweep; SpecError when it holds another one."""
    previous = _read_text(f"{r.experiment_path}/{SNAPSHOT}")
    if previous is None:
        return False
    old = _as_now(json.loads(previous))
    if old["fingerprint"] != snapshot["fingerprint"]:
        changed = _changed_keys(old["spec"], snapshot["spec"]) or ["data files"]
        raise SpecError(
            f"{r.experiment_path} already holds sweep '{r.spec.name}' with other settings "
            f"(changed: {', '.join(changed[:5])}); use another --workdir (or storage), or another name"
        )
    return True


def _write_inputs(r: ResolvedSweep, snapshot: dict[str, Any]) -> None:
    """The sweep's data splits and its fingerprint, written once (a resume reads them back)."""
    data_dir = f"{r.experiment_path}/data"
    write_split(r.data.train, f"{data_dir}/train.parquet")
    write_split(r.data.validation, f"{data_dir}/validation.parquet")
    if r.data.test is not None:  # only promotion reads it, never selection
        write_split(r.data.test, f"{data_dir}/test.parquet")
    _write_text(f"{r.experiment_path}/{SNAPSHOT}", json.dumps(snapshot, indent=2))


def _open_parent(
    r: ResolvedSweep, recorder: SweepRecorder, snapshot: dict[str, Any], concurrency: int, resuming: bool
) -> str:
    """Create (or re-attach) the sweep's parent MLflow run with its params, tags and spec artifacts."""
    tags = {
        **{f"version.{k}": v for k, v in library_versions().items()},
        "majority_rate": f"{r.data.majority_rate():.4f}",
    }
    tags.update({f"data.{k}.sha256": v for k, v in snapshot["data_sha256"].items()})
    commit = _git_commit(r.spec_path.parent)
    if commit:
        tags["git_commit"] = commit
    parent_id = recorder.open_parent(
        sweep=r.spec.name, experiment_path=r.experiment_path, params=_parent_params(r, concurrency), tags=tags
    )
    search = r.spec.search
    view = view_state(search.metric, str(search.mode), list(r.space), repeats=len(r.plan.seeds) > 1)
    mark_experiment(recorder.client, recorder.experiment_id, view)  # where the MLflow UI opens
    if not resuming or not recorder.client.list_artifacts(parent_id, "spec"):
        recorder.client.log_text(parent_id, r.spec_path.read_text(), f"spec/{r.spec_path.name}")
        recorder.client.log_text(
            parent_id, yaml.safe_dump(snapshot["spec"], sort_keys=False), "spec/resolved.yaml"
        )
    return parent_id


def _trial_setup(r: ResolvedSweep) -> TrialSetup:
    spec = r.spec
    data_dir = f"{r.experiment_path}/data"
    task = TaskConfig(
        model=spec.model,
        train_data=f"{data_dir}/train.parquet",
        validation_data=f"{data_dir}/validation.parquet",
        label_names=r.data.label_names,
        max_length=spec.data.max_length,
        templates=spec.templates,
        data_seed=spec.search.seed,
        cache_dir=f"{r.experiment_path}/cache",
    )
    return TrialSetup(
        task=task.model_dump(),
        train_root=f"{r.experiment_path}/checkpoints",
        workers=spec.resources.workers_per_trial,
        cpus_per_worker=spec.resources.cpus_per_worker,
        gpus_per_worker=spec.resources.gpus_per_worker,
        metric=spec.search.metric,
        mode=str(spec.search.mode),
        invocation=uuid.uuid4().hex[:12],
        reuse_workers=reuse_enabled(),  # with Tune's reuse_actors in _new_tuner
    )


def _scheduler(r: ResolvedSweep) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sched = r.spec.search.scheduler
    if sched.type != "asha" or r.plan.fifo:  # seeds of one config are measured, not raced
        return FIFOScheduler()
    max_epochs = max([r.spec.train.epochs] + [int(v) for d in r.space.get("epochs", []) for v in d.corners()])
    return ASHAScheduler(
        time_attr="epoch",  # our counter: Tune's training_iteration restarts after a restore
        max_t=max_epochs,
        grace_period=sched.grace_period,
        reduction_factor=sched.reduction_factor,
    )


def _cost_order(r: ResolvedSweep) -> Callable[[dict[str, Any]], float] | None:
    """Costliest config first where the order changes no result: every config of a finite space
    runs, and FIFO trains each to the end (ASHA's decisions depend on what finished before)."""
    fifo = r.spec.search.scheduler.type != "asha" or r.plan.fifo
    if not (r.plan.enumerated and fifo):
        return None
    fixed, layers = dict(r.fixed), r.num_layers
    return lambda config: relative_cost({**fixed, **config}, layers)


def _new_tuner(
    r: ResolvedSweep, trainable: Any, callbacks: list, concurrency: int, resume: dict[str, Any] | None
) -> Any:
    """The sweep's Tuner; with ``resume`` (the searcher's saved state) it continues that sweep."""
    from ray import tune

    from orchestrator.searcher import planned_search

    search = r.spec.search
    # Optuna over a define-by-run space (conditional knobs): TPE, seeded, or an enumeration of
    # a small finite space; every config once, with each seed of the plan
    searcher = planned_search(
        r.plan,
        DefineByRun(r.space, r.fixed, r.fallback),
        metric=search.metric,
        mode=str(search.mode),
        seed=search.seed,
        state_uri=f"{r.experiment_path}/{STATE_FILE}",
        cost=_cost_order(r),
    )
    if resume is not None:
        searcher.set_search_properties(search.metric, str(search.mode), dict(r.fixed))
        searcher.resume_from(resume)
    return tune.Tuner(
        trainable,
        param_space=dict(r.fixed),  # constants; the searcher samples the rest
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            num_samples=r.plan.trials,
            max_concurrent_trials=concurrency,
            search_alg=searcher,
            scheduler=_scheduler(r),
            reuse_actors=reuse_enabled(),  # a trial actor runs trials in turn, on its parked workers (TrialSetup)
        ),
        run_config=tune.RunConfig(
            name=r.spec.name,
            storage_path=r.storage,
            failure_config=tune.FailureConfig(max_failures=1),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def _concurrency(r: ResolvedSweep) -> int:
    import ray

    search = r.spec.search
    if search.max_concurrent_trials == "auto":
        return auto_concurrency(ray.cluster_resources(), r.spec.resources, r.plan.trials)
    return min(int(search.max_concurrent_trials), r.plan.trials)


def _check_local_fit(r: ResolvedSweep) -> None:
    """Before any Ray process starts: one trial fits this machine, and so do the fixed concurrent ones."""
    search = r.spec.search
    fit = auto_concurrency(local_resources(), r.spec.resources, r.plan.trials)
    wanted = search.max_concurrent_trials
    if wanted != "auto" and min(int(wanted), r.plan.trials) > fit:
        raise SpecError(
            f"search.max_concurrent_trials: {wanted} trials at once do not fit this machine (at most {fit} with "
            f"these resources); use auto or at most {fit}"
        )


def run_sweep(r: ResolvedSweep, console: Console, *, verbose: bool = False) -> SweepOutcome:
    """Run or resume the sweep; return its status and per-trial leaderboard."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec, search, exp_path = r.spec, r.spec.search, r.experiment_path
    problems = check_writable(r.workdir, r.storage)
    if problems:
        raise SpecError(problems)
    r.workdir.mkdir(parents=True, exist_ok=True)
    snapshot = _fingerprint(r)
    resuming = _check_resume(r, snapshot)
    if not os.environ.get("RAY_ADDRESS"):
        _check_local_fit(r)
    if not resuming:
        _write_inputs(r, snapshot)
    setup = _trial_setup(r)
    state = _search_state(exp_path) if resuming else None  # before anything starts or is written
    if resuming and state is None and _has_trials(setup.train_root):
        raise SpecError(
            f"{exp_path} holds trials of sweep '{spec.name}' recorded by an older version without "
            f"its {STATE_FILE}; run it into a new --workdir (or storage)"
        )
    session = RaySession(verbose).start()  # while templates are encoded and the MLflow store made
    try:
        setup = prepare_sweep_cache(r, setup, console)  # templates encoded, cache sized
        prepare_store(r.tracking_uri)  # the schema; no experiment before the storage check below
        session.ready()
        import ray
        from ray import tune

        check_shared_storage(r.storage, {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})
        concurrency = _concurrency(r)
        recorder = SweepRecorder(
            r.tracking_uri, spec.name, artifact_root=artifact_root_for(r.tracking_uri, r.workdir)
        )
        parent_id = _open_parent(r, recorder, snapshot, concurrency, resuming)
        if state is not None:  # trials that ended just before a kill -9 closed their runs
            recorder.settle_ended({*state["trials"], *state.get("failed", {})}, r.spec.train.epochs)
        console.print(
            styled(
                ("sweep", "bold"),
                f" {spec.name}: {r.plan.trials} trials, {concurrency} at a time, "
                f"model {spec.model}, metric {search.metric} ({search.mode})",
            )
        )
        console.print(
            styled(
                ("plan", "bold"),
                f" {r.plan.summary()}; {r.plan.scheduler_line(r.spec.search.scheduler.type)}",
            )
        )
        console.print(
            styled(("mlflow", "bold"), f" {r.tracking_uri}  (experiment '{spec.name}', run {parent_id})")
        )
        if resuming:
            console.print(styled(("resuming", "bold"), f" {exp_path}"))

        # The trial actor only drives its Train run; the workers hold the real resources.
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, setup=setup), driver_resources(ray.cluster_resources())
        )
        callbacks = [
            TrialRecorderCallback(
                r.tracking_uri,
                recorder.experiment_id,
                parent_id,
                sweep=spec.name,
                train_root=setup.train_root,
                metric=search.metric,
                mode=str(search.mode),
            ),
            ProgressCallback(),
            ResumeStateRetention(setup.train_root),
        ]
        # A resume is a new Tuner around the searcher's own JSON state: nothing Tune pickled
        # into the storage (tuner.pkl, searcher and experiment state) is ever read back.
        tuner = _new_tuner(r, trainable, callbacks, concurrency, state)
        return _fit(tuner, r, recorder, parent_id, console, trials_over=session.release)
    finally:
        session.close()


def _search_state(exp_path: str) -> dict[str, Any] | None:
    """The searcher's saved JSON state (None before the first trial was handed out)."""
    text = _read_text(f"{exp_path}/{STATE_FILE}")
    if text is None:
        return None
    try:
        state = json.loads(text)
    except ValueError:
        state = None
    if not isinstance(state, dict) or not {"asked", "sampled", "queue", "trials"} <= set(state):
        raise SpecError(
            f"{exp_path}/{STATE_FILE} is not a search state this version wrote; "
            "run the sweep into a new --workdir (or storage)"
        ) from None
    return state


def _has_trials(train_root: str) -> bool:
    """Whether any trial of the sweep has started (its Train run directory exists)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(train_root)
    try:
        return bool(fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)))
    except OSError:
        return False


def _progress(r: ResolvedSweep, recorder: SweepRecorder, console: Console) -> SweepProgress:
    """The progress display, counting the trials a resumed sweep already ended and its best so far."""
    search = r.spec.search
    progress = SweepProgress(
        console,
        metric=search.metric,
        mode=str(search.mode),
        searched=[*r.space, *(["seed"] if len(r.plan.seeds) > 1 else [])],
        total=r.plan.trials,
        epochs=r.spec.train.epochs,
    )
    ended = [c for c in recorder.children() if c.info.status in ("FINISHED", "KILLED", "FAILED")]
    ended = [  # interrupted and failed trials run again in this process: not done yet
        c
        for c in ended
        if c.data.tags.get(TAGS.ROLE) == "trial"
        and c.data.tags.get(TAGS.OUTCOME) not in ("interrupted", "failed")
    ]
    progress.done = len(ended)
    for c in ended:
        value = c.data.metrics.get(f"best_{search.metric}")
        if value is not None and progress.better(value):
            progress.best = (value, c.data.tags.get(TAGS.TRIAL_ID, c.info.run_name))
    return progress


def _report_disk(exp_path: str, recorder: SweepRecorder, parent_id: str, console: Console) -> None:
    """Print and log the sweep's bytes in storage (checkpoints, base weights, data, Tune state)."""
    nbytes = tree_bytes(exp_path)
    recorder.client.log_metric(parent_id, "disk_bytes", float(nbytes))
    console.print(styled(("disk", "bold"), f" {disk_usage_line(nbytes)} under {exp_path}"))


def _fit(
    tuner: Any,
    r: ResolvedSweep,
    recorder: SweepRecorder,
    parent_id: str,
    console: Console,
    *,
    trials_over: Callable[[], None],
) -> SweepOutcome:
    """Run the Tuner; close the parent run as FINISHED, KILLED (interrupted) or FAILED with its leaderboard.

    ``trials_over`` is called once Tune returned (or raised): Ray is not needed after it.
    """
    metric, exp_path = r.spec.search.metric, r.experiment_path
    status = "FAILED"
    try:
        with showing(_progress(r, recorder, console)):
            try:
                with reaping():  # the placement groups of trial actors that die
                    tuner.fit()
            finally:
                trials_over()
        # Ctrl-C makes Tune return early; what MLflow recorded tells finished from interrupted
        # (a resume's Tuner sees only the trials it ran: the record holds the whole sweep).
        trials = [c for c in recorder.children() if c.data.tags.get(TAGS.ROLE) == "trial"]
        statuses = [c.info.status for c in trials]
        unfinished = "RUNNING" in statuses or len(trials) < r.plan.trials
        all_failed = bool(statuses) and all(st == "FAILED" for st in statuses)
        status = "KILLED" if unfinished else ("FAILED" if all_failed else "FINISHED")
    finally:
        ranked = candidates(recorder.client, recorder.client.get_run(parent_id))
        board = best_per_trial(ranked)
        charts: dict[str, Any] = {}
        if board:
            _record_leaderboard(recorder, parent_id, board, metric)
            charts = _record_charts(r, recorder, parent_id, board, console)
        if status == "FINISHED":  # a resume would read them; a finished sweep has no use for them
            freed = drop_prefix_features(exp_path)
            if freed:
                console.print(
                    styled(("prefix cache", "bold"), f" {disk_usage_line(freed)} deleted (sweep finished)")
                )
        _report_disk(exp_path, recorder, parent_id, console)
        recorder.close(status)
        if board:
            _record_report(r, recorder, parent_id, ranked, charts, console)
    return SweepOutcome(status, board, ranked)


def _record_report(
    r: ResolvedSweep,
    recorder: SweepRecorder,
    parent_id: str,
    ranked: list[Candidate],
    charts: dict[str, Any],
    console: Console,
) -> None:
    """``report.html`` on the (closed) parent run, from the charts just drawn; never fails the sweep."""
    from orchestrator.report import REPORT_ARTIFACT, write_report

    started = time.perf_counter()
    try:
        sweep_run = recorder.client.get_run(parent_id)
        write_report(recorder.client, r.spec.name, None, sweep_run=sweep_run, ranked=ranked, charts=charts)
    except Exception as exc:  # a page about the results: they are recorded either way
        console.print(styled(("report", "bold"), f" not written ({type(exc).__name__}: {str(exc)[:200]})"))
        return
    took = time.perf_counter() - started
    console.print(
        styled(
            ("report", "bold"), f" {REPORT_ARTIFACT} on the parent run ({took:.1f} s; orchestrator report)"
        )
    )


def _replace_table(client: Any, run_id: str, frame: pd.DataFrame, path: str) -> None:
    """What ``log_table`` writes (the JSON the UI renders as a table), replaced rather than appended to.

    ``MlflowClient.log_table`` appends to an existing file, so a resumed sweep would list every
    trial twice; this writes the same format and registers it the same way (``mlflow.loggedArtifacts``).
    """
    client.log_text(run_id, frame.to_json(orient="split", index=False, date_format="iso"), path)
    logged = json.loads(client.get_run(run_id).data.tags.get("mlflow.loggedArtifacts", "[]"))
    entry = {"path": path, "type": "table"}
    if entry not in logged:
        client.set_tag(run_id, "mlflow.loggedArtifacts", json.dumps([*logged, entry]))


def _record_charts(
    r: ResolvedSweep, recorder: SweepRecorder, parent_id: str, board: list[Candidate], console: Console
) -> dict[str, Any]:
    """The search's charts on the parent run (rebuilt on every finish or resume); never fails the sweep."""
    from orchestrator.charts import log_search_charts

    search = r.spec.search
    started = time.perf_counter()
    try:
        drawn = log_search_charts(
            recorder.client, parent_id, board, r.space, search.metric, str(search.mode), r.spec.name
        )
    except Exception as exc:  # a chart is a picture: the sweep's results are recorded either way
        console.print(styled(("charts", "bold"), f" not drawn ({type(exc).__name__}: {str(exc)[:200]})"))
        return {}
    if drawn:
        console.print(
            styled(
                ("charts", "bold"),
                f" {', '.join(drawn)} on the parent run (charts/search.html, "
                f"{time.perf_counter() - started:.1f} s)",
            )
        )
    return drawn


def _record_leaderboard(recorder: SweepRecorder, parent_id: str, board: list[Candidate], metric: str) -> None:
    """``leaderboard.csv`` and the ``leaderboard.json`` table (rendered by the UI) on the parent run,
    with each trial's config, seed and config mean over seeds; the best trial's value, plus the
    best config's mean, std and n when seeds repeat."""
    stats = config_stats(board, metric)
    rows = []
    for i, c in enumerate(board, 1):
        st = stats[c.config_id]
        rows.append(
            {
                "rank": i,
                "trial_id": c.trial_id,
                "epoch": c.epoch,
                "outcome": c.outcome,
                metric: round(c.metrics[metric], 6) if metric in c.metrics else None,
                "checkpoint": c.checkpoint or "",
                "config_id": c.config_id,
                "seed": c.params.get("seed", ""),
                "config_mean": None if st.mean is None else round(st.mean, 6),
                "config_std": round(st.std, 6),
                "config_n": st.n,
            }
        )
    frame = pd.DataFrame(rows)
    recorder.client.log_text(parent_id, frame.to_csv(index=False), "leaderboard.csv")
    _replace_table(recorder.client, parent_id, frame, "leaderboard.json")
    best = board[0]
    if metric not in best.metrics:
        return  # no trial reported an epoch
    recorder.client.log_metric(parent_id, f"best_{metric}", best.metrics[metric])
    recorder.client.set_tag(parent_id, "best_trial_id", best.trial_id)
    recorder.client.set_tag(parent_id, "best_epoch", str(best.epoch))
    chosen = stats[best.config_id]
    if len(chosen.trials) > 1 and chosen.mean is not None:
        recorder.client.log_metric(parent_id, f"best_config_mean_{metric}", chosen.mean)
        recorder.client.log_metric(parent_id, f"best_config_std_{metric}", chosen.std)
        recorder.client.log_metric(parent_id, "best_config_n", float(chosen.n))
        recorder.client.set_tag(parent_id, "best_config_id", best.config_id)
