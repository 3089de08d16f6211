"""A sweep's tokenizer stored once; its checkpoints refer to it by sha256 instead of copying it.

Every checkpoint of a trial holds the model source's tokenizer unchanged (MiniLM's tokenizer.json,
vocabulary and configs: about 0.7 MB, as much as a LoRA delta). In a sweep, rank 0 writes the
tokenizer's files once as one *bundle* under the sweep's cache directory: a JSON object of file
name -> base64 bytes, named by its sha256 (:func:`store_tokenizer`). ``trial.json`` records it
under ``"tokenizer"`` and the checkpoint has no tokenizer files.

:func:`tokenizer_dir` gives a local directory with the files: the checkpoint itself when it has
them (exports, checkpoints outside a sweep), else the bundle, checked against its sha256 and
unpacked once per machine under ``$ORCHESTRATOR_CACHE/tokenizers/``. :func:`unpack_into` puts the
files into an export, which refers to nothing. File names in a bundle must be plain names (no
directory part), so unpacking writes nowhere else.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from trainables.data import file_sha256
from trainables.memo import cache_root
from trainables.stored import StoredFileError, StoredRef, fetch, put_once

__all__ = ["TOKENIZER_KEY", "store_tokenizer", "tokenizer_dir", "unpack_into"]

TOKENIZER_KEY = "tokenizer"  # in trial.json: {"sha256", "uri"} of the bundle
RESERVED = frozenset({"config.json", "model.safetensors", "trial.json", "resume.pt", "README.md"})


def store_tokenizer(tokenizer: Any, cache_dir: str) -> StoredRef | None:
    """Write ``tokenizer``'s files as one bundle under ``cache_dir/tokenizer`` (once); its reference.

    None when its files do not fit a bundle (a sub-folder, e.g. extra chat templates, or a name a
    checkpoint uses itself): checkpoints then hold the files, as outside a sweep.
    """
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as tmp:
        files = Path(tmp, "files")
        tokenizer.save_pretrained(files)
        entries = sorted(files.iterdir())
        if any(not p.is_file() or p.name in RESERVED for p in entries):
            return None
        bundle = {p.name: base64.b64encode(p.read_bytes()).decode() for p in entries}
        local = Path(tmp, "bundle.json")
        local.write_text(json.dumps(bundle, sort_keys=True))
        digest = file_sha256(local)
        uri = f"{cache_dir.rstrip('/')}/tokenizer/{digest}.json"
        put_once(local, uri)
    return StoredRef(digest, uri)


def unpack_into(ref: StoredRef, directory: str | Path) -> None:
    """Write the bundle's files into ``directory`` (which exists)."""
    bundle = json.loads(fetch(ref.uri, ref.sha256).read_text())
    for name, data in bundle.items():
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", "..", *RESERVED):
            raise StoredFileError(
                f"{ref.uri}: a tokenizer bundle holds plain tokenizer file names only, not '{name}'"
            )
        Path(directory, name).write_bytes(base64.b64decode(data))


def tokenizer_dir(checkpoint: str | Path, info: dict[str, Any]) -> Path:
    """A local directory holding the tokenizer of the checkpoint whose ``trial.json`` is ``info``."""
    ref = StoredRef.from_json(info.get(TOKENIZER_KEY))
    if ref is None:
        return Path(checkpoint)
    target = cache_root() / "tokenizers" / ref.sha256
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{ref.sha256}."))
        try:
            unpack_into(ref, tmp)
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another process: a real failure
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
