"""Context-template encoding cost, measured side by side with plain tokenization in one run.

    python bench/bench_context.py [--rows 10000]

Prints a Markdown table for BENCHMARKS.md: seconds to encode N texts with each preset vs the
tokenizer alone (the ratio is what matters; absolute times depend on the machine).
"""

from __future__ import annotations

import argparse
import time

from orchestrator.demo_data import generate
from search_spaces.presets import PRESETS, resolve_template
from trainables.context import ContextEncoder
from trainables.models import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    rows = generate(args.rows, seed=0)
    texts = [t for t, _ in rows]
    labels = [int(label == "positive") for _, label in rows]
    tokenizer = load_tokenizer("builtin:minilm-l6")

    t0 = time.perf_counter()
    tokenizer(texts, truncation=True, max_length=args.max_length)
    plain = time.perf_counter() - t0
    print(f"| template | seconds for {args.rows} texts | ratio to plain tokenizer | truncated |")
    print("|---|---|---|---|")
    print(f"| tokenizer alone | {plain:.2f} | 1.00 | - |")
    for name in PRESETS:
        encoder = ContextEncoder(
            tokenizer,
            resolve_template(name, {}),
            label_names=["negative", "positive"],
            train_texts=texts,
            train_labels=labels,
            max_length=args.max_length,
            seed=0,
        )
        t0 = time.perf_counter()
        out = encoder.encode(texts, split="train")
        dt = time.perf_counter() - t0
        print(f"| {name} | {dt:.2f} | {dt / plain:.2f} | {out.truncated} |")


if __name__ == "__main__":
    main()
