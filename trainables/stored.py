"""Files a sweep writes once and every trial reads, named by a hash and written atomically.

What trials share instead of paying for it again: the frozen base weights (named by the sha256
of their bytes, so a reader can check what it got: :func:`fetch`), encoded splits and prefix
states (named by the sha256 of their inputs). Writing goes to a temporary name beside the target,
then one rename: a reader never sees half a file, and when two writers race, the second rename
replaces the same content. Works on local paths and pyarrow URIs (``s3://``, ``gs://``: an object
appears whole when its upload completes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.errors import UserError
from trainables.data import file_sha256, filesystem
from trainables.memo import cache_root

__all__ = [
    "StoredFileError",
    "StoredRef",
    "claim_lock",
    "exists",
    "fetch",
    "local_copy",
    "put_once",
    "tree_bytes",
    "write_lock",
]


class StoredFileError(UserError):
    """A stored file is missing or does not hold the content its name promises."""


@dataclass(frozen=True)
class StoredRef:
    """Where a file stored once per sweep is (``uri``), and the sha256 its content must have."""

    sha256: str
    uri: str

    def to_json(self) -> dict[str, str]:
        return {"sha256": self.sha256, "uri": self.uri}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StoredRef | None:
        return cls(str(data["sha256"]), str(data["uri"])) if data else None


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def put_once(local: str | Path, uri: str) -> bool:
    """Copy the local file to ``uri`` unless it is already there; True if this call wrote it."""
    if exists(uri):
        return False
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    with open(local, "rb") as src, fs.open_output_stream(tmp) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    fs.move(tmp, path)  # one rename on a local filesystem
    return True


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _download(uri: str, local: Path) -> None:
    """``uri``'s bytes into ``local``, whole or not at all (temporary name, then one rename)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    fs, path = filesystem(uri)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f"{local.name}.")
    try:
        with os.fdopen(fd, "wb") as dst, fs.open_input_stream(path) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, local)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(uri: str, sha256: str) -> Path:
    """A local path holding ``uri``'s bytes, checked against ``sha256`` (downloaded once per machine)."""
    if _is_local(uri):
        local = Path(uri.removeprefix("file://"))
        if not local.is_file():
            raise StoredFileError(f"{uri}: not found (sha256 {sha256[:12]})")
    else:
        local = cache_root() / "stored" / sha256
        if not local.is_file():
            if not exists(uri):
                raise StoredFileError(f"{uri}: not found (sha256 {sha256[:12]})")
            _download(uri, local)
    if file_sha256(local) != sha256:
        raise StoredFileError(f"{uri}: content does not match its sha256 {sha256[:12]}; it was changed")
    return local


COPY_UNUSED_S = 24 * 3600.0  # a machine's copy of a remote file unused this long is removed
COPIES_MAX_GB = 20.0  # a machine's copies together; ORCHESTRATOR_COPIES_MAX_GB overrides it


def copies_max_bytes() -> int:
    """How many bytes this machine's copies of remote files may take together (least recently used go first)."""
    return int(float(os.environ.get("ORCHESTRATOR_COPIES_MAX_GB", COPIES_MAX_GB)) * 1e9)


def local_copy(uri: str) -> Path:
    """A local file with ``uri``'s bytes, to memory-map: the file itself when local, else one copy per machine.

    Memory-mapped, a file costs each reader only the pages it touches, shared between the
    processes of a machine (DDP ranks reading their shards, concurrent trials). A remote object
    is downloaded once per machine, under a file lock, into ``copies/`` of this user's cache,
    named by its URI, size and modification time (a rewritten object is a new copy). When the
    next copy is made, copies unused for a day are removed, and the least recently used ones
    while all of them would exceed :func:`copies_max_bytes`.
    """
    if _is_local(uri):
        return Path(uri.removeprefix("file://"))
    return _machine_copy(uri)


def _machine_copy(uri: str) -> Path:
    import hashlib

    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise StoredFileError(f"{uri}: not found")
    stamp = f"{uri}\0{info.size}\0{info.mtime_ns}"
    local = cache_root() / "copies" / hashlib.sha256(stamp.encode()).hexdigest()
    local.parent.mkdir(parents=True, exist_ok=True)
    with write_lock(str(local)):
        if not local.is_file():
            _prune_copies(local.parent, incoming=info.size or 0)
            _download(uri, local)
        os.utime(local)  # in use: not pruned for another day
    return local


def _prune_copies(folder: Path, incoming: int = 0) -> None:
    """Make room for ``incoming`` bytes: remove copies unused for a day, then the least recently
    used while the copies would exceed :func:`copies_max_bytes`. A copy someone holds the lock of
    (being made) is left alone; one that is memory-mapped stays readable (Linux keeps the inode)."""
    cutoff = time.time() - COPY_UNUSED_S
    copies = []
    for path in folder.iterdir():
        with contextlib.suppress(OSError):  # another process pruned it meanwhile
            if path.suffix != ".lock":  # lock files are tiny; removing a held one would split the lock
                copies.append((path.stat().st_mtime, path.stat().st_size, path))
    total, budget = sum(size for _, size, _ in copies) + incoming, copies_max_bytes()
    for mtime, size, path in sorted(copies, key=lambda c: c[0]):  # least recently used first
        if mtime >= cutoff and total <= budget:
            continue
        if "." in path.name:  # a download in progress (or killed half-way): only when stale
            if mtime < cutoff:
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        if _remove_unlocked(path, mtime):
            total -= size


def _remove_unlocked(path: Path, mtime: float) -> bool:
    """Remove ``path`` unless its lock is held or it was used since ``mtime``; True when removed."""
    import fcntl

    with contextlib.suppress(OSError), open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises when held: in use
        if path.stat().st_mtime <= mtime:  # not used while we looked
            path.unlink()
            return True
    return False


def tree_bytes(uri: str) -> int:
    """Bytes of every file under the directory ``uri`` (0 when it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return 0
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


@contextlib.contextmanager
def write_lock(uri: str):
    """Hold an exclusive lock named after ``uri`` while deciding whether to write it.

    A second process asking for the same lock waits, then finds the file written. Local paths use
    ``flock``; object stores (``s3://``, ``gs://``) have no lock, so there it is
    :func:`claim_lock`, built from plain objects.
    """
    if "://" in uri and not uri.startswith("file://"):
        with claim_lock(uri):
            yield
        return
    import fcntl

    lock = Path(f"{uri.removeprefix('file://')}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


HEARTBEAT_S = 10.0  # a writer re-touches its claim this often
STALE_S = 60.0  # a claim unchanged this long (by the waiter's own clock) is a dead writer's


@contextlib.contextmanager
def claim_lock(uri: str, *, poll: float = 0.5, heartbeat: float = HEARTBEAT_S, stale_after: float = STALE_S):
    """An exclusive lock for ``uri`` on storage that has none, from claim objects beside it.

    Each process writes ``<uri>.claims/<time>-<random>`` and keeps re-writing it while it lives
    (``heartbeat``). The oldest live claim holds the lock; the others poll until ``uri`` exists or
    theirs is the oldest. A claim whose modification time has not moved for ``stale_after``
    seconds of the waiter's own clock belongs to a dead process and is removed, so a crash costs
    one minute, not a sweep. Clocks that disagree across nodes can make two processes both
    think they are the oldest: both then compute and the second rename replaces the same
    content (:func:`put_once`), so the lock saves work and never guards correctness.
    """
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    claims = f"{path}.claims"
    fs.create_dir(claims, recursive=True)
    mine = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
    _touch(fs, f"{claims}/{mine}")
    stop = threading.Event()
    beat = threading.Thread(
        target=_keep_touching, args=(fs, f"{claims}/{mine}", stop, heartbeat), daemon=True
    )
    beat.start()
    try:
        seen: dict[str, tuple[int, float]] = {}  # claim -> (its mtime, when we first saw that mtime)
        oldest_before = False  # ours must be the oldest twice, ``poll`` apart: a claim named just
        while not exists(uri):  # before ours may be written just after we listed
            live = [mine]
            for info in fs.get_file_info(pafs.FileSelector(claims)):
                name = info.base_name
                if name == mine or info.type != pafs.FileType.File:
                    continue
                mtime, now = info.mtime_ns or 0, time.monotonic()
                if seen.get(name, (None,))[0] != mtime:
                    seen[name] = (mtime, now)
                elif now - seen[name][1] > stale_after:
                    with contextlib.suppress(OSError):
                        fs.delete_file(f"{claims}/{name}")
                    continue
                live.append(name)
            if min(live) == mine and oldest_before:
                break
            oldest_before = min(live) == mine
            time.sleep(poll)
        yield
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(OSError):
            fs.delete_file(f"{claims}/{mine}")


def _touch(fs: Any, path: str) -> None:
    with fs.open_output_stream(path) as f:
        f.write(b"")


def _keep_touching(fs: Any, path: str, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        with contextlib.suppress(OSError):
            _touch(fs, path)
