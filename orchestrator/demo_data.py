"""The demo dataset: synthetic product reviews whose label needs more than one keyword.

Sentiment words appear under both labels: negation flips them ("not reliable"), and in a
contrast ("X is great, but Y is awful" / "Although X is great, Y is awful") the main clause
decides. A little label noise keeps it from being trivially separable. Deterministic by seed;
the shipped files under ``sweeps/data`` are this module's output (a test checks that).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

__all__ = ["generate", "write_demo_data"]

ASPECTS = [
    "the battery",
    "the screen",
    "the keyboard",
    "shipping",
    "the customer service",
    "the price",
    "the sound",
    "the camera",
    "the build quality",
    "the setup",
    "the manual",
    "the charger",
    "the app",
    "the fabric",
    "the zipper",
    "the handle",
    "the lid",
    "the motor",
]
POSITIVE = [
    "excellent",
    "reliable",
    "great",
    "sturdy",
    "fast",
    "impressive",
    "solid",
    "pleasant",
    "well made",
    "worth it",
    "comfortable",
    "responsive",
]
NEGATIVE = [
    "awful",
    "unreliable",
    "terrible",
    "flimsy",
    "slow",
    "disappointing",
    "cheap",
    "annoying",
    "badly made",
    "a waste of money",
    "uncomfortable",
    "unresponsive",
]
OPENERS = [
    "",
    "I bought this last month. ",
    "Ordered it for my brother. ",
    "Second one I own. ",
    "Arrived on Tuesday. ",
    "Used it daily for a week. ",
    "Got it on sale. ",
]
CLOSERS_POS = ["", "", " Would buy again.", " Happy overall.", " I recommend it."]
CLOSERS_NEG = ["", "", " Returning it.", " Not happy overall.", " I do not recommend it."]
LABELS = ("negative", "positive")
NOISE = 0.04


def _clause(rng: random.Random, polarity: int) -> str:
    """A clause whose sentiment is ``polarity`` (1 positive, 0 negative), maybe via negation."""
    aspect = rng.choice(ASPECTS)
    if rng.random() < 0.3:  # negated opposite word: "not reliable" is negative
        word = rng.choice(NEGATIVE if polarity else POSITIVE)
        return f"{aspect} is not {word}"
    word = rng.choice(POSITIVE if polarity else NEGATIVE)
    return f"{aspect} is {word}"


def _review(rng: random.Random, label: int) -> str:
    kind = rng.random()
    if kind < 0.3:
        body = _clause(rng, label).capitalize() + "."
    elif kind < 0.65:  # the clause after "but" decides
        body = f"{_clause(rng, 1 - label).capitalize()}, but {_clause(rng, label)}."
    elif kind < 0.85:  # concessive: the main clause decides
        body = f"Although {_clause(rng, 1 - label)}, {_clause(rng, label)}."
    else:  # two agreeing clauses
        body = f"{_clause(rng, label).capitalize()} and {_clause(rng, label)}."
    closer = rng.choice(CLOSERS_POS if label else CLOSERS_NEG) if rng.random() < 0.4 else ""
    return rng.choice(OPENERS) + body + closer


def generate(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randrange(2)
        text = _review(rng, label)
        if rng.random() < NOISE:
            label = 1 - label
        rows.append((text, LABELS[label]))
    return rows


def write_demo_data(out_dir: str | Path, *, train_rows: int = 800, validation_rows: int = 200) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n, seed in (("demo_train.csv", train_rows, 13), ("demo_validation.csv", validation_rows, 14)):
        path = out_dir / name
        with path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(generate(n, seed))
        paths.append(path)
    return paths
