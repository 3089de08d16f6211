"""The writer lock for object storage (``trainables.stored.claim_lock``), run on a local directory.

Object stores have no ``flock``; concurrent trials that need the same prefix states must still
compute them once. The claim protocol only uses writing, listing and deleting
plain files, so a local directory exercises exactly what S3 or GCS would see.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from trainables.stored import claim_lock, exists, put_once


def _compute_once(uri: str, log: str, hold: float) -> tuple[float, float]:
    """What a trial does: under the lock, compute and store ``uri`` unless another process did."""
    with claim_lock(uri, poll=0.05, heartbeat=0.1, stale_after=1.0):
        entered = time.time()
        if not exists(uri):
            with open(log, "a") as f:
                f.write("computed\n")
            time.sleep(hold)  # longer than stale_after: only the heartbeat keeps the claim alive
            local = Path(f"{uri}.local")
            local.write_text("states")
            put_once(local, uri)
        left = time.time()
    return entered, left


def test_concurrent_writers_compute_once_and_the_others_wait(tmp_path):
    uri, log = str(tmp_path / "features" / "key.safetensors"), str(tmp_path / "log")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        spans = pool.starmap(_compute_once, [(uri, log, 2.5)] * 3)
    assert Path(log).read_text() == "computed\n"
    assert Path(uri).read_text() == "states"
    writer = min(spans, key=lambda s: s[0])
    assert all(entered >= writer[1] for entered, _ in spans if (entered, _) != writer)  # waited it out
    assert not list(Path(f"{uri}.claims").iterdir())  # every claim removed


def test_a_dead_writers_claim_is_taken_over(tmp_path):
    uri = str(tmp_path / "key.safetensors")
    claims = Path(f"{uri}.claims")
    claims.mkdir()
    (claims / f"{1:020d}-deadbeef0000").write_bytes(b"")  # oldest claim, never touched again
    started = time.monotonic()
    with claim_lock(uri, poll=0.05, stale_after=0.5):
        waited = time.monotonic() - started
    assert 0.5 <= waited < 5
    assert not list(claims.iterdir())


def test_a_written_file_ends_the_wait_at_once(tmp_path):
    uri = tmp_path / "key.safetensors"
    claims = Path(f"{uri}.claims")
    claims.mkdir()
    (claims / f"{1:020d}-alive0000000").write_bytes(b"")  # another writer, still working
    uri.write_text("states")  # ... that has just finished
    started = time.monotonic()
    with claim_lock(str(uri), poll=0.05, stale_after=30):
        assert time.monotonic() - started < 1
