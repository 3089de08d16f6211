"""Encoded splits once per sweep: the same ids as encoding in the trial, one file per key, keys that tell apart."""

from __future__ import annotations

import pytest

from search_spaces.presets import resolve_template
from tests.conftest import review_rows
from trainables.config import TaskConfig
from trainables.data import Split, write_split
from trainables.encoded import encode_splits_of, encoded_splits, encoding_key
from trainables.models import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:minilm-l6")


def _task(tmp_path, **extra) -> TaskConfig:
    rows = review_rows(40, seed=5)
    labels = sorted({label for _, label in rows})
    split = Split([t for t, _ in rows], [labels.index(label) for _, label in rows])
    write_split(split, str(tmp_path / "train.parquet"))
    write_split(Split(split.texts[:12], split.labels[:12]), str(tmp_path / "validation.parquet"))
    values = {
        "model": "builtin:minilm-l6",
        "train_data": str(tmp_path / "train.parquet"),
        "validation_data": str(tmp_path / "validation.parquet"),
        "label_names": labels,
        "max_length": 40,
        "cache_dir": str(tmp_path / "cache"),
        **extra,
    }
    return TaskConfig(**values)


def test_cached_ids_equal_fresh_ids_and_are_stored_once(tmp_path, tokenizer):
    task = _task(tmp_path)
    template = resolve_template("two_shot", {})
    fresh = encode_splits_of(task, template, tokenizer)
    first = encoded_splits(task, template, tokenizer)
    second = encoded_splits(task, template, tokenizer)
    assert not first.cached and second.cached
    for got in (first, second):
        assert (got.train, got.validation, got.truncated) == (fresh.train, fresh.validation, fresh.truncated)
    assert fresh.truncated > 0  # two demonstrations in 40 tokens: the budget was exercised
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 1  # no temporary file left behind
    no_cache = encoded_splits(task.model_copy(update={"cache_dir": None}), template, tokenizer)
    assert not no_cache.cached and no_cache.train == fresh.train


def test_key_changes_with_everything_the_ids_depend_on(tmp_path, tokenizer):
    task = _task(tmp_path)
    plain, two_shot = resolve_template("plain", {}), resolve_template("two_shot", {})
    key = encoding_key(task, two_shot, tokenizer)
    assert key == encoding_key(task, two_shot, tokenizer)
    variants = [
        encoding_key(task, plain, tokenizer),
        encoding_key(task.model_copy(update={"max_length": 41}), two_shot, tokenizer),
        encoding_key(task.model_copy(update={"data_seed": 1}), two_shot, tokenizer),
        encoding_key(
            task.model_copy(update={"label_names": list(reversed(task.label_names))}), two_shot, tokenizer
        ),
    ]
    tokenizer(["a text"] * 2, truncation=True, max_length=4, padding=True)  # call state: not identity
    assert encoding_key(task, two_shot, tokenizer) == key
    other_tok = load_tokenizer("builtin:minilm-l6")
    other_tok.add_tokens(["zzzqqq"])
    variants.append(encoding_key(task, two_shot, other_tok))
    write_split(Split(["another row"] * 3, [0, 1, 0]), str(tmp_path / "validation.parquet"))
    variants.append(encoding_key(task, two_shot, tokenizer))
    assert len({key, *variants}) == len(variants) + 1
