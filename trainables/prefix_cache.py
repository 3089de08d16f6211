"""Frozen-prefix features, once per sweep: a trial with k frozen blocks starts its forward pass at block k.

With ``freeze_layers = k`` the embeddings and the bottom ``k`` blocks are frozen and run in eval
mode (``trainables.freezing``), so the hidden states after block ``k - 1`` are a pure function of
(the base weights, the encoded inputs, ``k``). They are computed once per key, stored in the
sweep's cache (``<cache_dir>/features/<key>.safetensors``) and read by every later trial (and
rank) with the same key. The trial then skips its frozen blocks: :class:`PrefixFeed` makes
blocks ``0 .. k-2`` pass their input through and block ``k - 1`` return the stored states, so
only the blocks above the prefix, the pooling and the head run, in every epoch. With
``k`` = the layer count (head only) that is pooling + head on the stored last hidden states.

* Key: sha256 of (the base file's sha256, which covers embeddings and every block; the
  encoded-splits key, which covers template, tokenizer, max_length, labels, data and seed;
  ``k``; the evaluation batch size). States are computed and stored in fp32.
* A trial whose depth has no stored entry starts from the deepest stored one below it and
  computes only the blocks in between.
* Validation states are computed in the evaluation batches (same order, same padding) that
  evaluation uses without the cache, so a trial's logged metrics are reproduced exactly by a
  full forward pass (what promotion checks).
* Not cached: ``prompt`` trials (the soft prompt changes every block's input: the strategy's
  ``reads_frozen_prefix`` is False), ``k = 0``, blocks that return more than a tensor.
* One writer: an entry is written under ``stored.write_lock`` (``flock`` locally, claim objects
  on object storage; a second trial waits, then reads);
  entries are written atomically and only while the cache stays under ``max_bytes``.
* Readers memory-map an entry (``stored.local_copy``; from object storage, one copy per machine):
  a DDP rank reads only the rows of its shard's batches, and the ranks and trials of a machine
  share those pages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from trainables.freezing import locate_layers
from trainables.metrics import collate
from trainables.stored import exists, local_copy, put_once, tree_bytes, write_lock

__all__ = ["CacheUse", "Features", "PrefixFeed", "compute_features", "feature_key", "prefix_features"]

FORMAT = 1
SPLITS = ("train", "validation")


@dataclass
class Features:
    """Stored hidden states of one split: rows ``offsets[i]:offsets[i+1]`` of ``hidden`` are example ``i``."""

    hidden: torch.Tensor  # [total tokens, hidden size]
    offsets: torch.Tensor  # [examples + 1], int64

    def batch(self, index: torch.Tensor, width: int) -> torch.Tensor:
        """``[len(index), width, hidden]``: the examples' states, right-padded with zeros."""
        out = torch.zeros((len(index), width, self.hidden.shape[1]), dtype=self.hidden.dtype)
        for row, i in enumerate(index.tolist()):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            out[row, : end - start] = self.hidden[start:end]
        return out


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    from trainables.strategies import unwrap

    inner = unwrap(model)
    return list(inner.get_submodule(locate_layers(inner).blocks_path))


def _passthrough(*args: Any, **kwargs: Any) -> Any:
    return args[0] if args else kwargs["hidden_states"]


class PrefixFeed:
    """Skip the bottom ``depth`` blocks of ``model``; block ``depth - 1`` returns :attr:`current`.

    Call :meth:`load` with the batch's split and example indices before each forward pass.
    """

    def __init__(self, model: torch.nn.Module, depth: int, features: dict[str, Features]):
        self.depth, self.features = depth, features
        self.current: torch.Tensor | None = None
        self._blocks = _blocks(model)[:depth]
        for i, block in enumerate(self._blocks):
            block.forward = self._inject if i == depth - 1 else _passthrough

    def _inject(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        hidden = _passthrough(*args, **kwargs)
        assert self.current is not None, "PrefixFeed.load() was not called before the forward pass"
        return self.current.to(device=hidden.device, dtype=hidden.dtype)

    def load(self, split: str, index: torch.Tensor, width: int) -> None:
        self.current = self.features[split].batch(index, width)

    def remove(self) -> None:
        for block in self._blocks:
            block.__dict__.pop("forward", None)


class _Stop(Exception):
    """Raised from the hook on the last frozen block: nothing above it is needed."""


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    examples: list,
    depth: int,
    *,
    batch_size: int,
    pad_id: int,
    device: Any,
    start: tuple[int, Features] | None = None,
) -> Features | None:
    """The states after block ``depth - 1`` for ``(ids, label, index)`` examples, in order.

    ``start = (j, features)`` resumes from stored states after block ``j - 1`` (only blocks
    ``j .. depth-1`` run). None when the blocks do not return a plain tensor.
    """
    blocks = _blocks(model)
    captured: list[torch.Tensor] = []

    def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(type(out).__name__)
        captured.append(out)
        raise _Stop

    feed = PrefixFeed(model, start[0], {"examples": start[1]}) if start else None
    handle = blocks[depth - 1].register_forward_hook(hook)
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    try:
        # its own generator: a DataLoader iterator draws a seed, which would shift the trial's
        # dropout draws against a run without the cache
        loader = DataLoader(
            examples, batch_size=batch_size, collate_fn=collate(pad_id), generator=torch.Generator()
        )
        for batch in loader:
            index = batch.pop("index")
            if feed is not None:
                feed.load("examples", index, batch["input_ids"].shape[1])
            with contextlib.suppress(_Stop):  # the hook stops the forward pass after the prefix
                model(
                    input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
                )
            hidden = captured.pop().float().cpu()
            for row, n in enumerate(batch["attention_mask"].sum(1).tolist()):
                rows.append(hidden[row, :n])
    except TypeError:
        return None
    finally:
        handle.remove()
        if feed is not None:
            feed.remove()
        model.train(was_training)
    lengths = torch.tensor([0] + [r.shape[0] for r in rows], dtype=torch.int64)
    return Features(torch.cat(rows), lengths.cumsum(0))


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def feature_key(
    base_sha256: str, tokens_key: str, depth: int, eval_batch: int, train_dtype: str = "fp32"
) -> str:
    parts: dict[str, Any] = {
        "format": FORMAT,
        "base": base_sha256,
        "tokens": tokens_key,
        "depth": depth,
        "eval_batch": eval_batch,
    }
    if train_dtype != "fp32":  # fp32 entries keep the keys they had before the choice existed
        parts["train_dtype"] = train_dtype
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _save(features: dict[str, Features], uri: str) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for split, f in features.items():
        tensors[f"{split}.hidden"], tensors[f"{split}.offsets"] = f.hidden.contiguous(), f.offsets
    with tempfile.TemporaryDirectory(prefix="features-") as tmp:
        local = Path(tmp, "features.safetensors")
        save_file(tensors, str(local), metadata={"format": str(FORMAT)})
        put_once(local, uri)


def _load(uri: str) -> dict[str, Features]:
    """The entry memory-mapped: a process reads only the rows its batches take (a DDP rank, its
    shard), and the processes of a machine share those pages (remote entries: one copy per machine)."""
    from safetensors.torch import load_file

    tensors = load_file(str(local_copy(uri)))
    return {s: Features(tensors[f"{s}.hidden"], tensors[f"{s}.offsets"]) for s in SPLITS}


@dataclass
class CacheUse:
    """What a trial got from the cache: the features of its depth and the depth it read."""

    features: dict[str, Features]
    read_depth: int  # depth of the stored entry it started from; 0 = computed from the input


def prefix_features(
    model: torch.nn.Module,
    splits: dict[str, list],
    depth: int,
    *,
    cache_dir: str,
    max_bytes: int,
    key_of: Any,
    batch_size: int,
    pad_id: int,
    device: Any,
    train_dtype: str = "fp32",
) -> CacheUse | None:
    """Features after block ``depth - 1`` for both splits: read, extended from a shallower entry, or computed.

    ``key_of(j)`` is the cache key at depth ``j``. Stores the result when the cache has room.
    The training split's states are kept in ``train_dtype`` (fp32, bf16 or fp16: rounded once,
    read back into the model's dtype); validation's stay fp32, so an evaluation through the cache
    equals a full forward pass.
    """
    root = f"{cache_dir.rstrip('/')}/features"
    uri = f"{root}/{key_of(depth)}.safetensors"
    with write_lock(uri):
        if exists(uri):
            return CacheUse(_load(uri), depth)
        below = next((j for j in range(depth - 1, 0, -1) if exists(f"{root}/{key_of(j)}.safetensors")), 0)
        stored = _load(f"{root}/{key_of(below)}.safetensors") if below else {}
        features: dict[str, Features] = {}
        for split in SPLITS:
            start = (below, stored[split]) if below else None
            got = compute_features(
                model, splits[split], depth, batch_size=batch_size, pad_id=pad_id, device=device, start=start
            )
            if got is None:
                return None
            rounded = split == "train" and train_dtype != "fp32"
            features[split] = Features(got.hidden.to(DTYPES[train_dtype]), got.offsets) if rounded else got
        size = sum(f.hidden.numel() * f.hidden.element_size() for f in features.values())
        if tree_bytes(root) + size <= max_bytes:
            _save(features, uri)
    return CacheUse(features, below)
