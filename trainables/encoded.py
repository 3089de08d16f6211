"""Encoded splits, once per sweep: token ids per (template, tokenizer, max_length, labels, data, seed).

Rendering a template around every text and tokenizing it is the same work for every trial that
uses that template. :func:`encoded_splits` computes it once, stores it in the sweep's cache
(``<cache_dir>/tokens/<key>.parquet``) and every later trial and rank reads it back. The driver
encodes every template a sweep can use before the first trial starts
(``orchestrator.sweep_cache``), so trials find their file; a trial that does not (an older sweep)
encodes and stores it itself, the same way.

The key is the sha256 of everything the ids depend on: the template's definition, the
tokenizer's full serialisation and special tokens, ``max_length``, the label names (templates
name them), the demonstrations seed and the sha256 of the prepared split files.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.context import ContextEncoder
from trainables.data import file_sha256, filesystem, read_split
from trainables.stored import exists, put_once

__all__ = ["EncodedSplits", "encode_splits_of", "encoded_splits", "encoding_key", "tokenizer_fingerprint"]

FORMAT = 1  # bump when the stored layout or the encoding contract changes


@dataclass
class EncodedSplits:
    """``(input_ids, label)`` pairs per split and how many examples had something cut to fit."""

    train: list[tuple[list[int], int]]
    validation: list[tuple[list[int], int]]
    truncated: int
    cached: bool = False  # read back from the sweep's cache
    key: str | None = None  # the cache key (None without a cache)

    def tokens(self, split: str | None = None) -> int:
        """Token positions of ``split`` (default both; what stored hidden states scale with)."""
        splits = {"train": self.train, "validation": self.validation}
        return sum(len(ids) for name in ([split] if split else splits) for ids, _ in splits[name])


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what decides the ids: the full tokenizer definition (fast) or vocabulary (slow)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = json.loads(backend.to_str())
        for state in ("truncation", "padding"):  # set by each call's arguments, not part of the vocabulary
            definition.pop(state, None)
        body = json.dumps(definition, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    head = json.dumps([type(tokenizer).__name__, special, getattr(tokenizer, "padding_side", None)])
    return hashlib.sha256(f"{head}\n{body}".encode()).hexdigest()


def encoding_key(task: Any, template: Any, tokenizer: Any) -> str:
    """The cache key of ``template`` over ``task``'s splits (see the module docstring)."""
    parts = {
        "format": FORMAT,
        "template": template.model_dump(mode="json"),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": task.max_length,
        "label_names": list(task.label_names),
        "data_seed": task.data_seed,
        "train": file_sha256(task.train_data),
        "validation": file_sha256(task.validation_data),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def encode_splits_of(task: Any, template: Any, tokenizer: Any) -> EncodedSplits:
    """Render and tokenize both splits (demonstrations from the training split only)."""
    train, val = read_split(task.train_data), read_split(task.validation_data)
    encoder = ContextEncoder(
        tokenizer,
        template,
        label_names=task.label_names,
        train_texts=train.texts,
        train_labels=train.labels,
        max_length=task.max_length,
        seed=task.data_seed,
    )
    enc_train = encoder.encode(train.texts, split="train")
    enc_val = encoder.encode(val.texts, split="validation")
    return EncodedSplits(
        list(zip(enc_train.input_ids, train.labels, strict=True)),
        list(zip(enc_val.input_ids, val.labels, strict=True)),
        enc_train.truncated + enc_val.truncated,
    )


def _write(encoded: EncodedSplits, uri: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("train", r) for r in encoded.train] + [("validation", r) for r in encoded.validation]
    table = pa.table(
        {
            "split": [s for s, _ in rows],
            "input_ids": pa.array([ids for _, (ids, _) in rows], pa.list_(pa.int32())),
            "label": pa.array([label for _, (_, label) in rows], pa.int64()),
        }
    ).replace_schema_metadata({"truncated": str(encoded.truncated), "format": str(FORMAT)})
    with tempfile.TemporaryDirectory(prefix="tokens-") as tmp:
        local = Path(tmp, "tokens.parquet")
        pq.write_table(table, local)
        put_once(local, uri)


def _read(uri: str) -> EncodedSplits:
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    table = pq.read_table(path, filesystem=fs)
    out: dict[str, list] = {"train": [], "validation": []}
    splits = table.column("split").to_pylist()
    ids, labels = table.column("input_ids").to_pylist(), table.column("label").to_pylist()
    for split, row_ids, label in zip(splits, ids, labels, strict=True):
        out[split].append((row_ids, label))
    truncated = int((table.schema.metadata or {}).get(b"truncated", b"0"))
    return EncodedSplits(out["train"], out["validation"], truncated, cached=True)


def encoded_splits(task: Any, template: Any, tokenizer: Any) -> EncodedSplits:
    """``template`` over ``task``'s splits: from the sweep's cache when stored, else encoded (and stored)."""
    if not task.cache_dir:
        return encode_splits_of(task, template, tokenizer)
    key = encoding_key(task, template, tokenizer)
    uri = f"{task.cache_dir.rstrip('/')}/tokens/{key}.parquet"
    if exists(uri):
        encoded = _read(uri)
    else:
        encoded = encode_splits_of(task, template, tokenizer)
        _write(encoded, uri)
    encoded.key = key
    return encoded
