"""Frozen-layer depth (trainables.freezing) on tiny random-weight models built from configs (no hub access)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import transformers as hf

from trainables.freezing import (
    FreezeError,
    LayerMap,
    count_trainable_parameters,
    freeze_bottom_layers,
    locate_layers,
)

SIZES = dict(
    hidden_size=32, num_attention_heads=4, intermediate_size=37, vocab_size=100, max_position_embeddings=64
)
NUM_LABELS = 3


@dataclass(frozen=True)
class Case:
    id: str
    model_cls: type
    config_cls: type
    config: dict[str, Any]  # must produce config.num_hidden_layers == n
    n: int
    blocks_path: str
    embeddings: tuple[str, ...]  # expected embedding parameter names, in named_parameters() order
    head: str  # prefix of the classification head's parameters (always trainable)

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return self.model_cls(self.config_cls(**self.config, num_labels=NUM_LABELS))


def _bert_like(prefix: str, order: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{prefix}.embeddings.{name}" for name in order)


BERT_EMB = (
    "word_embeddings.weight",
    "position_embeddings.weight",
    "token_type_embeddings.weight",
    "LayerNorm.weight",
    "LayerNorm.bias",
)
# RoBERTa registers position_embeddings *after* LayerNorm in transformers 5.x; still before the blocks.
ROBERTA_EMB = (
    "word_embeddings.weight",
    "token_type_embeddings.weight",
    "LayerNorm.weight",
    "LayerNorm.bias",
    "position_embeddings.weight",
)

CASES = [
    Case(
        "bert",
        hf.BertForSequenceClassification,
        hf.BertConfig,
        dict(SIZES, num_hidden_layers=2),
        2,
        "bert.encoder.layer",
        _bert_like("bert", BERT_EMB),
        "classifier.",
    ),
    Case(
        "bert-3",
        hf.BertForSequenceClassification,
        hf.BertConfig,
        dict(SIZES, num_hidden_layers=3),
        3,
        "bert.encoder.layer",
        _bert_like("bert", BERT_EMB),
        "classifier.",
    ),
    Case(
        "roberta",
        hf.RobertaForSequenceClassification,
        hf.RobertaConfig,
        dict(SIZES, num_hidden_layers=2, pad_token_id=1),
        2,
        "roberta.encoder.layer",
        _bert_like("roberta", ROBERTA_EMB),
        "classifier.",
    ),
    # DistilBERT and GPT-2 use their own field names; attribute_map exposes them as num_hidden_layers.
    Case(
        "distilbert",
        hf.DistilBertForSequenceClassification,
        hf.DistilBertConfig,
        dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=100, max_position_embeddings=64),
        2,
        "distilbert.transformer.layer",
        _bert_like(
            "distilbert",
            ("word_embeddings.weight", "position_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"),
        ),
        "classifier.",
    ),
    Case(
        "gpt2",
        hf.GPT2ForSequenceClassification,
        hf.GPT2Config,
        dict(
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_inner=37,
            vocab_size=100,
            n_positions=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        ),
        2,
        "transformer.h",
        ("transformer.wte.weight", "transformer.wpe.weight"),
        "score.",
    ),
    Case(
        "llama",
        hf.LlamaForSequenceClassification,
        hf.LlamaConfig,
        dict(SIZES, num_hidden_layers=2, num_key_value_heads=2, pad_token_id=0),
        2,
        "model.layers",
        ("model.embed_tokens.weight",),
        "score.",
    ),
]
CASE_K = [pytest.param(c, k, id=f"{c.id}-k{k}") for c in CASES for k in range(c.n + 1)]
ALBERT = dict(SIZES, num_hidden_layers=2, embedding_size=16, num_hidden_groups=1, num_labels=NUM_LABELS)


def _expected_frozen(case: Case, k: int) -> set[str]:
    if k == 0:
        return set()
    blocks = {f"{case.blocks_path}.{i}." for i in range(k)}
    return set(case.embeddings) | {
        name for name, _ in case.build().named_parameters() if any(name.startswith(b) for b in blocks)
    }


def _batch(case: Case) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 100, (2, 8), generator=gen)  # avoid pad/bos ids so every row ends in a real token
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 2])}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_locate_layers(case: Case) -> None:
    model = case.build()
    assert model.config.num_hidden_layers == case.n
    layer_map = locate_layers(model)
    assert layer_map == LayerMap(case.blocks_path, case.n, case.embeddings)
    assert len(model.get_submodule(layer_map.blocks_path)) == case.n


@pytest.mark.parametrize(("case", "k"), CASE_K)
def test_freeze_exact_params_and_backward(case: Case, k: int) -> None:
    model = case.build()
    trainable = freeze_bottom_layers(model, k)
    assert trainable == count_trainable_parameters(model)

    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == _expected_frozen(case, k)
    assert any(name.startswith(case.head) for name, p in model.named_parameters() if p.requires_grad)

    model.train()
    model(**_batch(case)).loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_trainable_count_strictly_decreases_and_refreeze_is_idempotent(case: Case) -> None:
    model = case.build()
    total = sum(p.numel() for p in model.parameters())
    counts = [freeze_bottom_layers(model, k) for k in range(case.n + 1)]
    assert counts[0] == total
    assert all(a > b for a, b in zip(counts, counts[1:], strict=False)), counts
    assert counts[-1] == sum(
        p.numel()
        for n, p in model.named_parameters()
        if not n.startswith((case.blocks_path + ".", *case.embeddings))
    )  # k=n: only the top (final norm/pooler/head) is left

    assert freeze_bottom_layers(model, 2) == counts[2]
    assert freeze_bottom_layers(model, 2) == counts[2]  # same k twice: same result
    assert freeze_bottom_layers(model, 0) == total
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("bad", ["below", "above"])
def test_out_of_range_k_raises_and_leaves_model_untouched(case: Case, bad: str) -> None:
    model = case.build()
    before = freeze_bottom_layers(model, 1)
    k = -1 if bad == "below" else case.n + 1
    with pytest.raises(FreezeError, match=case.model_cls.__name__) as err:
        freeze_bottom_layers(model, k)
    assert str(err.value) == (
        f"freeze_layers={k} is out of range for {case.model_cls.__name__}: "
        f"it has {case.n} blocks; use 0..{case.n}"
    )
    assert count_trainable_parameters(model) == before


@pytest.mark.parametrize("k", [1.0, "1", True, None])
def test_non_int_k_raises(k: object) -> None:
    with pytest.raises(FreezeError, match="BertForSequenceClassification"):
        freeze_bottom_layers(CASES[0].build(), k)  # type: ignore[arg-type]


def test_numpy_int_k_is_accepted() -> None:
    # Tune / Optuna categorical samples can arrive as numpy integers.
    model = CASES[0].build()
    assert freeze_bottom_layers(model, np.int64(1)) == freeze_bottom_layers(CASES[0].build(), 1)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="one-shared-group"),
        # the group's inner list has 2 == num_hidden_layers entries, but the whole group runs on every layer
        pytest.param({"inner_group_num": 2}, id="nested-inner-list"),
    ],
)
def test_albert_shared_blocks_cannot_be_mapped(extra: dict[str, int]) -> None:
    torch.manual_seed(0)
    model = hf.AlbertForSequenceClassification(hf.AlbertConfig(**ALBERT, **extra))
    total = sum(p.numel() for p in model.parameters())
    for call in (lambda: locate_layers(model), lambda: freeze_bottom_layers(model, 1)):
        with pytest.raises(
            FreezeError, match="AlbertForSequenceClassification.*one transformer block per layer"
        ):
            call()
    assert count_trainable_parameters(model) == total
    assert freeze_bottom_layers(model, 0) == total  # k=0: nothing to freeze, no error


def test_count_trainable_parameters_counts_tied_tensors_once() -> None:
    model = torch.nn.ModuleDict(
        {"a": torch.nn.Linear(4, 4, bias=False), "b": torch.nn.Linear(4, 4, bias=False)}
    )
    model["b"].weight = model["a"].weight
    model["c"] = torch.nn.Linear(4, 2)
    model["c"].bias.requires_grad_(False)
    assert count_trainable_parameters(model) == 16 + 8


def test_first_matching_list_in_module_order_wins() -> None:
    # A plain module (no base_model) with a second, later ModuleList of the same length (e.g. adapters).
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.config = SimpleNamespace(num_hidden_layers=2)
    model.emb = torch.nn.Embedding(10, 4)
    model.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
    model.adapters = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))
    assert locate_layers(model) == LayerMap("blocks", 2, ("emb.weight",))
    assert freeze_bottom_layers(model, 2) == 2 * (16 + 4)  # only the adapters stay trainable
