"""The demo dataset is reproducible and needs more than one keyword."""

from __future__ import annotations

import collections
import re
from pathlib import Path

from orchestrator.demo_data import generate, write_demo_data

SHIPPED = Path(__file__).resolve().parents[1] / "sweeps" / "data"


def test_shipped_files_are_the_generator_output(tmp_path):
    for path in write_demo_data(tmp_path):
        assert path.read_text() == (SHIPPED / path.name).read_text(), f"regenerate {path.name}"


def test_no_single_keyword_separates_the_labels():
    rows = generate(800, 13)
    n, pos = len(rows), sum(label == "positive" for _, label in rows)
    counts = collections.defaultdict(lambda: [0, 0])
    for text, label in rows:
        for word in set(re.findall(r"[a-z]+", text.lower())):
            counts[word][label == "positive"] += 1
    best = max(max(c[1] + (n - pos) - c[0], c[0] + pos - c[1]) / n for c in counts.values())
    assert 0.4 < pos / n < 0.6
    assert best < 0.65
