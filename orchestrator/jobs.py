"""Submit a sweep to a Ray cluster as a Ray Job, and follow, list or stop jobs.

The sweep is validated locally first (nothing is submitted on bad input). The job's
``working_dir`` carries the sweep file (overrides applied, data paths rewritten) and its local
data files; the project's own packages travel as ``py_modules`` unless the cluster already
has them installed (``ship_code=False``). The job runs ``orchestrator run`` on the head, which
connects to the cluster through ``RAY_ADDRESS``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from orchestrator.resolve import ResolvedSweep
from search_spaces.errors import UserError

__all__ = ["JobsError", "client", "package_sweep", "submit"]

PACKAGES = [Path(__file__).resolve().parents[1] / p for p in ("orchestrator", "trainables", "search_spaces")]
TOKEN_FILE = Path.home() / ".ray" / "auth_token"
DEFAULT_REMOTE_WORKDIR = "$HOME/orchestrator-work"


class JobsError(UserError):
    """Cannot reach or authenticate with the cluster, or unknown job; the message says the fix."""


def _token_source() -> str | None:
    """Where the Ray client will read its token from (the first that is set), or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return str(TOKEN_FILE) if TOKEN_FILE.exists() else None


def _auth_mode(address: str) -> str | None:
    """The cluster's authentication mode from its public endpoint; None when it cannot say."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/authentication_mode", timeout=10) as r:
            return str(json.loads(r.read())["authentication_mode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _use_token_if_required(address: str) -> None:
    """Token mode exactly when the cluster asks for it (before Ray is imported: it reads the mode once)."""
    mode = _auth_mode(address)
    if mode == "token" and not os.environ.get("RAY_AUTH_MODE"):
        if _token_source() is None:
            raise JobsError(
                f"--address {address}: the cluster requires a token and none is set here; "
                "export RAY_AUTH_TOKEN=<the output of `ray get-auth-token` on the head> (or RAY_AUTH_TOKEN_PATH)"
            )
        os.environ["RAY_AUTH_MODE"] = "token"
    elif mode == "disabled":
        import sys

        print(
            f"warning: the Ray cluster at {address} has token authentication off: anyone who reaches "
            "its ports can run code on it (see cluster.yaml for a cluster with a token)",
            file=sys.stderr,
        )


def client(address: str | None):
    """A Jobs API client whose token the cluster has accepted (its constructor makes one authenticated call)."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise JobsError("--address: required (e.g. http://127.0.0.1:8265 after `ray dashboard cluster.yaml`)")
    _use_token_if_required(address)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)  # GET /api/version: authenticated
    except AuthenticationError:
        source = _token_source()
        raise JobsError(
            f"--address {address}: the cluster refused the token from {source}; "
            "set RAY_AUTH_TOKEN to the output of `ray get-auth-token` on the head"
            if source
            else f"--address {address}: the cluster requires a token; "
            "export RAY_AUTH_TOKEN=<the output of `ray get-auth-token` on the head>"
        ) from None
    except Exception as exc:
        text = str(exc)
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        raise JobsError(
            f"--address {address}: cannot reach the Ray dashboard ({first}); "
            "port-forward it with `ray dashboard cluster.yaml`"
        ) from None


def package_sweep(r: ResolvedSweep, into: Path) -> Path:
    """Write ``sweep.yaml`` + ``data/`` into ``into``; data paths become relative to the job's working_dir."""
    spec = r.spec.model_dump(mode="json", exclude_unset=True)  # what the user wrote (+ --set), no defaults
    data_dir = into / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for field, path in r.data_files.items():
        if path.startswith("hf:") or "://" in path:
            continue  # fetched by the job itself
        target = data_dir / f"{field}{Path(path).suffix}"
        shutil.copy2(path, target)
        spec["data"][field] = f"data/{target.name}"
    sweep = into / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec, sort_keys=False))
    return sweep


def submit(
    r: ResolvedSweep,
    *,
    address: str | None,
    remote_workdir: str = DEFAULT_REMOTE_WORKDIR,
    ship_code: bool = True,
    submission_id: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> tuple[Any, str]:
    """Submit ``r`` as a Ray Job; returns (client, job id)."""
    jobs = client(address)
    staging = Path(tempfile.mkdtemp(prefix="orchestrator-job-"))
    try:
        package_sweep(r, staging)
        runtime_env: dict[str, Any] = {
            "working_dir": str(staging),
            "env_vars": {"RAY_TRAIN_V2_ENABLED": "1", "TOKENIZERS_PARALLELISM": "false", **(env_vars or {})},
        }
        if ship_code:
            runtime_env["py_modules"] = [str(p) for p in PACKAGES]
        job_id = jobs.submit_job(
            entrypoint=f'python -m orchestrator.cli run sweep.yaml --workdir "{remote_workdir}/{r.spec.name}"',
            runtime_env=runtime_env,
            submission_id=submission_id,
            metadata={"sweep": r.spec.name, "tool": "orchestrator"},
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # uploaded by submit_job
    return jobs, job_id
