"""Progress of a running sweep, on the driver: a live panel on a terminal, plain lines elsewhere.

Tune calls :class:`ProgressCallback` in the driver process for every trial event; the callback
holds only counters (Tune pickles it with the experiment and brings it back on a resume) and
forwards each event to the :class:`SweepProgress` of this process, set by the runner with
:func:`showing`. That object keeps the sweep's state and decides how it is shown:

* on a terminal, a Rich live panel: trials done / running / pending, elapsed, ETA, the best
  value so far, one row per running trial (its epoch and latest metric); each finished,
  stopped or failed trial leaves one line in the scroll-back;
* anywhere else (CI, a file, a pipe), plain lines: one per trial start, epoch and end.

The ETA is the remaining epochs (of running and pending trials, at their full budget: ASHA
may stop some sooner, so it is an upper estimate) over the epochs per second this process has
seen so far.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.console import styled
from orchestrator.plan import trial_key
from orchestrator.tracking import error_summary
from search_spaces import objectives as M

__all__ = ["ProgressCallback", "SweepProgress", "describe_config", "showing"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def describe_config(config: dict[str, Any], keys: list[str]) -> str:
    return " ".join(f"{k}={_fmt(config[k])}" for k in keys if k in config)


def clock(seconds: float) -> str:
    """``1:05:09`` / ``4:09``: elapsed and remaining time."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Running:
    config: dict[str, Any]
    epoch: int = 0
    value: float | None = None


@dataclass
class SweepProgress:
    """The sweep's progress as this driver process sees it, and how it is shown."""

    console: Console
    metric: str
    mode: str  # "max" | "min"
    searched: list[str]
    total: int  # trials planned
    epochs: int  # a trial's epochs when the space does not search them
    done: int = 0  # trials ended (before a resume, too)
    best: tuple[float, str] | None = None  # (value, trial id)
    running: dict[str, _Running] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    epochs_seen: int = 0  # epochs reported since this process started
    live: Live | None = None

    # -- state --------------------------------------------------------------------------------
    def better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best[0] if self.mode == "max" else value < self.best[0]

    def _trial_epochs(self, config: dict[str, Any]) -> int:
        return int(config.get("epochs", self.epochs))

    def eta_seconds(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if not self.epochs_seen or elapsed <= 0:
            return None
        pending = max(self.total - self.done - len(self.running), 0)
        running = list(self.running.values())  # the live panel's refresh thread reads this too
        left = sum(max(self._trial_epochs(r.config) - r.epoch, 0) for r in running)
        left += pending * self.epochs
        return left / (self.epochs_seen / elapsed)

    def summary(self) -> str:
        """``3/8 done, 2 running, 3 pending | elapsed 2:31, ETA ~4:10 | best eval_accuracy=0.8450 (t1)``."""
        running = len(self.running)
        pending = max(self.total - self.done - running, 0)
        eta = self.eta_seconds()
        parts = [
            f"{self.done}/{self.total} done, {running} running, {pending} pending",
            f"elapsed {clock(time.monotonic() - self.started)}"
            + (f", ETA ~{clock(eta)}" if eta is not None and self.done < self.total else ""),
        ]
        if self.best is not None:
            parts.append(f"best {self.metric}={self.best[0]:.4f} ({self.best[1]})")
        return " | ".join(parts)

    # -- events (from ProgressCallback) -------------------------------------------------------
    def trial_started(self, trial_id: str, config: dict[str, Any]) -> None:
        self.running[trial_id] = _Running(config)
        if self.live is None:
            self._line(trial_id, f"started   {describe_config(config, self.searched)}")

    def trial_result(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> None:
        state = self.running.setdefault(trial_id, _Running(config))
        state.epoch = int(result.get(M.EPOCH) or state.epoch)
        value = result.get(self.metric)
        self.epochs_seen += 1
        if isinstance(value, (int, float)):
            state.value = float(value)
            if self.better(float(value)):
                self.best = (float(value), trial_id)
        if self.live is None:
            self._line(
                trial_id,
                f"epoch {result.get(M.EPOCH)}/{self._trial_epochs(config)}  "
                f"{self.metric}={_fmt(value)}  eval_loss={_fmt(result.get(M.EVAL_LOSS))}  "
                f"{_fmt(result.get(M.SAMPLES_PER_SECOND))} samples/s",
            )

    def trial_ended(self, trial_id: str, config: dict[str, Any], how: str, *, failed: bool = False) -> None:
        state = self.running.pop(trial_id, None)
        self.done += 1
        value = f"  {self.metric}={state.value:.4f}" if state and state.value is not None else ""
        if self.live is not None:  # the panel shows the rest; this line stays in the scroll-back
            described = describe_config(config, self.searched)
            self._line(trial_id, f"{how}{value}  {described}   [{self.done}/{self.total}]", failed=failed)
        else:
            self._line(trial_id, f"{how}{value}   [{self.summary()}]", failed=failed)

    # -- output -------------------------------------------------------------------------------
    def _line(self, trial_id: str, text: str, failed: bool = False) -> None:
        parts: list = [(trial_id, "bold"), " "]
        if failed:
            parts.append(("failed", "red"))
        self.console.print(styled(*parts, text))

    def render(self) -> Group:
        """The live panel: the summary line and one row per running trial."""
        table = Table(box=None, pad_edge=False, show_header=bool(self.running))
        for col in ("trial", "epoch", self.metric, "config"):
            table.add_column(col)
        for trial_id, r in sorted(list(self.running.items())):
            table.add_row(
                trial_id,
                f"{r.epoch}/{self._trial_epochs(r.config)}",
                "-" if r.value is None else f"{r.value:.4f}",
                describe_config(r.config, self.searched),
            )
        return Group(Text(self.summary(), style="bold"), table)


_ACTIVE: list[SweepProgress] = []


def _active() -> SweepProgress | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def showing(progress: SweepProgress) -> Iterator[SweepProgress]:
    """Make ``progress`` receive this process's trial events; a live panel while on a terminal."""
    _ACTIVE.append(progress)
    try:
        if progress.console.is_terminal:
            with Live(
                get_renderable=progress.render,
                console=progress.console,
                refresh_per_second=1,
                transient=True,
                # stdout and stderr are the sweep's log file (third_party_to): keep them there
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live:
                progress.live = live
                yield progress
        else:
            yield progress
    finally:
        progress.live = None
        _ACTIVE.remove(progress)


class ProgressCallback(tune.Callback):
    """Forwards Tune's trial events (driver process) to the active :class:`SweepProgress`.

    Holds nothing but plain values, so it survives Tune's pickling of the experiment; events
    arriving while no progress is shown (never, in practice) are dropped.
    """

    def on_trial_start(self, iteration, trials, trial, **info):
        if (p := _active()) is not None:
            p.trial_started(trial_key(trial), trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if (p := _active()) is not None:
            p.trial_result(trial_key(trial), trial.config, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (p := _active()) is not None:
            last = (trial.last_result or {}).get(M.EPOCH, 0)
            early = last < trial.config.get("epochs", last)
            how = "stopped early (ASHA)" if early else "finished"
            p.trial_ended(trial_key(trial), trial.config, f"{how} at epoch {last}")

    def on_trial_error(self, iteration, trials, trial, **info):
        if (p := _active()) is not None:
            _, line = error_summary(trial.get_error() or "")
            p.trial_ended(trial_key(trial), trial.config, f": {line}", failed=True)
