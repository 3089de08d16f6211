"""``orchestrator``: validate, run, inspect and browse fine-tuning sweeps.

Exit codes: 0 success, 2 bad input (one line per problem, no traceback), 1 failure.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.console import make_console, styled
from search_spaces import objectives as M
from search_spaces.errors import UserError, cap

app = typer.Typer(
    help="Fine-tuning sweeps on Ray (Train + Tune + Optuna), recorded in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = make_console()  # markup off: user text is printed verbatim
err = make_console(stderr=True)

DEFAULT_WORKDIR = Path("work")
Workdir = Annotated[Path, typer.Option("--workdir", "-w", help="Where runs, checkpoints and mlflow.db live.")]


MAX_LINE = 500  # one problem line, echoed values included


def _bad(lines: list[str] | str) -> typer.Exit:
    for line in [lines] if isinstance(lines, str) else lines:
        err.print(styled(("error:", "red"), " ", cap(line, MAX_LINE)), highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _load(spec: Path, overrides: list[str], workdir: Path):
    from orchestrator.spec import SpecError, load_spec

    try:
        sweep = load_spec(spec, overrides)  # the file's shape first: no heavy import before it is right
        from orchestrator.resolve import resolve_sweep

        return resolve_sweep(sweep, spec, workdir)
    except SpecError as exc:
        raise _bad(exc.lines) from None


@app.command()
def validate(
    spec: Annotated[Path, typer.Argument(help="Sweep file (YAML).")],
    set_: Annotated[list[str], typer.Option("--set", help="Override KEY=VALUE (dotted), repeatable.")] = [],  # noqa: B006
) -> None:
    """Check a sweep file, its data, model and templates; report every mistake. Starts nothing."""
    r = _load(spec, set_, DEFAULT_WORKDIR)
    s = r.spec
    out.print(styled(("ok", "green"), f" {spec}: sweep '{s.name}', model {s.model} ({r.num_layers} layers)"))
    out.print(
        f"   data: {len(r.data.train)} train / {len(r.data.validation)} validation rows, "
        f"labels {', '.join(r.data.label_names)} (majority rate {r.data.majority_rate():.3f})"
    )
    if r.data.dropped:
        skipped = ", ".join(f"{n} from {k}" for k, n in r.data.dropped.items())
        out.print(
            f"   skipped rows with an empty text or label (data.drop_empty_rows): {skipped}", markup=False
        )
    for key, domains in r.space.items():
        for domain in domains:
            when = domain.conditions()
            cond = "  when " + ", ".join(f"{k} in {v}" for k, v in when.items()) if when else ""
            shown = domain.model_dump(exclude={"type", "when"})
            out.print(f"   search {key}: {shown} ({domain.type}){cond}", markup=False)
    fixed = ", ".join(f"{k}={r.fixed[k]}" for k in ("strategy", "pooling", "freeze_layers") if k in r.fixed)
    if fixed:
        out.print(f"   fixed: {fixed} (pooling auto = {r.pooling_auto} for this model)", markup=False)
    out.print(f"   {r.plan.summary()}", markup=False)
    scheduler = r.plan.scheduler_line(s.search.scheduler.type)
    out.print(f"   metric {s.search.metric} ({s.search.mode}), {scheduler}", markup=False)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="Sweep file (YAML).")],
    workdir: Workdir = DEFAULT_WORKDIR,
    set_: Annotated[list[str], typer.Option("--set", help="Override KEY=VALUE (dotted), repeatable.")] = [],  # noqa: B006
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show Ray's, MLflow's and the workers' own output here instead of in the log file.",
        ),
    ] = False,
) -> None:
    """Run the sweep (or resume it if this work directory already holds it) and print the leaderboard.

    On a terminal a live panel shows trials done / running / pending, elapsed time, ETA and the
    best value so far; elsewhere one plain line per trial event. The libraries' own output goes to
    WORKDIR/logs/SWEEP.log (printed at the start) unless --verbose.
    """
    from orchestrator.spec import SpecError

    r = _load(spec, set_, workdir)
    try:
        outcome = _run_quietly(r, verbose)
    except SpecError as exc:
        raise _bad(exc.lines) from None
    board = outcome.board
    if outcome.status == "KILLED":
        err.print("interrupted: unfinished trials are saved; re-run the same command to resume")
        raise typer.Exit(130)
    if not board or r.spec.search.metric not in board[0].metrics:
        err.print(styled(("no trial reported a result", "red"), "; re-run with --verbose to see worker logs"))
        raise typer.Exit(1)
    from orchestrator.selection import config_stats

    stats = config_stats(board, r.spec.search.metric)
    _print_board(board, r.spec.search.metric, list(r.space), stats=stats)
    best = next((c for c in outcome.ranked if c.checkpoint), board[0])  # as `best` and `promote` choose
    if len(stats[best.config_id].trials) > 1:
        out.print(
            styled(
                "\n",
                ("best config", "bold"),
                f" {best.config_id[:8]} by its mean over seeds: "
                f"{r.spec.search.metric}={_config_cell(stats[best.config_id])}",
            )
        )
    out.print(
        styled(
            "\n",
            ("best", "bold"),
            f" trial {best.trial_id} epoch {best.epoch}: "
            f"{r.spec.search.metric}={best.metrics[r.spec.search.metric]:.4f} "
            f"(majority-class rate {r.data.majority_rate():.4f})",
        )
    )
    out.print(styled(("checkpoint", "bold"), f" {best.checkpoint}"))
    wd = "" if r.workdir == DEFAULT_WORKDIR.resolve() else f" --workdir {workdir}"
    out.print(
        f"next: orchestrator best{wd} --sweep {r.spec.name} --json   |   orchestrator ui{wd}"
        f"   |   orchestrator report{wd} --sweep {r.spec.name}"
    )


def _run_quietly(r: Any, verbose: bool) -> Any:
    """``run_sweep`` with third-party output in the sweep's log file (or here, with --verbose)."""
    from orchestrator.console import third_party_to
    from orchestrator.runner import run_sweep

    if verbose:
        return run_sweep(r, out, verbose=True)
    log = r.workdir / "logs" / f"{r.spec.name}.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.open("a").close()
    except OSError:  # an unwritable work directory: run_sweep says so in one line
        return run_sweep(r, out, verbose=False)
    out.print(
        styled(("log", "bold"), f" {log}  (Ray, MLflow and library messages; --verbose shows them here)")
    )
    with third_party_to(log, f"orchestrator run {r.spec_path}") as console:
        return run_sweep(r, console, verbose=False)


def _print_board(
    board: list[Any], metric: str, searched: list[str], top: int | None = None, stats: dict | None = None
) -> None:
    """The leaderboard; with repeats (``stats`` of configs with several seeds) the seed and config mean too."""
    repeats = bool(stats) and any(len(st.trials) > 1 for st in stats.values())
    table = Table(title="leaderboard (best epoch of each trial)" + (", by config mean" if repeats else ""))
    extra = ["config", "seed", "config mean ± std (n)"] if repeats else []
    for col in ["#", "trial", "epoch", metric, "eval_loss", *extra, *searched, "outcome"]:
        table.add_column(col)
    for i, c in enumerate(board[:top] if top else board, 1):
        params = [c.params.get(k, "") for k in searched]
        params = [
            f"{float(p):.3g}" if k == "learning_rate" and p != "" else p
            for k, p in zip(searched, params, strict=True)
        ]
        cells = (
            [c.config_id[:8], c.params.get("seed", ""), _config_cell(stats[c.config_id])] if repeats else []
        )
        table.add_row(
            str(i),
            c.trial_id,
            str(c.epoch or "-"),
            f"{c.metrics[metric]:.4f}" if metric in c.metrics else "-",
            f"{c.metrics[M.EVAL_LOSS]:.4f}" if M.EVAL_LOSS in c.metrics else "-",
            *cells,
            *params,
            c.outcome or c.status.lower(),
        )
    out.print(table)


def _config_cell(st: Any) -> str:
    return "-" if st.mean is None else f"{st.mean:.4f} ± {st.std:.4f} ({st.n})"


def _tracking_uri(workdir: Path | None, tracking_uri: str | None) -> str:
    if tracking_uri:
        return tracking_uri
    db = (workdir or DEFAULT_WORKDIR).resolve() / "mlflow.db"
    if not db.exists():
        raise _bad(f"--workdir: no mlflow.db in {db.parent}; run a sweep there first or pass --tracking-uri")
    return f"sqlite:///{db}"


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="Sweep file (YAML).")],
    address: Annotated[
        str | None, typer.Option("--address", help="Ray dashboard, e.g. http://127.0.0.1:8265.")
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override KEY=VALUE (dotted), repeatable.")] = [],  # noqa: B006
    remote_workdir: Annotated[
        str, typer.Option("--remote-workdir", help="Work directory on the head node.")
    ] = "$HOME/orchestrator-work",
    ship_code: Annotated[
        bool,
        typer.Option(
            "--ship-code/--installed-code",
            help="Upload this project's packages with the job, or use the cluster's installed ones.",
        ),
    ] = True,
    follow: Annotated[
        bool, typer.Option("--follow", help="Stream the job's logs until it ends; exit with its result.")
    ] = False,
) -> None:
    """Validate the sweep here, then run it on a Ray cluster as a Ray Job."""
    from orchestrator.jobs import JobsError
    from orchestrator.jobs import submit as submit_job

    r = _load(spec, set_, DEFAULT_WORKDIR)
    try:
        jobs, job_id = submit_job(r, address=address, remote_workdir=remote_workdir, ship_code=ship_code)
    except JobsError as exc:
        raise _bad(str(exc)) from None
    addr = address or os.environ.get("RAY_ADDRESS", "")
    out.print(styled("submitted ", (job_id, "bold"), f" (sweep {r.spec.name}) to {addr}"))
    out.print(f"follow:  orchestrator jobs logs {job_id} --follow --address {addr}")
    where = r.spec.tracking.uri or f"sqlite:///{remote_workdir}/{r.spec.name}/mlflow.db on the head"
    out.print(
        f"results: MLflow {where}, experiment '{r.spec.name}'; checkpoints under {r.spec.storage or 'the head work directory'}"
    )
    if follow:
        raise typer.Exit(_follow(jobs, job_id))


def _follow(jobs: Any, job_id: str) -> int:
    import asyncio

    from ray.job_submission import JobStatus

    async def tail() -> None:
        async for lines in jobs.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(tail())
    status = jobs.get_job_status(job_id)
    out.print(f"job {job_id}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


jobs_app = typer.Typer(help="Ray Jobs on the cluster: list, status, logs, stop.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
Address = Annotated[str | None, typer.Option("--address", help="Ray dashboard address (or RAY_ADDRESS).")]


def _jobs(address: str | None):
    from orchestrator.jobs import JobsError, client

    try:
        return client(address)
    except JobsError as exc:
        raise _bad(str(exc)) from None


@jobs_app.command("list")
def jobs_list(address: Address = None) -> None:
    """All jobs with their status and sweep."""
    table = Table()
    for col in ["job", "status", "sweep", "entrypoint"]:
        table.add_column(col)
    for job in _jobs(address).list_jobs():
        table.add_row(
            job.submission_id or job.job_id or "",
            str(job.status),
            (job.metadata or {}).get("sweep", ""),
            job.entrypoint[:60],
        )
    out.print(table)


@jobs_app.command("status")
def jobs_status(
    job: Annotated[str, typer.Argument(help="Job (submission) id.")], address: Address = None
) -> None:
    """Status of one job."""
    try:
        info = _jobs(address).get_job_info(job)
    except RuntimeError as exc:
        raise _bad(f"job {job}: {str(exc).splitlines()[0]}") from None
    out.print(f"{job}: {info.status}" + (f" ({info.message})" if info.message else ""))


@jobs_app.command("logs")
def jobs_logs(
    job: Annotated[str, typer.Argument(help="Job (submission) id.")],
    address: Address = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends.")] = False,
) -> None:
    """Logs of one job."""
    jobs = _jobs(address)
    if follow:
        raise typer.Exit(_follow(jobs, job))
    try:
        print(jobs.get_job_logs(job), end="")
    except RuntimeError as exc:
        raise _bad(f"job {job}: {str(exc).splitlines()[0]}") from None


@jobs_app.command("stop")
def jobs_stop(
    job: Annotated[str, typer.Argument(help="Job (submission) id.")], address: Address = None
) -> None:
    """Stop a running job (its sweep can be resumed by submitting it again)."""
    try:
        stopped = _jobs(address).stop_job(job)
    except RuntimeError as exc:
        raise _bad(f"job {job}: {str(exc).splitlines()[0]}") from None
    out.print(f"{job}: {'stop requested' if stopped else 'already finished'}")


@app.command()
def best(
    sweep: Annotated[str, typer.Option("--sweep", "-s", help="Sweep name (= MLflow experiment).")],
    workdir: Annotated[
        Path | None, typer.Option("--workdir", "-w", help="Work directory of the sweep.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows of the leaderboard to show.")] = 10,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (the best checkpoint).")
    ] = False,
) -> None:
    """Show the best checkpoint of a sweep (over every recorded epoch of every trial)."""
    from orchestrator.selection import (
        SelectionError,
        best_per_trial,
        candidates,
        config_stats,
        find_sweep_run,
    )
    from orchestrator.store import tracking_client

    client = tracking_client(_tracking_uri(workdir, tracking_uri))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            sweep_run = find_sweep_run(client, sweep)
            ranked = candidates(client, sweep_run)
    except SelectionError as exc:
        raise _bad(str(exc)) from None
    selectable = [c for c in ranked if c.checkpoint]
    if not selectable:
        raise _bad(f"--sweep {sweep}: no trial holds a checkpoint yet; run or resume the sweep")
    choice = selectable[0]
    metric = sweep_run.data.params.get("metric", M.EVAL_ACCURACY)
    stats = config_stats(ranked, metric)
    chosen = stats[choice.config_id]
    by_mean = len(chosen.trials) > 1
    if as_json:
        print(json.dumps(_best_json(sweep, sweep_run, choice, stats)))
        return
    searched = [k.removeprefix("space.") for k in sweep_run.data.params if k.startswith("space.")]
    _print_board(best_per_trial(ranked), metric, sorted(searched), top=top, stats=stats)
    if by_mean:
        out.print(
            styled(
                ("best config", "bold"),
                f" {choice.config_id[:8]} by its mean over {chosen.n} seeds: "
                f"{metric}={_config_cell(chosen)}; its best checkpoint:",
            )
        )
    out.print(
        styled(
            ("best", "bold"),
            f" trial {choice.trial_id} epoch {choice.epoch}: {metric}={choice.metrics[metric]:.4f}",
        )
    )
    out.print(styled(("checkpoint", "bold"), f" {choice.checkpoint}"))


@app.command()
def report(
    sweep: Annotated[str, typer.Option("--sweep", "-s", help="Sweep name (= MLflow experiment).")],
    workdir: Annotated[
        Path | None, typer.Option("--workdir", "-w", help="Work directory of the sweep.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write it [default: ./SWEEP-report.html].")
    ] = None,
    ui_url: Annotated[
        str,
        typer.Option("--ui-url", help="MLflow UI base URL the page links to (orchestrator ui's default)."),
    ] = "http://127.0.0.1:5000",
) -> None:
    """Write one self-contained HTML page about a sweep (leaderboard, charts, best trial, MLflow links).

    It opens offline and can be mailed or attached to a ticket; it is also logged on the sweep's
    parent run as report.html.
    """
    from orchestrator.report import write_report
    from orchestrator.selection import SelectionError
    from orchestrator.store import tracking_client

    started = time.perf_counter()
    client = tracking_client(_tracking_uri(workdir, tracking_uri))
    target = out_file or Path(f"{sweep}-report.html")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            page = write_report(client, sweep, target, ui=ui_url)
    except SelectionError as exc:
        raise _bad(str(exc)) from None
    except OSError as exc:
        raise _bad(f"--out {target}: cannot write ({exc.strerror or exc}); choose another path") from None
    took = time.perf_counter() - started
    out.print(
        styled(
            ("report", "bold"),
            f" {target} ({len(page.encode()) / 1e6:.1f} MB, {took:.1f} s); also on the sweep's parent run as report.html",
        )
    )


def _best_json(sweep: str, sweep_run: Any, choice: Any, stats: dict) -> dict[str, Any]:
    """``best --json``: the chosen checkpoint, and each config's mean, std and n over its seeds."""
    metric = sweep_run.data.params.get("metric", M.EVAL_ACCURACY)
    chosen = stats[choice.config_id]
    return {
        "sweep": sweep,
        "trial_id": choice.trial_id,
        "epoch": choice.epoch,
        "metric": metric,
        "mode": sweep_run.data.params.get("mode"),
        "value": choice.metrics[metric],
        "metrics": choice.metrics,
        "params": choice.params,
        "checkpoint": choice.checkpoint,
        "mlflow_run_id": choice.run_id,
        "sweep_run_id": sweep_run.info.run_id,
        "config_id": choice.config_id,
        "seed": choice.params.get("seed"),
        "config": {
            "mean": chosen.mean,
            "std": chosen.std,
            "n": chosen.n,
            "trials": chosen.trials,
        },
        "selected_by": "config mean over seeds" if len(chosen.trials) > 1 else "best epoch",
        "configs": [
            {
                "config_id": st.config_id,
                "mean": st.mean,
                "std": st.std,
                "n": st.n,
                "trials": st.trials,
            }
            for st in stats.values()
        ],
    }


@app.command()
def promote(
    sweep: Annotated[str, typer.Option("--sweep", "-s", help="Sweep name (= MLflow experiment).")],
    workdir: Annotated[
        Path | None, typer.Option("--workdir", "-w", help="Work directory of the sweep.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
    trial: Annotated[
        str | None, typer.Option("--trial", help="Promote this trial's best epoch instead.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Registered model name [default: <sweep>-classifier].")
    ] = None,
    alias: Annotated[
        str, typer.Option("--alias", help="Alias to point at the new version (moved if set).")
    ] = "champion",
    export: Annotated[
        Path | None, typer.Option("--export", help="Also write a self-contained model directory.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Register the best checkpoint (or --trial's) in MLflow, set --alias, optionally --export it."""
    from orchestrator.promote import PromoteError
    from orchestrator.promote import promote as run_promote

    uri = _tracking_uri(workdir, tracking_uri)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries print links; stdout is ours (--json)
            p = run_promote(uri, sweep=sweep, trial=trial, name=name, alias=alias, export=export)
    except PromoteError as exc:
        raise _bad(str(exc)) from None
    c = p.candidate
    if as_json:
        print(
            json.dumps(
                {
                    "name": p.name,
                    "version": p.version,
                    "alias": p.alias,
                    "model_uri": f"models:/{p.name}@{p.alias}",
                    "reused": p.reused,
                    "trial_id": c.trial_id,
                    "epoch": c.epoch,
                    "checkpoint": c.checkpoint,
                    "validation": p.validation,
                    "reproduced": p.reproduced,
                    "test": p.test,
                    "export": p.export_dir,
                }
            )
        )
        return
    what = "already registered as" if p.reused else "registered as"
    out.print(
        styled(f"trial {c.trial_id} epoch {c.epoch} {what} ", (p.name, "bold"), f" version {p.version}")
    )
    moved = (
        f" (moved from version {p.previous_alias_version})"
        if p.previous_alias_version not in (None, p.version)
        else ""
    )
    out.print(f"alias {p.alias} -> version {p.version}{moved}:  models:/{p.name}@{p.alias}")
    out.print("validation " + "  ".join(f"{k}={v:.4f}" for k, v in p.validation.items()))
    if p.reproduced:
        out.print(p.reproduced)
    if p.test:
        out.print("test       " + "  ".join(f"{k}={v:.4f}" for k, v in p.test.items()))
    if p.export_dir:
        out.print(f"exported to {p.export_dir}")
    out.print(
        f"serve: MLFLOW_TRACKING_URI={uri} mlflow models serve -m models:/{p.name}@{p.alias} --env-manager local -p 5001"
    )


@app.command()
def predict(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="models:/NAME@ALIAS, a registry URI, or an export/checkpoint directory."
        ),
    ] = "",
    file: Annotated[
        Path | None,
        typer.Option("--file", help="CSV/TSV/JSON(L)/parquet with a 'text' column (or one column)."),
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", "-w", help="Work directory (its MLflow store).")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Classify texts with a promoted model or an exported directory (same context template as training)."""
    import pandas as pd

    if not model:
        raise _bad("--model: required, e.g. --model models:/demo-classifier@champion or an export directory")
    items = list(texts or [])
    if file is not None:
        items += _read_texts(file)
    if not items:
        raise _bad("no input: pass texts as arguments or --file")
    if Path(model).is_dir():
        from orchestrator.pyfunc_model import predictions_frame
        from trainables.predictor import CheckpointError, TextClassifier

        try:
            clf = TextClassifier(model)
        except CheckpointError as exc:
            raise _bad(f"--model: {exc}") from None
        frame = predictions_frame(clf.predict(items), clf.label_names)
    else:
        import mlflow

        from orchestrator.store import prepare_store

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or _tracking_uri(workdir, None)
        prepare_store(uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                loaded = mlflow.pyfunc.load_model(model)
        except Exception as exc:
            raise _bad(f"--model {model}: cannot load ({str(exc).splitlines()[0][:200]})") from None
        with contextlib.redirect_stdout(sys.stderr):
            frame = loaded.predict(pd.DataFrame({"text": items}))
    if as_json:
        for text, row in zip(items, frame.to_dict(orient="records"), strict=True):
            print(json.dumps({"text": text, **row}))
        return
    table = Table()
    for col in ["text", *frame.columns]:
        table.add_column(col)
    for text, row in zip(items, frame.itertuples(index=False), strict=True):
        table.add_row(text, *[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    out.print(table)


def _read_texts(path: Path) -> list[str]:
    from trainables.data import DataError, load_table

    try:
        df = load_table(str(path), "--file")
    except DataError as exc:
        raise _bad(str(exc)) from None
    column = "text" if "text" in df.columns else df.columns[0]
    return [str(t) for t in df[column].tolist()]


def _open_when_up(base: str, link: str) -> None:
    """A detached helper that opens ``link`` in a browser once ``base`` answers (the UI replaces us)."""
    import subprocess

    code = (
        "import sys, time, urllib.request, webbrowser\n"
        "for _ in range(120):\n"
        "    try:\n"
        "        urllib.request.urlopen(sys.argv[1], timeout=2); break\n"
        "    except Exception:\n"
        "        time.sleep(0.5)\n"
        "webbrowser.open(sys.argv[2])\n"
    )
    subprocess.Popen([sys.executable, "-c", code, base, link], start_new_session=True)  # noqa: S603


@app.command("ls")
def list_(
    workdir: Workdir = DEFAULT_WORKDIR,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow tracking URI.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sweep, one per line.")] = False,
) -> None:
    """List the sweeps of a work directory or tracking server: status, trials, best value, when."""
    from orchestrator.listing import list_sweeps
    from orchestrator.locations import redacted as redact
    from orchestrator.store import tracking_client

    uri = _tracking_uri(workdir, tracking_uri)
    with contextlib.redirect_stdout(sys.stderr):
        rows = list_sweeps(tracking_client(uri))
    if as_json:
        for row in rows:
            print(json.dumps(row.to_json()))
        return
    if not rows:
        out.print(f"no sweeps in {redact(uri)}; start one with: orchestrator run SWEEP.yaml")
        return
    table = Table(title=f"sweeps in {redact(uri)}")
    for col in ["sweep", "status", "trials", "best", "started", "took"]:
        table.add_column(col)
    for row in rows:
        planned = "?" if row.trials_planned is None else str(row.trials_planned)
        running = f" ({row.trials_running} running)" if row.trials_running else ""
        best = "-" if row.best is None else f"{row.metric}={row.best:.4f}"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.started_ms / 1000))
        took = "-" if row.duration_s is None else _duration(row.duration_s)
        table.add_row(
            row.sweep, row.status.lower(), f"{row.trials_ended}/{planned}{running}", best, started, took
        )
    out.print(table)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else (f"{minutes} min {secs} s" if minutes else f"{secs} s")


@app.command()
def ui(
    workdir: Workdir = DEFAULT_WORKDIR,
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Bind address; keep 127.0.0.1 unless you mean to expose it.")
    ] = "127.0.0.1",
    open_: Annotated[
        bool,
        typer.Option("--open", help="Open the (most recent) sweep's runs in a browser once the UI is up."),
    ] = False,
) -> None:
    """Open the MLflow UI over the work directory's tracking store (http://127.0.0.1:5000).

    Prints one link per sweep that lands on its trial runs, sorted by the metric, with the
    searched knobs as columns.
    """
    from orchestrator.browse import artifact_url, runs_url
    from orchestrator.listing import list_sweeps
    from orchestrator.store import tracking_client

    uri = _tracking_uri(workdir, None)
    client = tracking_client(uri)  # created once: the server would otherwise migrate a store a sweep creates
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    artifacts = (workdir.resolve() / "mlartifacts").as_uri()
    base = f"http://{host}:{port}"
    out.print(f"MLflow UI on {base}  (store {uri}); Ctrl-C to stop")
    links, charts = {}, {}
    for row in list_sweeps(client):
        links.setdefault(row.sweep, runs_url(base, row.experiment_id))
        charts.setdefault(row.sweep, artifact_url(base, row.experiment_id, row.run_id, "report.html"))
    for name, link in links.items():
        out.print(f"  {name}: {link}")
        out.print(f"  {' ' * len(name)}  report and charts: {charts[name]}")
    if open_ and links:
        _open_when_up(base, next(iter(links.values())))
    os.execv(
        exe,
        [
            exe,
            "ui",
            "--backend-store-uri",
            uri,
            "--default-artifact-root",
            artifacts,
            "--host",
            host,
            "--port",
            str(port),
        ],
    )


def _quiet_libraries() -> None:
    """Progress bars and info logs of the libraries drown our output; errors still show."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    _quiet_libraries()
    try:
        app()
    except UserError as exc:  # every user mistake lands here once: exit 2, one line each
        _bad(exc.lines)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; re-run the same command to resume")
        sys.exit(130)
    finally:
        # The interpreter's last garbage collection walks every object the ML stack made (1-1.5 s
        # after a sweep) only to free memory the process returns anyway; files are flushed and
        # closed and runs ended by then, by their owners and atexit, which still run.
        gc.freeze()


if __name__ == "__main__":
    main()
