"""Every supported data format reads the same rows, the same way ``datasets`` reads them."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_csv
from trainables.data import DataError, load_table, prepare_splits

ROWS = [
    ("great, works as promised", "positive"),
    ('a "quoted" complaint, with commas', "negative"),
    ("tabs\tand ünïcödé", "positive"),
    ("NA", "negative"),  # pandas reads this CSV cell as missing, as datasets did
    ("fine", "1"),
]


def _write(tmp_path, fmt: str):
    path = tmp_path / f"rows.{fmt}"
    records = [{"text": t, "label": lab} for t, lab in ROWS]
    if fmt == "csv":
        write_csv(path, ROWS)
    elif fmt == "tsv":
        path.write_text("text\tlabel\n" + "".join(f'"{t}"\t{lab}\n' for t, lab in ROWS), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(records), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(records), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_formats_read_as_datasets_reads_them(tmp_path, fmt):
    import datasets

    path = _write(tmp_path, fmt)
    ours = load_table(str(path), "data.train")
    builder = {"tsv": "csv", "jsonl": "json"}.get(fmt, fmt)
    extra = {"delimiter": "\t"} if fmt == "tsv" else {}
    theirs = datasets.load_dataset(
        builder,
        data_files=str(path),
        split="train",
        keep_in_memory=True,
        cache_dir=str(tmp_path / "hf"),
        **extra,
    ).to_pandas()
    assert list(ours.columns) == list(theirs.columns)
    for column in ours.columns:
        assert [None if v != v else v for v in ours[column].tolist()] == [
            None if v != v else v for v in theirs[column].tolist()
        ], column


def test_prepared_rows_are_the_same_in_every_format(tmp_path):
    prepared = []
    for fmt in ["csv", "jsonl", "json", "parquet"]:
        path = str(_write(tmp_path, fmt))
        data = prepare_splits(
            train=path,
            validation=path,
            validation_fraction=0.2,
            text_column="text",
            label_column="label",
            seed=0,
            drop_empty_rows=True,
        )
        prepared.append((data.label_names, data.train.texts, data.train.labels))
    assert prepared[0][0] == ["1", "negative", "positive"]
    # CSV drops the "NA" row (pandas' missing value, as with datasets); the typed formats keep it
    assert prepared[0][1] == [t for t, _ in ROWS if t != "NA"]
    assert prepared[1] == prepared[2] == prepared[3] and prepared[1][1] == [t for t, _ in ROWS]


def test_json_edge_cases_datasets_read_too(tmp_path):
    """Keys missing from the first object, a byte-order mark, and a JSON-lines row over 1 MiB."""
    array = tmp_path / "rows.json"
    array.write_text("\ufeff" + json.dumps([{"text": "a"}, {"text": "b", "label": "x"}]), encoding="utf-8")
    table = load_table(str(array), "data.train")
    assert list(table.columns) == ["text", "label"] and table["label"].tolist()[1] == "x"
    lines = tmp_path / "rows.jsonl"
    long = "word " * 300_000
    lines.write_text(
        json.dumps({"text": "short", "label": 1}) + "\n" + json.dumps({"text": long, "label": 0}) + "\n"
    )
    assert load_table(str(lines), "data.train")["text"].tolist() == ["short", long]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": '),
        ("bad.json", "[1, 2]"),
        ("bad.parquet", "nope"),
    ],
)
def test_malformed_files_are_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_table(str(path), "data.train")
    assert str(info.value).startswith(f"data.train: cannot parse {path}: ") and "\n" not in str(info.value)
