"""Stored entries are memory-mapped: a reader (a DDP rank) pays for the rows it reads, and a
remote entry is copied once per machine (``trainables.stored.local_copy``).

The remote path is driven through pyarrow with ``file://`` URIs (the same calls S3 or GCS get:
file info, an input stream); ``local_copy`` itself maps ``file://`` in place.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import torch

from trainables import stored
from trainables.prefix_cache import SPLITS, Features, _load, _save


def _copy(uri: str, cache: str, log: str, start_at: float) -> tuple[str, int]:
    """One rank: a slow download (logged), all ranks starting at the same moment."""
    os.environ["ORCHESTRATOR_CACHE"] = cache
    download = stored._download

    def slow_download(uri: str, local: Path) -> None:
        with open(log, "a") as f:
            f.write("downloaded\n")
        time.sleep(1.0)  # the others arrive while this one is downloading
        download(uri, local)

    stored._download = slow_download
    time.sleep(max(0.0, start_at - time.time()))
    local = stored._machine_copy(uri)
    return str(local), local.stat().st_ino


def test_a_local_entry_is_read_in_place(tmp_path):
    entry = tmp_path / "e.bin"
    entry.write_bytes(b"x")
    assert stored.local_copy(str(entry)) == entry
    assert stored.local_copy(f"file://{entry}") == entry


def test_a_remote_entry_is_copied_once_per_machine_and_renewed_when_rewritten(tmp_path, monkeypatch):
    cache = tmp_path / "machine"
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(cache))
    remote = tmp_path / "bucket" / "entry.safetensors"
    remote.parent.mkdir()
    remote.write_bytes(b"states v1")
    uri = f"file://{remote}"
    log = tmp_path / "downloads"
    with multiprocessing.get_context("spawn").Pool(3) as pool:  # three ranks of one machine at once
        start_at = time.time() + 5  # after the spawned interpreters are up
        got = pool.starmap(_copy, [(uri, str(cache), str(log), start_at)] * 3)
    assert log.read_text() == "downloaded\n"  # one download; the other two waited and read it
    assert len(set(got)) == 1  # one file, one inode
    copy = Path(got[0][0])
    assert copy.read_bytes() == b"states v1"
    assert [p.name for p in (cache / "copies").iterdir() if not p.name.endswith(".lock")] == [copy.name]

    time.sleep(0.01)
    remote.write_bytes(b"states v2, rewritten")  # a new object under the same name: a new copy
    renewed = stored._machine_copy(uri)
    assert renewed != copy and renewed.read_bytes() == b"states v2, rewritten"


def test_copies_unused_for_a_day_are_removed_with_the_next_download(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "machine"))
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "old").write_bytes(b"old")
    (bucket / "recent").write_bytes(b"recent")
    old, recent = (
        stored._machine_copy(f"file://{bucket / 'old'}"),
        stored._machine_copy(f"file://{bucket / 'recent'}"),
    )
    day_ago = time.time() - stored.COPY_UNUSED_S - 60
    os.utime(old, (day_ago, day_ago))
    (bucket / "new").write_bytes(b"new")
    (bucket / "held").write_bytes(b"held")
    held = stored._machine_copy(f"file://{bucket / 'held'}")
    os.utime(held, (day_ago, day_ago))
    with stored.write_lock(str(held)):  # someone is reading this one right now
        stored._machine_copy(f"file://{bucket / 'new'}")
    assert not old.exists()
    assert recent.read_bytes() == b"recent" and held.read_bytes() == b"held"


def test_copies_beyond_the_size_cap_go_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "machine"))
    monkeypatch.setenv("ORCHESTRATOR_COPIES_MAX_GB", str(2500 / 1e9))  # room for two 1000-byte copies
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for name in ("a", "b", "c", "d", "e"):
        (bucket / name).write_bytes(name.encode() * 1000)
    copy = {n: stored._machine_copy(f"file://{bucket / n}") for n in ("a", "b")}
    os.utime(copy["a"], (time.time() - 60, time.time() - 60))
    os.utime(copy["b"], (time.time() - 120, time.time() - 120))  # b is the least recently used
    copy["c"] = stored._machine_copy(f"file://{bucket / 'c'}")
    assert not copy["b"].exists() and copy["a"].exists() and copy["c"].exists()
    os.utime(copy["a"], (time.time() - 600, time.time() - 600))  # a is older, but someone holds it
    with stored.write_lock(str(copy["a"])):
        copy["d"] = stored._machine_copy(f"file://{bucket / 'd'}")
    assert copy["a"].exists() and not copy["c"].exists() and copy["d"].exists()
    copy["e"] = stored._machine_copy(f"file://{bucket / 'e'}")  # a's lock is free again: it goes
    kept = sorted(p.name for p in (tmp_path / "machine" / "copies").iterdir() if not p.name.endswith(".lock"))
    assert kept == sorted([copy["d"].name, copy["e"].name])
    assert copy["e"].read_bytes() == b"e" * 1000


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _read_a_shard(uri: str) -> tuple[float, float, list[float]]:
    before = _rss_mb()
    features = _load(uri)
    rows = features["train"].batch(torch.arange(0, 4000, 200), width=8)  # 20 examples of 4000
    return before, _rss_mb(), rows[:, 0, 0].tolist()


def test_a_reader_pays_for_the_rows_it_reads_not_the_entry(tmp_path):
    """An entry of ~260 MB: reading a 20-example shard of it adds a few MB to the process."""
    examples, width, hidden = 4000, 8, 1024
    states = torch.arange(examples, dtype=torch.float32).repeat_interleave(width)[:, None].expand(-1, hidden)
    offsets = torch.arange(0, examples * width + 1, width, dtype=torch.int64)
    entry = {s: Features(states.contiguous(), offsets.clone()) for s in SPLITS}
    uri = str(tmp_path / "features" / "key.safetensors")
    (tmp_path / "features").mkdir()
    _save(entry, uri)
    del entry, states
    assert Path(uri).stat().st_size > 260e6
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process, as a rank is
        before, after, firsts = pool.apply(_read_a_shard, (f"file://{uri}",))
    assert firsts == [float(i) for i in range(0, 4000, 200)]  # the right rows
    assert after - before < 40, (before, after)  # not the 260 MB entry
