"""One self-contained HTML page about a sweep, to mail or attach to a ticket.

Built from what MLflow recorded (the parent run and its trial runs), never from a pickle:

* a header: sweep, status, trials, metric, model, when and for how long;
* the best trial's card (by the same selection as ``best`` and ``promote``): its value, the
  other metrics, every hyper-parameter, its config's mean over seeds, the checkpoint, a link;
* every trial's learning curve (the metric per epoch);
* the search's charts (Optuna's plotly figures, as on the parent run's ``charts/``);
* the leaderboard, each trial linked to its MLflow run.

plotly.js is inlined once, so the file opens offline. Every recorded value is HTML-escaped
before it is placed in the page; nothing user-written is used as a format string.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from orchestrator.charts import figures, plotly_parts, study_from_board
from orchestrator.selection import Candidate, best_per_trial, candidates, config_stats, find_sweep_run
from search_spaces import objectives as M

__all__ = ["DEFAULT_UI", "REPORT_ARTIFACT", "report_html", "sweep_space", "write_report"]

DEFAULT_UI = "http://127.0.0.1:5000"  # where `orchestrator ui` serves by default
REPORT_ARTIFACT = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#1f2328;padding:0 1rem}
h1{margin-bottom:.2rem}.sub{color:#59636e;margin-top:0}
.card{border:1px solid #d1d9e0;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0;background:#f6f8fa}
.card h2{margin-top:0}.big{font-size:1.8rem;font-weight:600}
table{border-collapse:collapse;font-size:.9rem;margin:.5rem 0}
th,td{border-bottom:1px solid #d1d9e0;padding:.3rem .6rem;text-align:left;white-space:nowrap}
th{background:#eef1f4}tr.best td{background:#dafbe1}code{font-size:.85rem}
.kv td:first-child{color:#59636e}a{color:#0969da}
.cols{display:flex;gap:3rem;flex-wrap:wrap}.cols h3{margin:.6rem 0 .2rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else _e(value)


def sweep_space(params: dict[str, str]) -> dict[str, list[Any]]:
    """The search space as the sweep logged it (``space.<knob>`` params: JSON of its domains)."""
    from pydantic import TypeAdapter

    from search_spaces.domains import Domain

    adapter = TypeAdapter(Domain)
    space: dict[str, list[Any]] = {}
    for key, raw in params.items():
        if key.startswith("space."):
            loaded = json.loads(raw)
            space[key.removeprefix("space.")] = [
                adapter.validate_python(d) for d in (loaded if isinstance(loaded, list) else [loaded])
            ]
    return space


def _run_link(ui: str, experiment_id: str, run_id: str, text: str) -> str:
    return f"<a href='{_e(ui)}/#/experiments/{_e(experiment_id)}/runs/{_e(run_id)}'>{_e(text)}</a>"


def _header(sweep_run: Any, board: list[Candidate], ui: str) -> str:
    from orchestrator.browse import runs_url

    p, info = sweep_run.data.params, sweep_run.info
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.start_time / 1000))
    took = f", took {(info.end_time - info.start_time) / 60000:.1f} min" if info.end_time else ""
    planned = p.get("planned_trials", p.get("num_trials", "?"))
    ended = sum(c.status != "RUNNING" for c in board)
    link = runs_url(ui, info.experiment_id)
    return (
        f"<h1>Sweep {_e(sweep_run.data.tags.get('orchestrator.sweep', info.run_name))}</h1>"
        f"<p class='sub'>{_e(info.status.lower())} &middot; {ended}/{_e(planned)} trials &middot; "
        f"metric {_e(p.get('metric', ''))} ({_e(p.get('mode', ''))}) &middot; model {_e(p.get('model', ''))}"
        f" &middot; started {_e(started)}{_e(took)} &middot; "
        f"majority-class rate {_e(sweep_run.data.tags.get('majority_rate', '-'))} &middot; "
        f"<a href='{_e(link)}'>trials in the MLflow UI</a></p>"
    )


def _param(value: Any) -> str:
    """A recorded param, floats shortened (``0.000354`` for ``0.00035384535909065536``)."""
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return _e(text)
    if number.is_integer():
        return _e(str(int(number)) if "e" not in text.lower() else text)
    return _e(text if len(text) <= 8 else f"{number:.4g}")


def _kv(rows: list[tuple[str, str]]) -> str:
    return (
        "<table class='kv'>" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows) + "</table>"
    )


def _best_card(best: Candidate, stats: dict, metric: str, ui: str, experiment_id: str) -> str:
    st = stats[best.config_id]
    first = [metric, M.EVAL_LOSS, M.EVAL_ACCURACY, M.EVAL_F1_MACRO, M.TRAIN_LOSS, M.TRAINABLE_PARAMS]
    keys = list(dict.fromkeys([k for k in first if k in best.metrics] + sorted(best.metrics)))
    metrics = [(k, _param(best.metrics[k]) if k != metric else _num(best.metrics[k])) for k in keys]
    if len(st.trials) > 1 and st.mean is not None:
        metrics.insert(0, (f"config mean over {st.n} seeds", f"{st.mean:.4f} ± {st.std:.4f}"))
    params = [(k, _param(v)) for k, v in sorted(best.params.items())]
    params.append(("checkpoint", f"<code>{_e(best.checkpoint or '-')}</code>"))
    value = best.metrics.get(metric)
    return (
        "<div class='card' id='best'><h2>Best trial: "
        f"{_run_link(ui, experiment_id, best.run_id, best.trial_id)} (epoch {_e(best.epoch)})</h2>"
        f"<div class='big'>{_e(metric)} = {_num(value) if value is not None else '-'}</div>"
        f"<div class='cols'><div><h3>Metrics (epoch {_e(best.epoch)})</h3>{_kv(metrics)}</div>"
        f"<div><h3>Hyper-parameters</h3>{_kv(params)}</div></div></div>"
    )


def _leaderboard(
    board: list[Candidate], stats: dict, metric: str, searched: list[str], ui: str, exp: str
) -> str:
    repeats = any(len(s.trials) > 1 for s in stats.values())
    cols = ["#", "trial", "epoch", metric, M.EVAL_LOSS, *(["config mean ± std (n)"] if repeats else [])]
    cols += [*searched, "outcome"]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for i, c in enumerate(board, 1):
        st = stats[c.config_id]
        mean = [f"{st.mean:.4f} ± {st.std:.4f} ({st.n})" if st.mean is not None else "-"] if repeats else []
        cells = [
            str(i),
            _run_link(ui, exp, c.run_id, c.trial_id),
            _e(c.epoch or "-"),
            _num(c.metrics.get(metric, "-")),
            _num(c.metrics.get(M.EVAL_LOSS, "-")),
            *[_e(m) for m in mean],
            *[_param(c.params.get(k, "")) for k in searched],
            _e(c.outcome or c.status.lower()),
        ]
        body.append(f"<tr{' class=best' if i == 1 else ''}>{''.join(f'<td>{x}</td>' for x in cells)}</tr>")
    return f"<h2>Leaderboard</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def _learning_curves(ranked: list[Candidate], metric: str) -> Any:
    import plotly.graph_objects as go

    curves: dict[str, list[tuple[int, float]]] = {}
    for c in ranked:
        if metric in c.metrics:
            curves.setdefault(c.trial_id, []).append((c.epoch, c.metrics[metric]))
    fig = go.Figure()
    for trial_id, points in sorted(curves.items()):
        points.sort()
        fig.add_scatter(
            x=[e for e, _ in points], y=[v for _, v in points], mode="lines+markers", name=trial_id
        )
    fig.update_layout(title=f"Learning curves: {metric} per epoch", xaxis_title="epoch", yaxis_title=metric)
    return fig


def report_html(
    sweep_run: Any, ranked: list[Candidate], space: dict[str, list[Any]], ui: str, charts: dict[str, Any]
) -> str:
    """The page for ``sweep_run`` from its ranked candidates and the search's plotly ``charts``."""
    metric = sweep_run.data.params.get("metric", M.EVAL_ACCURACY)
    board = best_per_trial(ranked)
    stats = config_stats(ranked, metric)
    exp = sweep_run.info.experiment_id
    searched = [*space, *(["seed"] if any(len(s.trials) > 1 for s in stats.values()) else [])]
    parts = [_header(sweep_run, board, ui)]
    best = next((c for c in ranked if c.checkpoint), board[0] if board else None)  # as `best` chooses
    if best is not None and metric in best.metrics:
        parts.append(_best_card(best, stats, metric, ui, exp))
    parts.append(_leaderboard(board, stats, metric, searched, ui, exp))
    plots = plotly_parts([_learning_curves(ranked, metric), *charts.values()])
    parts.append("<h2>Learning curves</h2>" + plots[0])
    if charts:
        parts.append("<h2>The search</h2>" + "".join(plots[1:]))
    name = _e(sweep_run.data.tags.get("orchestrator.sweep", sweep_run.info.run_name))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {name}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(
    client: Any,
    sweep: str,
    out: Path | None,
    *,
    ui: str = DEFAULT_UI,
    sweep_run: Any = None,
    ranked: list[Candidate] | None = None,
    charts: dict[str, Any] | None = None,
    log: bool = True,
) -> str:
    """Build the report of ``sweep``, write it to ``out`` (if given) and log it on the parent run.

    ``sweep_run``, ``ranked`` and ``charts`` may be handed in by a caller that has them (the
    runner, right after drawing the charts); otherwise they are read from MLflow and drawn.
    Returns the page.
    """
    sweep_run = sweep_run or find_sweep_run(client, sweep)
    ranked = candidates(client, sweep_run) if ranked is None else ranked
    space = sweep_space(sweep_run.data.params)
    if charts is None:
        metric = sweep_run.data.params.get("metric", M.EVAL_ACCURACY)
        mode = sweep_run.data.params.get("mode", "max")
        study = study_from_board(best_per_trial(ranked), space, metric, mode) if space else None
        charts = {k: f for k, (f, _) in figures(study, pngs=False).items()} if study else {}
    page = report_html(sweep_run, ranked, space, ui, charts)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    if log:
        client.log_text(sweep_run.info.run_id, page, REPORT_ARTIFACT)
    return page
