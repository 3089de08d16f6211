"""Lightweight fine-tuning strategies: what is trained above the frozen prefix.

One module per strategy, each registering itself by name (as ``peft`` registers its tuners):

* ``full``   all parameters above the frozen prefix (``freeze_layers: auto`` + ``full`` = head only);
* ``bitfit`` bias terms above the prefix + the head;
* ``lora``   low-rank adapters (``peft``) on the attention/MLP projections of the blocks above the
  prefix + the head;
* ``prompt`` trainable soft-prompt tokens (``peft`` prompt tuning) + the head; encoder frozen.

Adding a strategy = one module with a :class:`Strategy` subclass + one import line below. Every
registered strategy runs through the contract suite in ``tests/test_strategies.py``.
"""

from trainables.strategies._base import (  # noqa: I001  (registration order = display order)
    STRATEGIES,
    Strategy,
    StrategyError,
    get_strategy,
    register_strategy,
    unwrap,
)
from trainables.strategies import full, bitfit, lora, prompt  # noqa: F401  (registration)

__all__ = ["STRATEGIES", "Strategy", "StrategyError", "get_strategy", "register_strategy", "unwrap"]
