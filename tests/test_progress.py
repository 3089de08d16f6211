"""The run console: plain lines off a terminal, a live panel on one, library output in a log file."""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import time

from rich.console import Console

from orchestrator.progress import ProgressCallback, SweepProgress, clock, showing


def _progress(terminal: bool, **kw) -> tuple[SweepProgress, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, markup=False, width=200, force_terminal=terminal, color_system=None)
    args = {"metric": "eval_loss", "mode": "min", "searched": ["learning_rate"], "total": 3, "epochs": 2}
    return SweepProgress(console, **{**args, **kw}), buf


class _Trial:
    def __init__(self, trial_id: str, epochs: int = 2):
        self.trial_id, self.config, self.last_result = (
            trial_id,
            {"learning_rate": 0.001, "epochs": epochs},
            {},
        )

    def get_error(self):
        return RuntimeError("boom\nValueError: bad batch")


def _events(cb: ProgressCallback) -> None:
    a, b, c = _Trial("a"), _Trial("b"), _Trial("c")
    cb.on_trial_start(0, [], a)
    cb.on_trial_result(0, [], a, {"epoch": 1, "eval_loss": 0.9})
    cb.on_trial_result(0, [], a, {"epoch": 2, "eval_loss": 0.5})
    a.last_result = {"epoch": 2}
    cb.on_trial_complete(0, [], a)
    cb.on_trial_start(0, [], b)
    cb.on_trial_result(0, [], b, {"epoch": 1, "eval_loss": 0.7})
    b.last_result = {"epoch": 1}
    cb.on_trial_complete(0, [], b)  # 1 of 2 epochs: ASHA stopped it
    cb.on_trial_start(0, [], c)
    cb.on_trial_error(0, [], c)


def test_plain_lines_say_every_event_with_the_overall_state():
    progress, buf = _progress(terminal=False)
    with showing(progress):
        _events(copy.deepcopy(ProgressCallback()))  # the state protocol Tune's pickling uses
    text = buf.getvalue()
    assert "a started   learning_rate=0.001" in text
    assert "a epoch 2/2  eval_loss=0.5" in text
    assert "a finished at epoch 2  eval_loss=0.5000   [1/3 done, 0 running, 2 pending | elapsed" in text
    assert "b stopped early (ASHA) at epoch 1" in text
    assert "c failed: ValueError: bad batch   [3/3 done, 0 running, 0 pending" in text
    assert "best eval_loss=0.5000 (a)" in text  # mode min: the lowest so far
    assert progress.done == 3 and not progress.running


def test_live_panel_keeps_only_ended_trials_in_the_scroll_back():
    progress, buf = _progress(terminal=True)
    with showing(progress) as shown:
        assert shown.live is not None
        cb = ProgressCallback()
        cb.on_trial_start(0, [], _Trial("a"))
        cb.on_trial_result(0, [], _Trial("a"), {"epoch": 1, "eval_loss": 0.8})
        panel = Console(file=io.StringIO(), width=200)
        panel.print(progress.render())
        shown_text = panel.file.getvalue()
        assert (
            "0/3 done, 1 running, 2 pending" in shown_text and "1/2" in shown_text and "0.8000" in shown_text
        )
        done = _Trial("a")
        done.last_result = {"epoch": 2}
        cb.on_trial_complete(0, [], done)
    text = buf.getvalue()
    assert "a finished at epoch 2  eval_loss=0.8000  learning_rate=0.001   [1/3]" in text
    assert "started" not in text and "epoch 1/2" not in text  # the panel showed those


def test_eta_is_the_remaining_epochs_at_the_rate_seen():
    progress, _ = _progress(terminal=False, total=3, epochs=2)
    assert progress.eta_seconds() is None  # no epoch seen yet
    progress.trial_started("a", {"epochs": 2})
    progress.trial_result("a", {"epochs": 2}, {"epoch": 1, "eval_loss": 1.0})
    progress.trial_result("a", {"epochs": 2}, {"epoch": 2, "eval_loss": 1.0})
    progress.trial_ended("a", {"epochs": 2}, "finished")
    progress.trial_started("b", {"epochs": 2})
    progress.trial_result("b", {"epochs": 2}, {"epoch": 1, "eval_loss": 1.0})
    progress.started = time.monotonic() - 60  # 3 epochs in 60 s; 3 left (b: 1, the pending one: 2)
    assert abs(progress.eta_seconds() - 60) < 2
    assert clock(3725) == "1:02:05" and clock(65) == "1:05"


def test_events_with_no_progress_shown_are_dropped():
    _events(ProgressCallback())  # nothing active in this process: no error, nothing printed


CAPTURE = r"""
import logging, os, subprocess, sys, warnings
from pathlib import Path
from orchestrator.console import third_party_to
with third_party_to(Path(sys.argv[1]), "test") as console:
    console.print("ours: progress")
    print("a library's print")
    os.write(2, b"C++ core log line\n")
    logging.getLogger("ray").warning("a ray warning")
    warnings.warn("a python warning")
    subprocess.run(["sh", "-c", "echo child process output"], check=True)
print("after: restored")
"""


def test_library_output_goes_to_the_log_file_and_ours_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "s.log"
    proc = subprocess.run(
        [sys.executable, "-c", CAPTURE, str(log)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ours: progress", "after: restored"]
    assert proc.stderr == ""
    written = log.read_text()
    for line in (
        "a library's print",
        "C++ core log line",
        "a ray warning",
        "a python warning",
        "child process output",
    ):
        assert line in written, line
    assert "=== " in written and "ours: progress" not in written
