"""What a sweep computes once, before its first trial, and what it drops when it finishes.

* Every context template a trial can get is encoded into the sweep's cache
  (``trainables.encoded``), so no trial tokenizes.
* The frozen-prefix cache (``trainables.prefix_cache``) gets its budget: the ``cache:`` section
  of the sweep file, and a size estimate printed before anything starts: the token positions of
  both splits per template x the hidden size x 4 bytes (fp32) x the frozen depths trials can have.
* When the sweep finishes, the prefix features are deleted (a later sweep recomputes them from the
  stored base and tokens); an interrupted sweep keeps them for its resume.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from rich.console import Console

from orchestrator.console import styled
from orchestrator.resolve import ResolvedSweep
from orchestrator.retention import disk_usage_line
from orchestrator.space import possible_values
from orchestrator.trial import TrialSetup
from search_spaces.domains import Choice, IntRange

__all__ = ["drop_prefix_features", "prepare_sweep_cache"]


def _encode_templates(r: ResolvedSweep, task: Any, console: Console) -> list[Any]:
    """Both splits encoded once per template a trial can get (read back when already stored)."""
    from search_spaces.presets import resolve_template
    from trainables.encoded import encoded_splits
    from trainables.models import load_tokenizer

    started = time.time()
    possible = possible_values("context_template", r.space, {**r.fallback, **r.fixed})
    names = sorted(n for n in possible if isinstance(n, str))
    tokenizer = load_tokenizer(task.model)
    encoded = [encoded_splits(task, resolve_template(name, task.templates), tokenizer) for name in names]
    fresh = [name for name, e in zip(names, encoded, strict=True) if not e.cached]
    if fresh:
        console.print(
            styled(
                ("encoded", "bold"),
                f" {len(fresh)} template(s) once for every trial ({', '.join(fresh)}) in {time.time() - started:.1f} s",
            )
        )
    return encoded


def cacheable_depths(r: ResolvedSweep) -> set[int]:
    """The frozen depths (1..L) a trial whose strategy reads the frozen prefix can have."""
    from trainables.strategies import STRATEGIES

    merged = {**r.fallback, **r.fixed}
    strategies = possible_values("strategy", r.space, merged)
    if not any(s in STRATEGIES and STRATEGIES[s].reads_frozen_prefix for s in strategies):
        return set()
    values: set[Any] = set()
    domains = r.space.get("freeze_layers", [])
    for d in domains:
        if isinstance(d, Choice):
            values |= set(d.values)
        elif isinstance(d, IntRange):
            values |= set(range(int(d.low), int(d.high) + 1))
    if not domains or all(d.when for d in domains):
        values.add(merged.get("freeze_layers"))
    depths = {r.num_layers if v == "auto" else v for v in values}
    return {int(v) for v in depths if isinstance(v, int) and 1 <= v <= r.num_layers}


def _budget(r: ResolvedSweep, encoded: list[Any], console: Console) -> int:
    """Bytes the prefix cache may hold (0: off), with one line saying why."""
    from trainables.models import model_facts

    cache, depths = r.spec.cache, cacheable_depths(r)
    if not depths or cache.enabled is False:
        why = "cache.enabled: false" if depths else "no trial freezes blocks a cache could skip"
        console.print(styled(("prefix cache", "bold"), f" off ({why})"))
        return 0
    hidden = model_facts(r.spec.model).hidden_size
    train_bytes = 4 if cache.dtype == "fp32" else 2  # validation states are always fp32
    per_depth = sum(e.tokens("train") * train_bytes + e.tokens("validation") * 4 for e in encoded) * hidden
    estimate = per_depth * len(depths)
    limit = int(cache.max_gb * 1e9)
    what = (
        f"up to {disk_usage_line(estimate)} ({len(encoded)} template(s) x {len(depths)} depth(s), "
        f"training states in {cache.dtype})"
    )
    if cache.enabled == "auto" and estimate > limit:
        console.print(
            styled(
                ("prefix cache", "bold"),
                f" off: {what} exceeds cache.max_gb {cache.max_gb:g}; raise it, or set cache.enabled: true "
                "to store what fits",
            )
        )
        return 0
    console.print(styled(("prefix cache", "bold"), f" on: {what}, limit {cache.max_gb:g} GB"))
    return limit


def prepare_sweep_cache(r: ResolvedSweep, setup: TrialSetup, console: Console) -> TrialSetup:
    """Encode the templates, size the prefix cache; the trial setup with its budget filled in."""
    from trainables.config import TaskConfig

    task = TaskConfig.model_validate(setup.task)
    budget = _budget(r, _encode_templates(r, task, console), console)
    return replace(
        setup, task={**setup.task, "prefix_cache_bytes": budget, "prefix_cache_dtype": r.spec.cache.dtype}
    )


def drop_prefix_features(exp_path: str) -> int:
    """Delete the sweep's prefix features (after it finished); the bytes freed."""
    import pyarrow.fs as pafs

    from trainables.data import filesystem
    from trainables.stored import tree_bytes

    root = f"{exp_path.rstrip('/')}/cache/features"
    freed = tree_bytes(root)
    fs, path = filesystem(root)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
    return freed
