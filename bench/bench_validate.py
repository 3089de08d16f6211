"""How long ``orchestrator validate`` takes, as a user runs it (a fresh process each time).

    python bench/bench_validate.py [--repeats 5]

Cases: a sweep-file shape error; full validation (data read and checked, model config, every
strategy against the model) of the demo sweep and of the customer-review sweep on
``../shared/data/cr`` (skipped without it), each the first time on a machine (empty
``$ORCHESTRATOR_CACHE``) and again. Prints a Markdown table of medians for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("orchestrator")


def _once(spec: Path, cache: Path, expect: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [str(EXE), "validate", str(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "ORCHESTRATOR_CACHE": str(cache)},
    )
    took = time.perf_counter() - started
    if done.returncode != expect:
        sys.exit(f"{spec}: exit {done.returncode}, expected {expect}\n{done.stderr[-2000:]}")
    return took


def _case(spec: Path, repeats: int, expect: int = 0) -> tuple[list[float], list[float]]:
    first, again = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            first.append(_once(spec, Path(cache), expect))
            again.append(_once(spec, Path(cache), expect))
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shape = Path(tmp, "bad.yaml")
        shape.write_text("name: x\nsearch: {num_trials: -1}\n")
        cases = [
            ("shape error (`num_trials: -1`)", shape, 2),
            ("demo sweep (800 + 200 rows)", ROOT / "sweeps/demo.yaml", 0),
        ]
        cr = ROOT / "bench/sweeps/cr_strategies.yaml"
        if (ROOT.parent / "shared/data/cr/train.csv").exists():
            cases.append(("cr strategies (2,575 + 400 + 800 rows, real data)", cr, 0))
        print(f"| case | first on a machine (s, median of {args.repeats}) | again (s, median) | again, max |")
        print("|---|---|---|---|")
        for name, spec, expect in cases:
            first, again = _case(spec, args.repeats, expect)
            print(
                f"| {name} | {statistics.median(first):.2f} | {statistics.median(again):.2f} | {max(again):.2f} |"
            )


if __name__ == "__main__":
    main()
