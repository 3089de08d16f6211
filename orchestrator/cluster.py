"""Cluster resources as the sweep sees them: how many trials fit at once, where storage must live.

Tune counts only trial drivers, not the Train workers they start, so it cannot prevent
over-subscription by itself: ``auto_concurrency`` derives ``max_concurrent_trials`` from what
one trial's workers need. Checkpoints must be reachable from every node that may resume a
trial, so ``check_shared_storage`` refuses node-local storage on multi-machine clusters. The
embedded local Ray runs with token authentication and a token only this user can read
(``private_token``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from orchestrator.spec import ResourcesSpec, SpecError
from orchestrator.trial import DRIVER_RESOURCE, driver_resources

__all__ = [
    "LOCAL_DRIVER_SLOTS",
    "auto_concurrency",
    "check_shared_storage",
    "local_resources",
    "private_token",
]

LOCAL_DRIVER_SLOTS = 10_000.0  # trial_driver units on the embedded local Ray (effectively unlimited)


def auto_concurrency(cluster: dict[str, float], res: ResourcesSpec, num_trials: int) -> int:
    """How many trials can train at once without their Train runs waiting on each other.

    Counts the workers' CPUs/GPUs and, where drivers are not on ``DRIVER_RESOURCE``, the
    drivers' own CPU share too (Tune's accounting sees only the drivers).
    """
    driver_cpu = driver_resources(cluster).get("cpu", 0)
    per_trial_cpu = res.workers_per_trial * res.cpus_per_worker
    limit = math.floor(cluster.get("CPU", 0) / (per_trial_cpu + driver_cpu) + 1e-9)
    if res.gpus_per_worker:
        limit = min(
            limit, math.floor(cluster.get("GPU", 0) / (res.workers_per_trial * res.gpus_per_worker) + 1e-9)
        )
    if limit < 1:
        have = ", ".join(f"{k}={v:g}" for k, v in sorted(cluster.items()) if k in ("CPU", "GPU")) or "nothing"
        raise SpecError(
            f"resources: one trial needs {per_trial_cpu:g} CPU and "
            f"{res.workers_per_trial * res.gpus_per_worker:g} GPU but the cluster has {have}; "
            "lower resources.workers_per_trial / cpus_per_worker / gpus_per_worker"
        )
    return max(1, min(limit, num_trials))


SHARED_FILESYSTEMS = (
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "lustre",
    "ceph",
    "glusterfs",
    "fuse",
    "9p",
    "virtiofs",
    "gpfs",
    "beegfs",
)


def filesystem_type(path: str) -> str:
    """The fstype of the mount holding ``path`` (from /proc/mounts; "" where unknown)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return ""
    path = str(Path(path).resolve())
    best = max(
        (m for m in mounts if path == m[0] or path.startswith(m[0].rstrip("/") + "/")),
        key=lambda m: len(m[0]),
        default=None,
    )
    return best[1] if best else ""


def check_shared_storage(storage: str, node_hosts: set[str]) -> None:
    """Refuse node-local checkpoint storage when the cluster spans several machines."""
    if "://" in storage or len(node_hosts) <= 1:
        return
    fstype = filesystem_type(storage)
    if not fstype.startswith(SHARED_FILESYSTEMS):
        raise SpecError(
            f"storage: {storage} is local to this node ({fstype or 'unknown filesystem'}) but the cluster spans "
            f"{len(node_hosts)} machines; set storage to s3://..., gs://... or a shared (NFS/EFS) mount"
        )


def local_resources() -> dict[str, float]:
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:
        pass
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus), DRIVER_RESOURCE: LOCAL_DRIVER_SLOTS}


def private_token() -> Path | None:
    """Make sure the Ray token file this process will use exists and only its owner can read it.

    Ray writes ``~/.ray/auth_token`` with the default umask (world-readable); the token is what
    keeps other local users out of the embedded Ray, so it is created 0600 here, or tightened.
    Returns the file (None when the token comes from ``RAY_AUTH_TOKEN`` itself).
    """
    import secrets

    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another sweep made it a moment ago
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path
