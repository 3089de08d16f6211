"""Labelled text data: read a user's table, check it row by row, split it, store it prepared.

The driver calls :func:`prepare_splits` once per sweep (errors name the file, row and fix) and
writes each split with :func:`write_split` as parquet (``text: str, label: int``) under the
sweep's storage; every worker then reads exactly those rows with :func:`read_split`, so all
trials of a sweep see the same data whatever machine they land on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search_spaces.errors import UserError

__all__ = [
    "DataError",
    "PreparedData",
    "Split",
    "file_sha256",
    "filesystem",
    "load_table",
    "prepare_splits",
    "read_split",
    "write_split",
]

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataError(UserError):
    """A data problem; the message names the field/file, the row and the fix."""


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[int]  # indices into PreparedData.label_names

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class PreparedData:
    label_names: list[str]
    train: Split
    validation: Split
    test: Split | None = None
    dropped: dict[str, int] = dataclasses.field(
        default_factory=dict
    )  # file field -> rows skipped (drop_empty_rows)

    def majority_rate(self) -> float:
        """Validation accuracy of always predicting the most frequent training label."""
        majority = int(np.bincount(self.train.labels).argmax())
        return float(np.mean(np.asarray(self.validation.labels) == majority))


def _hub_table(source: str, field: str):  # -> pandas.DataFrame
    """``hf:NAME[:CONFIG[:SPLIT]]`` through ``datasets`` (only where a hub is reachable)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    name, _, rest = source[3:].partition(":")
    config, _, split = rest.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as exc:  # hub unreachable, unknown dataset, ...
        raise DataError(f"{field}: cannot load {source} ({type(exc).__name__}); use a local file") from None
    return ds.to_pandas()


def _read_file(path: Path, fmt: str):  # -> pandas.DataFrame
    """A local table read as ``datasets``' own csv/json/parquet builders read it, without importing it."""
    import pandas as pd

    if fmt == "csv":  # datasets' csv builder is pandas.read_csv with its defaults
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pandas()
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not JSON
    if text.lstrip().startswith("["):  # one JSON array of objects; columns: the union of their keys
        rows = json.loads(text)
        if not all(isinstance(r, dict) for r in rows):
            raise ValueError("expected JSON lines or one JSON array of objects")
        return pd.DataFrame.from_records(rows)
    import pyarrow as pa
    import pyarrow.json as paj

    data = text.encode()
    options = paj.ReadOptions(block_size=max(1 << 20, len(data) + 1))  # one block: no line straddles two
    return paj.read_json(pa.BufferReader(data), read_options=options).to_pandas()


def load_table(source: str, field: str):  # -> pandas.DataFrame
    if source.startswith("hf:"):
        return _hub_table(source, field)
    path = Path(source)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{field}: unsupported file type '{path.suffix}'; use .csv, .tsv, .json, .jsonl or .parquet"
        )
    if not path.is_file():
        raise DataError(f"{field}: file {source} does not exist")
    try:
        return _read_file(path, fmt)
    except Exception as exc:  # malformed CSV/JSON/parquet, wrong encoding, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{field}: cannot parse {source}: {first}") from None


def _columns(
    df, field: str, text_column: str, label_column: str, drop_empty: bool
):  # -> (texts, labels, dropped)
    for column, knob in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in df.columns:
            raise DataError(
                f"{field}: no column '{column}'; set data.{knob} to one of: {', '.join(map(str, df.columns))}"
            )
    texts, labels, dropped = [], [], 0
    for i, (text, label) in enumerate(zip(df[text_column].tolist(), df[label_column].tolist(), strict=True)):
        problem = None
        if not isinstance(text, str) or not text.strip():
            problem = f"empty or non-text '{text_column}'"
        elif label is None or (isinstance(label, float) and np.isnan(label)):
            problem = f"missing '{label_column}'"
        if problem is None:
            texts.append(text)
            labels.append(label)
        elif drop_empty:
            dropped += 1
        else:
            raise DataError(
                f"{field} row {i + 1}: {problem}; fix or drop the row, or set data.drop_empty_rows: true"
            )
    return texts, labels, dropped


def _label_key(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(value).lower()
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _encode(labels, names: list[str], field: str, label_column: str) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    out = []
    for i, value in enumerate(labels):
        key = _label_key(value)
        if key not in index:
            raise DataError(
                f"{field} row {i + 1}: label '{key}' never occurs in data.train; "
                f"labels are {', '.join(names)} (column '{label_column}')"
            )
        out.append(index[key])
    return out


def _sorted_names(labels) -> list[str]:
    keys = {_label_key(v) for v in labels}
    numeric = all(k.lstrip("-").isdigit() for k in keys)
    return sorted(keys, key=int) if numeric else sorted(keys)


def prepare_splits(
    *,
    train: str,
    validation: str | None,
    test: str | None = None,
    validation_fraction: float,
    text_column: str,
    label_column: str,
    seed: int,
    drop_empty_rows: bool = False,
) -> PreparedData:
    """Read, check and split the sweep's data.

    Without a validation file, ``validation_fraction`` of the training rows (at least one per
    run) is held out by a seeded permutation, so the split depends only on the file and seed.
    With ``drop_empty_rows``, rows with an empty text or a missing label are skipped (counted in
    ``dropped``) instead of refused.
    """
    dropped: dict[str, int] = {}

    def read(source: str, name: str) -> tuple[list, list]:
        texts, raw, dropped[name] = _columns(
            load_table(source, name), name, text_column, label_column, drop_empty_rows
        )
        return texts, raw

    texts, raw = read(train, "data.train")
    names = _sorted_names(raw)
    if len(names) < 2:
        raise DataError(
            f"data.train: column '{label_column}' has a single label '{names[0]}'; need at least 2"
        )
    labels = _encode(raw, names, "data.train", label_column)
    if validation is None:
        n_val = max(1, round(len(texts) * validation_fraction))
        if n_val >= len(texts):
            raise DataError(
                f"data.validation_fraction: {validation_fraction} leaves no training rows; lower it"
            )
        order = np.random.default_rng(seed).permutation(len(texts))
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
        train_split = Split([texts[i] for i in train_idx], [labels[i] for i in train_idx])
        val_split = Split([texts[i] for i in val_idx], [labels[i] for i in val_idx])
    else:
        train_split = Split(texts, labels)
        v_texts, v_raw = read(validation, "data.validation")
        val_split = Split(v_texts, _encode(v_raw, names, "data.validation", label_column))
    test_split = None
    if test is not None:
        t_texts, t_raw = read(test, "data.test")
        test_split = Split(t_texts, _encode(t_raw, names, "data.test", label_column))
    return PreparedData(names, train_split, val_split, test_split, {k: v for k, v in dropped.items() if v})


def filesystem(uri: str):  # -> (pyarrow.fs.FileSystem, path)
    """The pyarrow filesystem and path of a local path or a URI (s3://, gs://, file://, ...)."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))


def write_split(split: Split, uri: str) -> None:
    """Write ``split`` as parquet to a local path or a pyarrow-supported URI (s3://, gs://)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": split.texts, "label": pa.array(split.labels, pa.int64())})
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, path, filesystem=fs)


def read_split(uri: str) -> Split:
    import pyarrow.parquet as pq

    fs, path = filesystem(uri)
    table = pq.read_table(path, filesystem=fs)
    return Split(table.column("text").to_pylist(), table.column("label").to_pylist())


def file_sha256(uri: str | Path) -> str:
    """sha256 of a file's bytes: a local path or a pyarrow-supported URI, read in 1 MiB blocks."""
    fs, path = filesystem(str(uri))
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
