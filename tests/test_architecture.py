"""Imports point one way: search_spaces <- trainables <- orchestrator; MLflow only in orchestrator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "search_spaces": {"trainables", "orchestrator", "torch", "ray", "transformers", "mlflow", "datasets"},
    "trainables": {"orchestrator", "mlflow", "ray.tune", "optuna"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    for path in (ROOT / package).rglob("*.py"):
        for name in _imports(path):
            for banned in FORBIDDEN[package]:
                assert not (name == banned or name.startswith(banned + ".")), f"{path.name} imports {name}"
