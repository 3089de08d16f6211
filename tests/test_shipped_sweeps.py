"""Every shipped sweep file loads and resolves (a stale recipe fails CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.resolve import resolve_sweep
from orchestrator.spec import load_spec

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))


def test_there_are_shipped_sweeps():
    assert {p.stem for p in SWEEPS} >= {"demo", "smoke"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweep_validates(path, tmp_path):
    r = resolve_sweep(load_spec(path), path, tmp_path)
    assert r.spec.name == path.stem
    assert {"learning_rate", "freeze_layers", "context_template"} <= set(r.space)
    assert r.data.majority_rate() < 0.6
