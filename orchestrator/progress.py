"""Live, human-readable progress of a sweep: one line per trial event (driver side)."""

from __future__ import annotations

from typing import Any

from ray import tune
from rich.console import Console

from orchestrator.console import styled
from search_spaces import objectives as M

__all__ = ["ProgressCallback", "describe_config"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def describe_config(config: dict[str, Any], keys: list[str]) -> str:
    return " ".join(f"{k}={_fmt(config[k])}" for k in keys if k in config)


class ProgressCallback(tune.Callback):
    def __init__(self, console: Console, *, metric: str, searched: list[str], num_trials: int):
        self.console = console
        self.metric = metric
        self.searched = searched
        self.num_trials = num_trials
        self.done = 0

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k != "console"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.console = Console(markup=False)

    def _say(self, trial, text: str, failed: bool = False) -> None:
        parts: list = [(trial.trial_id, "bold"), " "]
        if failed:
            parts.append(("failed", "red"))
        self.console.print(styled(*parts, text))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._say(trial, f"started   {describe_config(trial.config, self.searched)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epochs = trial.config.get("epochs", "?")
        self._say(
            trial,
            f"epoch {result.get(M.EPOCH)}/{epochs}  "
            f"{self.metric}={_fmt(result.get(self.metric))}  "
            f"eval_loss={_fmt(result.get(M.EVAL_LOSS))}  "
            f"{_fmt(result.get(M.SAMPLES_PER_SECOND))} samples/s",
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        last = (trial.last_result or {}).get(M.EPOCH, 0)
        how = "stopped early (ASHA)" if last < trial.config.get("epochs", last) else "finished"
        self._say(trial, f"{how} at epoch {last}   [{self.done}/{self.num_trials} done]")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        error = str(trial.get_error() or "").strip().splitlines()
        self._say(
            trial,
            f": {error[-1] if error else 'unknown error'}   [{self.done}/{self.num_trials} done]",
            failed=True,
        )
