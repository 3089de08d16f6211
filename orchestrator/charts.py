"""Pictures of the search on the parent run, rebuilt from what MLflow recorded.

An Optuna study is rebuilt from the trial runs (each trial's searched params, typed by the
sweep's domains, and its best-epoch value: what the leaderboard ranks), so the charts come from
recorded, non-executable state and are the same whether the sweep finished, was interrupted or
was resumed. Optuna's own visualisations draw it:

* optimization history, hyper-parameter importance (fANOVA), parallel coordinates, and the
  metric against each searched knob (slice plots);
* as one interactive HTML page (``charts/search.html``, plotly, self-contained) and one PNG
  each (``charts/*.png``, Optuna's matplotlib backend).

A chart that cannot be drawn (importance needs two finished trials that differ; nothing at
all for a fixed-config sweep) is left out, and :func:`log_search_charts` says which.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from orchestrator.selection import Candidate, best_per_trial
from search_spaces.domains import Choice, IntRange, LogUniform, Uniform

__all__ = [
    "CHARTS",
    "figures",
    "log_search_charts",
    "plotly_parts",
    "search_charts",
    "study_from_board",
    "write_charts",
]

CHARTS = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


def _distribution(domains: list[Any]) -> Any:
    """One Optuna distribution covering every alternative domain of a knob."""
    import optuna.distributions as D

    first = domains[0]
    if isinstance(first, Choice):
        values = list(dict.fromkeys(v for d in domains for v in d.values))
        return D.CategoricalDistribution(values)
    low = min(d.low for d in domains)
    if isinstance(first, IntRange):
        return D.IntDistribution(int(low), max(int(d.high) for d in domains))
    return D.FloatDistribution(low, max(d.high for d in domains), log=isinstance(first, LogUniform))


def _value(raw: str, distribution: Any) -> Any:
    import optuna.distributions as D

    if isinstance(distribution, D.CategoricalDistribution):
        return next(c for c in distribution.choices if str(c) == raw)
    if isinstance(distribution, D.IntDistribution):
        return int(float(raw))
    return float(raw)


def study_from_board(board: list[Candidate], space: dict[str, list[Any]], metric: str, mode: str) -> Any:
    """An Optuna study with one finished trial per recorded trial that reported ``metric``."""
    import optuna

    assert all(isinstance(d[0], (Choice, IntRange, LogUniform, Uniform)) for d in space.values())
    distributions = {k: _distribution(d) for k, d in space.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for c in best_per_trial(board):
        if metric not in c.metrics:
            continue
        params, dists = {}, {}
        for key, dist in distributions.items():
            if key in c.params:  # conditional knobs exist only where their condition held
                try:
                    params[key], dists[key] = _value(c.params[key], dist), dist
                except (StopIteration, ValueError):
                    continue
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=c.metrics[metric])
        )
    return study


def figures(study: Any, *, pngs: bool = True) -> dict[str, tuple[Any, Any]]:
    """chart name -> (plotly figure, matplotlib figure or None) for what this study can draw."""
    if not study.trials or not any(t.params for t in study.trials):
        return {}
    import optuna.visualization as pv

    if pngs:
        import matplotlib

        matplotlib.use("Agg")
        import optuna.visualization.matplotlib as mv
    out = {}
    for name in CHARTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib backend is "experimental"
                fig = getattr(pv, f"plot_{name}")(study)
                ax = getattr(mv, f"plot_{name}")(study) if pngs else None
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # e.g. importance with one trial, or no parameter that varies
        axes = None if ax is None else (ax.flatten()[0] if hasattr(ax, "flatten") else ax)
        out[name] = (fig, None if axes is None else axes.figure)
    return out


def plotly_parts(figs: list[Any]) -> list[str]:
    """HTML fragments of plotly figures; plotly.js inlined once, in the first (self-contained)."""
    return [
        fig.to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False)
        for i, fig in enumerate(figs)
    ]


def write_charts(figs: dict[str, tuple[Any, Any]], out_dir: Path, title: str) -> list[str]:
    """Write ``search.html`` and one PNG per chart into ``out_dir``; the names of the charts written."""
    import matplotlib.pyplot as plt

    if not figs:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (_, mfig) in figs.items():
        if mfig is None:
            continue
        panels = len([a for a in mfig.axes if a.get_label() != "<colorbar>"])
        mfig.set_size_inches(max(9.0, 3.2 * panels + 2.0) if name == "slice" else 9.0, 5.5)
        mfig.savefig(out_dir / f"{name}.png", dpi=100, bbox_inches="tight")
        plt.close(mfig)
    body = "\n".join([f"<h1>{_escape(title)}</h1>", *plotly_parts([f for f, _ in figs.values()])])
    head = f"<meta charset='utf-8'><title>{_escape(title)}</title>"
    (out_dir / "search.html").write_text(
        f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"
    )
    return list(figs)


def search_charts(study: Any, out_dir: Path, title: str) -> list[str]:
    """Write ``search.html`` and one PNG per chart into ``out_dir``; the names of the charts drawn."""
    return write_charts(figures(study), out_dir, title)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def log_search_charts(
    client: Any,
    run_id: str,
    board: list[Candidate],
    space: dict[str, list[Any]],
    metric: str,
    mode: str,
    sweep: str,
) -> dict[str, Any]:
    """Draw the charts of ``board``, log them under ``charts/`` on the parent run; name -> plotly figure."""
    if not space:
        return {}
    study = study_from_board(board, space, metric, mode)
    figs = figures(study)
    with tempfile.TemporaryDirectory(prefix="charts-") as tmp:
        if write_charts(figs, Path(tmp), f"{sweep}: {metric} ({mode}) over {len(study.trials)} trials"):
            client.log_artifacts(run_id, tmp, "charts")
    return {name: fig for name, (fig, _) in figs.items()}
