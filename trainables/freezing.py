"""Frozen-layer depth for lightweight fine-tuning of sequence-classification models.

``freeze_layers = k`` means:

* ``k == 0``: nothing is frozen (full fine-tuning);
* ``1 <= k <= n``: the embedding parameters and the bottom ``k`` transformer blocks get
  ``requires_grad=False``; upper blocks, final norms, pooler and classification head stay trainable.
  ``k == n`` leaves only the top (final norm / pooler / head) trainable.

Frozen modules run in **eval mode** (no dropout) even while the rest of the model trains: their outputs
are then a deterministic function of the input, which is what makes a frozen prefix cacheable. The
call overrides ``train()`` on each frozen module (embedding modules and the bottom ``k`` blocks), so a
later ``model.train()`` leaves them in eval mode; calling :func:`freeze_bottom_layers` again (any ``k``)
first removes those overrides.

``n`` is the model's number of transformer blocks (``model.config.num_hidden_layers``). The block list is found
generically, without a per-architecture table: it is the ``torch.nn.ModuleList`` inside ``model.base_model``
whose length equals ``n`` (the first one in ``named_modules()`` order). "Embedding parameters" are the
parameters of ``model.base_model`` registered before the first block parameter.

Contract for callers (the trainable): call :func:`freeze_bottom_layers` on the bare model *before*
``ray.train.torch.prepare_model`` / the ``DistributedDataParallel`` wrap. DDP decides which parameters it
reduces when it is built, so changing ``requires_grad`` afterwards breaks its bucket setup; a wrapped model is
not supported here.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import torch

from search_spaces.errors import UserError

__all__ = [
    "FreezeError",
    "LayerMap",
    "count_trainable_parameters",
    "freeze_bottom_layers",
    "frozen_modules",
    "head_parameter_names",
    "locate_layers",
    "resolve_depth",
]

_EVAL_MARK = "_orchestrator_frozen_eval"


class FreezeError(UserError):
    """One-line, user-facing message naming the model class and the fix."""


@dataclass(frozen=True)
class LayerMap:
    """Where a model's transformer blocks and embeddings are.

    ``blocks_path`` is the dotted path of the block ``ModuleList`` relative to the model (usable with
    ``model.get_submodule``); ``embedding_params`` are full names as yielded by ``model.named_parameters()``.
    """

    blocks_path: str
    num_blocks: int
    embedding_params: tuple[str, ...]


def locate_layers(model: torch.nn.Module) -> LayerMap:
    """Find the block list and the embedding parameters of ``model``, or raise :class:`FreezeError`.

    Raises when the model has no positive ``config.num_hidden_layers``, when no ``ModuleList`` inside the base
    model has exactly that many entries, or when the only match is nested inside another ``ModuleList``
    (grouped / shared blocks, e.g. ALBERT, where one list entry runs for several layers).
    """
    name = type(model).__name__
    unmappable = (
        f"freeze_layers cannot map {name}: freeze_layers needs a model with one transformer block per "
        f"layer; set freeze_layers to 0 (full fine-tuning) or pick another model"
    )
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise FreezeError(f"{unmappable} (no usable config.num_hidden_layers)")

    base = getattr(model, "base_model", model)
    base_prefix = next(path for path, module in model.named_modules() if module is base)
    lists = [(p, m) for p, m in base.named_modules(prefix=base_prefix) if isinstance(m, torch.nn.ModuleList)]
    list_paths = [p for p, _ in lists]
    candidates = [
        path
        for path, module in lists
        if len(module) == n and not any(path.startswith(f"{outer}.") for outer in list_paths)
    ]
    if not candidates:
        raise FreezeError(f"{unmappable} (no unshared list of {n} blocks found)")
    blocks_path = candidates[0]

    embeddings: list[str] = []
    for param_name, _ in base.named_parameters(prefix=base_prefix):
        if param_name.startswith(f"{blocks_path}."):
            break
        embeddings.append(param_name)
    else:  # blocks without parameters: nothing to freeze, and "before the first block" is meaningless
        raise FreezeError(f"{unmappable} (the blocks at {blocks_path} have no parameters)")
    return LayerMap(blocks_path=blocks_path, num_blocks=n, embedding_params=tuple(embeddings))


def count_trainable_parameters(model: torch.nn.Module) -> int:
    """Sum of ``numel`` over parameters with ``requires_grad``; a shared (tied) tensor is counted once."""
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for p in unique.values() if p.requires_grad)


def resolve_depth(k: int | str, model: torch.nn.Module) -> int:
    """``freeze_layers`` as an int: ``auto`` is the model's layer count (``config.num_hidden_layers``)."""
    if k == "auto":
        n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if not isinstance(n, int) or isinstance(n, bool):
            raise FreezeError(f"freeze_layers=auto: {type(model).__name__} has no config.num_hidden_layers")
        return n
    return k  # type: ignore[return-value]


def head_parameter_names(model: torch.nn.Module) -> list[str]:
    """Parameters outside ``model.base_model``: the classification head (always trained)."""
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    prefix = next(path for path, module in model.named_modules() if module is base)
    return [n for n, _ in model.named_parameters() if not n.startswith(f"{prefix}.")]


def frozen_modules(model: torch.nn.Module, k: int) -> list[torch.nn.Module]:
    """The modules of the frozen prefix: everything the base model runs before its first block
    (embeddings, embedding dropout), then the bottom ``k`` blocks. Empty for ``k == 0``."""
    if k == 0:
        return []
    layer_map = locate_layers(model)
    blocks = model.get_submodule(layer_map.blocks_path)
    ancestors = {
        layer_map.blocks_path.rsplit(".", i)[0] for i in range(1, layer_map.blocks_path.count(".") + 1)
    }
    base = getattr(model, "base_model", model)
    base_prefix = next(path for path, module in model.named_modules() if module is base)
    before: list[torch.nn.Module] = []
    for path, module in base.named_children():
        full = f"{base_prefix}.{path}" if base_prefix else path
        if full == layer_map.blocks_path or full in ancestors:
            break
        before.append(module)
    return before + list(blocks)[:k]


def _always_eval(self: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(self, False)


def _set_frozen_eval(model: torch.nn.Module, modules: list[torch.nn.Module]) -> None:
    for module in model.modules():  # forget a previous freeze (any k)
        if module.__dict__.pop(_EVAL_MARK, False):
            module.__dict__.pop("train", None)
    for module in {id(m): m for top in modules for m in top.modules()}.values():
        # every submodule too: wrappers (peft) may hold a frozen submodule directly as their child
        module.__dict__["train"] = _always_eval.__get__(module)
        module.__dict__[_EVAL_MARK] = True
        torch.nn.Module.train(module, False)


def freeze_bottom_layers(model: torch.nn.Module, k: int | str) -> int:
    """Freeze the embeddings and the bottom ``k`` blocks of ``model``; return the trainable parameter count.

    ``k`` is an int in ``0..n`` inclusive (``n`` = number of blocks). The call first sets ``requires_grad=True``
    on *every* parameter, so it owns ``requires_grad`` for the whole model, is idempotent, and can be called
    again with another ``k``. ``k == 0`` never raises for a valid int, even on a model that cannot be mapped.

    Called by the trainable on the bare model before ``prepare_model`` / the DDP wrap (see module docstring).
    Raises :class:`FreezeError` (leaving the model untouched) when ``k`` is not an int in range or the
    architecture cannot be mapped.
    """
    name = type(model).__name__
    k = resolve_depth(k, model)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise FreezeError(f"freeze_layers={k!r} for {name} must be an integer (0 = full fine-tuning) or auto")
    k = int(k)
    if k == 0:
        model.requires_grad_(True)
        _set_frozen_eval(model, [])
        return count_trainable_parameters(model)

    layer_map = locate_layers(model)
    n = layer_map.num_blocks
    if not 0 <= k <= n:
        raise FreezeError(f"freeze_layers={k} is out of range for {name}: it has {n} blocks; use 0..{n}")

    model.requires_grad_(True)  # validated: only now touch the model, so a rejected call changes nothing
    params = dict(model.named_parameters())
    for param_name in layer_map.embedding_params:
        params[param_name].requires_grad_(False)
    blocks = model.get_submodule(layer_map.blocks_path)
    for block in list(blocks)[:k]:
        block.requires_grad_(False)
    _set_frozen_eval(model, frozen_modules(model, k))
    return count_trainable_parameters(model)
