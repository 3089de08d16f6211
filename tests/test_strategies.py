"""Contract suite: every registered strategy x every supported architecture x both poolings.

Tiny random models built from configs (no hub). What each strategy is *meant* to train is
written here independently of its implementation (``INTENDED``): a new strategy fails this
suite until its intent is added to the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import transformers as hf

from tests.test_freezing import SIZES  # the tiny-model sizes the freezing tests use
from trainables.checkpoints import load_classifier, save_checkpoint, write_standalone
from trainables.config import Hyperparameters
from trainables.freezing import (
    count_trainable_parameters,
    frozen_modules,
    head_parameter_names,
    locate_layers,
)
from trainables.models import classifier_from_config, load_tokenizer
from trainables.strategies import STRATEGIES, StrategyError, get_strategy, unwrap

N = 2  # blocks in every tiny model


@dataclass(frozen=True)
class Arch:
    id: str
    make: Any  # () -> config with 3 labels

    def config(self):
        config = self.make()
        config.num_labels = 3
        return config


ARCHS = [
    Arch("bert", lambda: hf.BertConfig(**SIZES, num_hidden_layers=N)),
    Arch("roberta", lambda: hf.RobertaConfig(**SIZES, num_hidden_layers=N, pad_token_id=1)),
    Arch(
        "distilbert",
        lambda: hf.DistilBertConfig(
            dim=32, n_heads=4, hidden_dim=37, n_layers=N, vocab_size=100, max_position_embeddings=64
        ),
    ),
    Arch(
        "gpt2",
        lambda: hf.GPT2Config(
            n_embd=32,
            n_head=4,
            n_layer=N,
            vocab_size=100,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
    Arch(
        "llama",
        lambda: hf.LlamaConfig(
            **SIZES,
            num_hidden_layers=N,
            num_key_value_heads=2,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        ),
    ),
]
# What no strategy can do on some architecture; validate must say so before Ray starts.
UNSUPPORTED = {("llama", "bitfit"): "no bias terms"}
DEPTH = {"full": 1, "bitfit": 1, "lora": 1, "prompt": "auto"}  # freeze_layers each strategy is checked with


def _prefix_names(model: torch.nn.Module, k: int) -> set[str]:
    layer_map = locate_layers(model)
    names = set(layer_map.embedding_params)
    for name, _ in model.named_parameters():
        for i in range(k):
            if name.startswith(f"{layer_map.blocks_path}.{i}."):
                names.add(name)
    return names


def _intended(strategy: str, bare: torch.nn.Module, trained: torch.nn.Module, k: int) -> set[str]:
    """Names (in ``trained``) of the parameters ``strategy`` is meant to train; ``bare`` = before apply."""
    head = set(head_parameter_names(bare))
    prefix = _prefix_names(bare, k)
    names = {n for n, _ in trained.named_parameters()}
    upper_blocks = [f"{locate_layers(bare).blocks_path}.{i}." for i in range(k, N)]
    if strategy == "full":
        return {n for n, _ in bare.named_parameters()} - prefix
    if strategy == "bitfit":
        return {
            n for n, _ in bare.named_parameters() if n not in prefix and (n.endswith("bias") or n in head)
        }
    if strategy == "lora":
        adapters = {n for n in names if "lora_" in n and any(b in n for b in upper_blocks)}
        return adapters | {n for n in names if any(n.endswith(f"model.{h}") for h in head)}
    if strategy == "prompt":
        prompt = {n for n in names if n.startswith("prompt_encoder.")}
        return prompt | {n for n in names if ".modules_to_save." in n}
    raise KeyError(f"add what strategy '{strategy}' is meant to train to tests/test_strategies.py")


def _cases():
    for arch in ARCHS:
        for strategy in STRATEGIES:
            for pooling in ("cls", "mean"):
                yield pytest.param(arch, strategy, pooling, id=f"{arch.id}-{strategy}-{pooling}")


def _build(arch: Arch, pooling: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return classifier_from_config(arch.config(), pooling)


def _cfg(strategy: str, **extra) -> Hyperparameters:
    return Hyperparameters(
        strategy=strategy, freeze_layers=DEPTH[strategy], prompt_tokens=4, lora_r=4, **extra
    )


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # right padding, as the collate function pads
    ids[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 2, 1])}


def _snapshot(model: torch.nn.Module) -> dict[str, Any]:
    return {
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [type(m).__name__ for m in model.modules()],
        "overrides": [("train" in m.__dict__) for m in model.modules()],
    }


def _applied(arch, strategy, pooling):
    if (arch.id, strategy) in UNSUPPORTED:
        pytest.skip(f"{strategy} does not apply to {arch.id} (checked in test_unsupported_is_reported)")
    bare = _build(arch, pooling)
    reference = _build(arch, pooling)  # an untouched twin, for parameter names
    return reference, get_strategy(strategy).apply(bare, _cfg(strategy))


@pytest.mark.parametrize(("arch", "strategy", "pooling"), _cases())
def test_bad_input_is_rejected_with_the_model_untouched(arch, strategy, pooling):
    model = _build(arch, pooling)
    before = _snapshot(model)
    for bad in (N + 1, 0 if strategy == "prompt" else None):
        if bad is None:
            continue
        cfg = _cfg(strategy).model_copy(update={"freeze_layers": bad})
        assert get_strategy(strategy).validate(model, cfg), bad
        with pytest.raises(StrategyError, match="freeze_layers"):
            get_strategy(strategy).apply(model, cfg)
    after = _snapshot(model)
    assert before["grad"] == after["grad"] and before["modules"] == after["modules"]
    assert before["overrides"] == after["overrides"]
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


@pytest.mark.parametrize(("arch", "strategy", "pooling"), _cases())
def test_apply_twice_is_idempotent(arch, strategy, pooling):
    _, model = _applied(arch, strategy, pooling)
    before = _snapshot(model)
    again = get_strategy(strategy).apply(model, _cfg(strategy))
    assert again is model
    after = _snapshot(again)
    assert before["grad"] == after["grad"] and before["modules"] == after["modules"]


@pytest.mark.parametrize(("arch", "strategy", "pooling"), _cases())
def test_only_intended_parameters_get_gradients_and_the_count_matches(arch, strategy, pooling):
    bare, model = _applied(arch, strategy, pooling)
    k = N if DEPTH[strategy] == "auto" else DEPTH[strategy]
    model.train()
    model(**_batch()).loss.backward()
    graded = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    intended = _intended(strategy, bare, model, k)
    assert trainable == intended
    assert graded <= trainable
    assert len(graded) >= 0.5 * len(trainable)  # zero-initialised LoRA B leaves A without gradient at step 0
    params = dict(model.named_parameters())
    assert count_trainable_parameters(model) == sum(params[n].numel() for n in intended)


@pytest.mark.parametrize(("arch", "strategy", "pooling"), _cases())
def test_frozen_prefix_runs_in_eval_mode(arch, strategy, pooling):
    _, model = _applied(arch, strategy, pooling)
    k = N if DEPTH[strategy] == "auto" else DEPTH[strategy]
    inner = unwrap(model)
    model.train()
    frozen = frozen_modules(inner, k)
    assert frozen and all(not m.training for f in frozen for m in f.modules())
    outputs = []
    handle = frozen[-1].register_forward_hook(
        lambda m, args, out: outputs.append(out[0] if isinstance(out, tuple) else out)
    )
    try:
        torch.manual_seed(0)
        model(**_batch())
        torch.manual_seed(1)  # another dropout draw: a frozen prefix must not notice
        model(**_batch())
    finally:
        handle.remove()
    assert torch.equal(outputs[0], outputs[1])


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:minilm-l6")


@pytest.mark.parametrize(("arch", "strategy", "pooling"), _cases())
def test_checkpoint_round_trip_reproduces_the_logits(arch, strategy, pooling, tokenizer, tmp_path):
    _, model = _applied(arch, strategy, pooling)
    cfg = _cfg(strategy, pooling=pooling)
    with torch.no_grad():  # train a little, so the head and adapters are not at their init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    with torch.no_grad():
        expected = model(**_batch()).logits
    save_checkpoint(
        tmp_path / "ckpt",
        model=model,
        tokenizer=tokenizer,
        trial_info={"hyperparameters": cfg.for_trial(), "merged": False},
        resume_state=None,
    )
    loaded = load_classifier(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(loaded(**_batch()).logits, expected)
    merged = write_standalone(tmp_path / "ckpt", tmp_path / "export")
    assert merged == (strategy == "lora")
    exported = load_classifier(tmp_path / "export")
    assert not any("lora_" in n for n, _ in exported.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(exported(**_batch()).logits, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("arch_id", "strategy"), list(UNSUPPORTED))
def test_unsupported_is_reported(arch_id, strategy):
    arch = next(a for a in ARCHS if a.id == arch_id)
    problems = get_strategy(strategy).validate(_build(arch, "cls"), _cfg(strategy))
    assert problems and UNSUPPORTED[(arch_id, strategy)] in problems[0]


def test_lora_without_projection_modules_is_reported():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = torch.nn.LayerNorm(8)

    class Base(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 8)
            self.layers = torch.nn.ModuleList([Block(), Block()])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2})()
            self.base_model = Base()
            self.classifier = torch.nn.Linear(8, 2)

    problems = get_strategy("lora").validate(Model(), _cfg("lora"))
    assert problems and "no attention/MLP projection" in problems[0] and "full or bitfit" in problems[0]


def test_sub_knobs_are_owned_by_registered_strategies():
    from trainables.config import STRATEGY_NAMES, SUBKNOB_OWNERS

    owned = {k: s.name for s in STRATEGIES.values() for k in s.knobs}
    assert owned == SUBKNOB_OWNERS
    assert tuple(STRATEGIES) == STRATEGY_NAMES, "list the new strategy in trainables.config.STRATEGY_NAMES"
    assert set(DEPTH) == set(STRATEGIES), "add the new strategy's freeze_layers to DEPTH"
