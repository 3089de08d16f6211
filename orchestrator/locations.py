"""Where a sweep writes and what it connects to: checked before anything starts.

* ``tracking.uri`` must be an MLflow store URI this project can use (sqlite, http(s), a database
  URL, databricks, file);
* no credentials inside any URI (``tracking.uri``, ``storage``, ``data.*``): they would be printed,
  logged as MLflow params/tags and written to job files. MLflow and the object stores read them
  from the environment instead (see :data:`CREDENTIAL_HINTS`);
* a local ``storage`` or work directory must be a directory we can create and write (checked
  where the sweep runs, by ``check_writable``: a sweep submitted to a cluster names the head's paths).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from search_spaces.errors import cap

__all__ = [
    "CREDENTIAL_HINTS",
    "check_local_dir",
    "check_tracking_uri",
    "redacted",
    "check_writable",
    "credential_problem",
]

TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")
SECRET_QUERY = re.compile(r"pass|secret|token|key|signature|credential|auth", re.IGNORECASE)
CREDENTIAL_HINTS = {
    "http": "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "https": "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
    "postgresql": "PGPASSWORD or ~/.pgpass",
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role / AWS profile)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or workload identity)",
    "abfs": "AZURE_STORAGE_ACCOUNT_KEY (or a managed identity)",
}


def redacted(uri: str) -> str:
    """``uri`` to print: user and password replaced by ``***``, the query dropped where it has any."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if not (parts.username or parts.password or parts.query):
        return uri
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{'***@' if parts.username or parts.password else ''}{host}{port}{parts.path}"


def credential_problem(field: str, uri: str) -> str | None:
    """One line when ``uri`` carries a password, key or token (in the user part or the query)."""
    if "://" not in uri:
        return None
    parts = urlsplit(uri)
    secret_query = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if SECRET_QUERY.search(k)]
    if not parts.password and not secret_query:
        return None
    scheme = parts.scheme.split("+")[0].lower()
    hint = CREDENTIAL_HINTS.get(scheme, "the environment variables its client library reads")
    return (
        f"{field}: {redacted(uri)} carries a credential; remove it from the URI (it would be printed and "
        f"logged) and provide it through {hint}"
    )


def check_tracking_uri(uri: str) -> list[str]:
    problems = []
    scheme = uri.split(":", 1)[0].split("+")[0].lower() if ":" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        problems.append(
            f"tracking.uri: '{cap(uri)}' is not an MLflow store; use http(s)://host:port, "
            "sqlite:///path/mlflow.db, a database URL or null (the work directory's mlflow.db)"
        )
    elif scheme in ("http", "https") and not urlsplit(uri).hostname:
        problems.append(f"tracking.uri: '{cap(uri)}' names no host; use e.g. http://127.0.0.1:5000")
    problem = credential_problem("tracking.uri", uri)
    return problems + ([problem] if problem else [])


def check_local_dir(field: str, path: Path) -> str | None:
    """One line when ``path`` cannot be a writable directory (a file in the way, no permission)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{field}: {probe} is a file, not a directory; choose another location"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{field}: {probe} is not writable by this user; choose another location"
    return None


def check_writable(workdir: Path, storage: str) -> list[str]:
    """Problems with the work directory and a local storage root on this machine (none for URIs)."""
    places = [("--workdir", workdir)] + ([] if "://" in storage else [("storage", Path(storage))])
    return [p for p in (check_local_dir(field, path) for field, path in places) if p]
