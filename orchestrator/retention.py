"""What a sweep keeps on disk: optimizer state only where a resume can still need it.

Which epoch checkpoints survive is Ray Train's job (``CheckpointConfig``: the best
``train.keep_checkpoints`` by the sweep's metric, plus the latest; see ``orchestrator.trial``).
Resume state (``resume.pt``: optimizer moments, schedule, RNG; up to twice the size of what is
trained) is needed only in the *latest* checkpoint of a trial that has not ended, so this
callback deletes it from every older checkpoint when a new epoch is reported, and from all of
them when the trial ends. An errored trial keeps its latest one: ``orchestrator run`` on the same
work directory resumes errored trials.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ray.tune import Callback

from orchestrator.plan import trial_key
from trainables.checkpoints import RESUME_FILE
from trainables.data import filesystem

__all__ = ["ResumeStateRetention", "disk_usage_line"]


class ResumeStateRetention(Callback):
    def __init__(self, train_root: str):
        self.train_root = train_root.rstrip("/")

    def _prune(self, trial_id: str, keep: str | None) -> None:
        import pyarrow.fs as pafs

        from orchestrator.trial import train_run_name

        fs, root = filesystem(f"{self.train_root}/{train_run_name(trial_id)}")
        try:
            entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
        except OSError:
            return
        keep_name = keep.rstrip("/").rsplit("/", 1)[-1] if keep else None  # epoch-NNN
        for entry in entries:
            if entry.type != pafs.FileType.Directory or entry.base_name == keep_name:
                continue
            with contextlib.suppress(OSError):  # Ray may be deleting that epoch (retention) too
                fs.delete_file(f"{entry.path}/{RESUME_FILE}")

    def on_trial_result(self, iteration, trials, trial, result: dict[str, Any], **info) -> None:
        latest = result.get("checkpoint_path")
        if latest:  # a repeated report after a resume carries no checkpoint: nothing new to keep
            self._prune(trial_key(trial), str(latest))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._prune(trial_key(trial), None)


def disk_usage_line(nbytes: int) -> str:
    """``123.4 MB`` (decimal units, as ``du --si`` and file managers show them)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} B"
