"""Frozen-prefix features: a trial reading stored states computes what it would have computed.

Every architecture x pooling x strategy that reads the frozen prefix (tiny models of the
contract suite), at depth 1 and at the layer count (head only): the same evaluation metrics
bit for bit, the same training losses to float tolerance; entries are stored once, reused,
extended from a shallower depth, and not written past the size limit.
"""

from __future__ import annotations

import pytest
import torch

from tests.test_strategies import ARCHS, UNSUPPORTED, N, _build, _cfg
from trainables.device import grad_scaler
from trainables.freezing import frozen_modules
from trainables.loop import make_optimizer, train_epoch
from trainables.metrics import collate, evaluate
from trainables.prefix_cache import PrefixFeed, compute_features, prefix_features
from trainables.strategies import STRATEGIES, get_strategy, unwrap

CPU = torch.device("cpu")
EVAL_BATCH = 4


def _examples(n: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(3, 12, (1,), generator=g))
        rows.append((torch.randint(3, 100, (length,), generator=g).tolist(), i % 3, i))
    return rows


SPLITS = {"train": _examples(10, 1), "validation": _examples(9, 2)}


def _cases():
    for arch in ARCHS:
        for name, strategy in STRATEGIES.items():
            if not strategy.reads_frozen_prefix or (arch.id, name) in UNSUPPORTED:
                continue
            for pooling in ("cls", "mean"):
                for depth in (1, N):
                    yield pytest.param(arch, name, pooling, depth, id=f"{arch.id}-{name}-{pooling}-k{depth}")


def _model(arch, strategy, pooling, depth):
    cfg = _cfg(strategy, pooling=pooling).model_copy(update={"freeze_layers": depth, "learning_rate": 1e-2})
    return get_strategy(strategy).apply(_build(arch, pooling), cfg), cfg


def _features(model, depth):
    return {
        s: compute_features(model, SPLITS[s], depth, batch_size=EVAL_BATCH, pad_id=0, device=CPU)
        for s in SPLITS
    }


def _train_and_evaluate(model, cfg, feed):
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        SPLITS["train"],
        batch_size=3,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=collate(0),
    )
    optimizer, scheduler, params = make_optimizer(model, cfg, 2 * len(loader))
    args = dict(batch_size=EVAL_BATCH, pad_id=0, num_labels=3, device=CPU, precision="fp32", feed=feed)
    before = evaluate(model, SPLITS["validation"], **args)
    losses = [
        train_epoch(
            model,
            loader,
            optimizer,
            scheduler,
            grad_scaler("fp32", CPU),
            params,
            precision="fp32",
            device=CPU,
            feed=feed,
        )[1]
        for _ in range(2)
    ]
    return before, losses, evaluate(model, SPLITS["validation"], **args)


@pytest.mark.parametrize(("arch", "strategy", "pooling", "depth"), list(_cases()))
def test_stored_prefix_gives_the_same_metrics(arch, strategy, pooling, depth):
    plain, cfg = _model(arch, strategy, pooling, depth)
    cached, _ = _model(arch, strategy, pooling, depth)  # same seed: the same weights
    feed = PrefixFeed(cached, depth, _features(cached, depth))  # computed here, as a trial's first does
    with torch.no_grad():  # wreck the frozen prefix: a trial reading stored states never runs it
        for module in frozen_modules(unwrap(cached), depth):
            for p in module.parameters():
                p.fill_(7.0)
    before_plain, losses_plain, after_plain = _train_and_evaluate(plain, cfg, None)
    before_cached, losses_cached, after_cached = _train_and_evaluate(cached, cfg, feed)
    assert before_cached == before_plain  # evaluation in the batches the states were stored in: exact
    assert losses_cached == pytest.approx(losses_plain, rel=1e-5, abs=1e-6)
    assert after_cached == pytest.approx(after_plain, rel=1e-5, abs=1e-6)
    assert losses_plain[0] != losses_plain[1]  # it trained: the comparison is not between two no-ops
    feed.remove()
    assert not any("forward" in b.__dict__ for b in cached.modules())


def _use(model, depth, cache_dir, max_bytes=10**9, train_dtype="fp32"):
    return prefix_features(
        model,
        SPLITS,
        depth,
        cache_dir=str(cache_dir),
        max_bytes=max_bytes,
        key_of=lambda j: f"k{j}",
        batch_size=EVAL_BATCH,
        pad_id=0,
        device=CPU,
        train_dtype=train_dtype,
    )


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_rounds_the_training_states_only(tmp_path, dtype):
    """Half the bytes for the training split; validation stays fp32, so evaluation stays exact."""
    arch = next(a for a in ARCHS if a.id == "bert")
    model, cfg = _model(arch, "full", "mean", 1)
    plain, _ = _model(arch, "full", "mean", 1)
    exact = _use(model, 1, tmp_path / "fp32")
    half = _use(model, 1, tmp_path / dtype, train_dtype=dtype)
    assert half.features["train"].hidden.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert half.features["validation"].hidden.dtype == torch.float32
    size = {d: (tmp_path / d / "features" / "k1.safetensors").stat().st_size for d in ("fp32", dtype)}
    train_bytes = exact.features["train"].hidden.numel() * 2  # what half precision saves
    assert size["fp32"] - size[dtype] == pytest.approx(train_bytes, abs=200)  # headers differ a little
    torch.testing.assert_close(
        half.features["train"].hidden.float(), exact.features["train"].hidden, atol=0.05, rtol=0.01
    )
    again = _use(model, 1, tmp_path / dtype, train_dtype=dtype)  # read back as stored
    assert (
        again.read_depth == 1 and again.features["train"].hidden.dtype == half.features["train"].hidden.dtype
    )
    before_plain, losses_plain, _ = _train_and_evaluate(plain, cfg, None)
    before_half, losses_half, _ = _train_and_evaluate(model, cfg, PrefixFeed(model, 1, half.features))
    assert before_half == before_plain  # validation states are fp32: the same metric, bit for bit
    assert losses_half == pytest.approx(losses_plain, rel=0.05)  # training on rounded states: close


def test_computing_features_leaves_the_global_rng_alone():
    arch = next(a for a in ARCHS if a.id == "bert")
    model, _ = _model(arch, "full", "mean", 1)
    before = torch.get_rng_state()
    _features(model, 1)
    assert torch.equal(torch.get_rng_state(), before)  # else the trial's dropout draws would shift


def test_entries_are_stored_once_reused_and_extended(tmp_path):
    arch = next(a for a in ARCHS if a.id == "bert")
    model, _ = _model(arch, "full", "mean", 1)
    first = _use(model, 1, tmp_path)
    assert first.read_depth == 0 and (tmp_path / "features" / "k1.safetensors").exists()
    again = _use(model, 1, tmp_path)
    assert again.read_depth == 1  # a second trial with the same key skips the prefix entirely
    assert torch.equal(again.features["train"].hidden, first.features["train"].hidden)

    deeper, _ = _model(arch, "full", "mean", 2)
    extended = _use(deeper, 2, tmp_path)
    assert extended.read_depth == 1  # computed only block 1, on top of the stored depth 1
    direct = compute_features(deeper, SPLITS["train"], 2, batch_size=EVAL_BATCH, pad_id=0, device=CPU)
    torch.testing.assert_close(extended.features["train"].hidden, direct.hidden, atol=1e-5, rtol=1e-5)
    assert torch.equal(extended.features["train"].offsets, direct.offsets)


def test_nothing_is_stored_past_the_size_limit(tmp_path):
    arch = next(a for a in ARCHS if a.id == "bert")
    model, _ = _model(arch, "full", "mean", 1)
    use = _use(model, 1, tmp_path, max_bytes=100)
    assert use.read_depth == 0 and use.features["train"].hidden.shape[0] == sum(
        len(r[0]) for r in SPLITS["train"]
    )
    assert not list((tmp_path / "features").glob("*.safetensors"))


def test_prompt_tuning_does_not_read_the_frozen_prefix():
    assert not get_strategy("prompt").reads_frozen_prefix  # its soft tokens change every block's input
    assert all(STRATEGIES[s].reads_frozen_prefix for s in ("full", "bitfit", "lora"))
