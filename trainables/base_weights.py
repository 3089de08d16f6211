"""Delta checkpoints: a trial stores what it trained; the frozen base is stored once per sweep.

The *base* of a model is its embedding parameters and every tensor of its transformer blocks,
as built from the model source (before any training). It is written once per sweep, named by
the sha256 of its safetensors file (``<base_dir>/<sha256>.safetensors``), and shared by every
trial built from the same weights, whatever it freezes (trials that train some base tensors
store those themselves).

A checkpoint then holds the *delta*: every state-dict entry that is not a frozen base tensor
(the head, unfrozen blocks, adapters, soft prompts, and anything the strategy added), plus a
:class:`StoredRef` in ``trial.json``. Which entries come from the base is decided by tensor
identity, before and after the strategy wraps the model, so ``peft``'s renamed keys
(``base_model.model.…``, ``….base_layer.weight``) need no name mapping.

A model with no frozen base tensor (``full`` with ``freeze_layers: 0``) or one whose blocks
cannot be located gets no base: its checkpoint holds everything, as before.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainables.data import file_sha256
from trainables.freezing import FreezeError, locate_layers
from trainables.stored import StoredFileError, StoredRef, fetch, put_once

__all__ = ["DeltaPlan", "base_names", "check_complete", "load_base", "plan_delta", "write_base"]


def base_names(model: torch.nn.Module) -> list[str]:
    """State-dict names of the base (embedding parameters, block tensors) of an *unwrapped* model."""
    try:
        layer_map = locate_layers(model)
    except FreezeError:
        return []
    embeddings = set(layer_map.embedding_params)
    prefix = f"{layer_map.blocks_path}."
    return [n for n in model.state_dict(keep_vars=True) if n in embeddings or n.startswith(prefix)]


def _storage(tensor: torch.Tensor) -> tuple[int, int, tuple[int, ...]]:
    """What tied aliases share: the same storage, offset and shape."""
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)


@dataclass
class DeltaPlan:
    """Which state-dict entries of the model to train are frozen base tensors (not saved per epoch)."""

    from_base: set[str] = field(default_factory=set)  # keys of the (wrapped) model
    ref: StoredRef | None = None

    def state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: every entry but the frozen base ones, one name per shared tensor."""
        out: dict[str, torch.Tensor] = {}
        seen: set[tuple[int, int, tuple[int, ...]]] = set()
        for name, tensor in sorted(model.state_dict(keep_vars=True).items()):
            if self.ref is not None and name in self.from_base:
                continue
            key = _storage(tensor)
            if key in seen:
                continue  # a tied alias: loading assigns it through the module that owns it
            seen.add(key)
            out[name] = tensor.detach().cpu().contiguous()
        return out


def plan_delta(
    unwrapped: torch.nn.Module, apply: Any
) -> tuple[torch.nn.Module, DeltaPlan, dict[str, torch.Tensor]]:
    """Apply the strategy (``apply(model) -> model``) and record which entries are frozen base tensors.

    Returns the model to train, its plan, and the base tensors as built (taken before ``apply``,
    which may rename modules): what :func:`write_base` stores.
    """
    names = base_names(unwrapped)
    state = unwrapped.state_dict(keep_vars=True)
    base = {n: state[n] for n in names}
    ids = {id(t): n for n, t in base.items()}
    model = apply(unwrapped)
    frozen = {
        key
        for key, tensor in model.state_dict(keep_vars=True).items()
        if id(tensor) in ids and not tensor.requires_grad
    }
    return model, DeltaPlan(from_base=frozen), base


def write_base(base: dict[str, torch.Tensor], base_dir: str) -> StoredRef:
    """Store the base tensors (as built, untrained) under ``base_dir`` once; their reference."""
    from safetensors.torch import save_file

    tensors = {n: t.detach().cpu().contiguous() for n, t in base.items()}
    with tempfile.TemporaryDirectory(prefix="base-") as tmp:
        local = Path(tmp, "base.safetensors")
        save_file(tensors, str(local), metadata={"format": "pt"})
        digest = file_sha256(local)
        uri = f"{base_dir.rstrip('/')}/{digest}.safetensors"
        put_once(local, uri)
    return StoredRef(digest, uri)


def load_base(unwrapped: torch.nn.Module, ref: StoredRef) -> None:
    """Load the base tensors into an *unwrapped* model; they must be exactly its base names."""
    from safetensors.torch import load_file

    tensors = load_file(str(fetch(ref.uri, ref.sha256)))
    expected = set(base_names(unwrapped))
    if set(tensors) != expected:
        odd = sorted(set(tensors) ^ expected)[:3]
        raise StoredFileError(f"{ref.uri}: base weights do not fit this model (e.g. {', '.join(odd)})")
    unwrapped.load_state_dict(tensors, strict=False)


def check_complete(model: torch.nn.Module, loaded: set[str], plan: DeltaPlan) -> list[str]:
    """State-dict keys of ``model`` that neither the delta nor the base provided (tied aliases excepted)."""
    state = model.state_dict(keep_vars=True)
    provided = {k for k in state if k in loaded or k in plan.from_base}
    covered = {_storage(state[k]) for k in provided}
    return [k for k, t in state.items() if k not in provided and _storage(t) not in covered]
