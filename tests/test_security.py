"""Security properties of a real sweep: secrets stay out of everything it writes and prints."""

from __future__ import annotations

from tests.conftest import PLANTED_SECRET


def test_no_planted_secret_in_any_output_artifact_tag_or_file(sweep):
    """The session sweep ran with credentials in its environment: grep every byte it left behind."""
    _, workdir, proc = sweep
    assert PLANTED_SECRET not in proc.stdout + proc.stderr
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files)  # params, tags and metrics are in here
    assert any("mlartifacts" in p.parts for p in files)  # and the artifacts here
    leaked = [str(p) for p in files if PLANTED_SECRET.encode() in p.read_bytes()]
    assert leaked == []
