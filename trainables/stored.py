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
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.errors import UserError
from trainables.data import file_sha256, filesystem
from trainables.memo import cache_root

__all__ = ["StoredFileError", "exists", "fetch", "put_once", "tree_bytes", "write_lock"]


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


def fetch(uri: str, sha256: str) -> Path:
    """A local path holding ``uri``'s bytes, checked against ``sha256`` (downloaded once per machine)."""
    if "://" not in uri or uri.startswith("file://"):
        local = Path(uri.removeprefix("file://"))
        if not local.is_file():
            raise StoredFileError(f"{uri}: not found (sha256 {sha256[:12]})")
    else:
        local = cache_root() / "stored" / sha256
        if not local.is_file():
            if not exists(uri):
                raise StoredFileError(f"{uri}: not found (sha256 {sha256[:12]})")
            local.parent.mkdir(parents=True, exist_ok=True)
            fs, path = filesystem(uri)
            fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f"{sha256}.")
            with os.fdopen(fd, "wb") as dst, fs.open_input_stream(path) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, local)
    if file_sha256(local) != sha256:
        raise StoredFileError(f"{uri}: content does not match its sha256 {sha256[:12]}; it was changed")
    return local


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
    """Hold an exclusive lock named after ``uri`` while deciding whether to write it (local paths).

    A second process asking for the same lock waits, then finds the file written. Object stores
    have no such lock: there, concurrent writers each compute and the last complete upload wins
    (same content).
    """
    if "://" in uri and not uri.startswith("file://"):
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
