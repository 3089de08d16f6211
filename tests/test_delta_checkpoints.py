"""Delta checkpoints: what a trial trained + a content-hash reference to the frozen base.

Every registered strategy x architecture x pooling (the contract suite's tiny models): the
checkpoint holds no frozen base tensor, reloads to the same logits, exports to a standalone
directory that needs no base, and refuses a missing or changed base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.test_strategies import ARCHS, UNSUPPORTED, _batch, _build, _cases, _cfg
from trainables.base_weights import base_names, plan_delta, write_base
from trainables.checkpoints import (
    TRIAL_FILE,
    WEIGHTS_FILE,
    load_classifier,
    save_checkpoint,
    write_standalone,
)
from trainables.models import load_tokenizer
from trainables.stored import StoredFileError
from trainables.strategies import get_strategy


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin:minilm-l6")


def _trained(arch, strategy, pooling, base_dir):
    """A model with ``strategy`` applied, its plan (base stored in ``base_dir``), nudged off its init."""
    if (arch.id, strategy) in UNSUPPORTED:
        pytest.skip(f"{strategy} does not apply to {arch.id}")
    cfg = _cfg(strategy, pooling=pooling)
    model, plan, base = plan_delta(_build(arch, pooling), lambda m: get_strategy(strategy).apply(m, cfg))
    plan.ref = write_base(base, str(base_dir))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval(), plan, cfg


def _keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize(("arch", "strategy", "pooling"), _cases())
def test_delta_round_trip_and_standalone_export(arch, strategy, pooling, tokenizer, tmp_path):
    model, plan, cfg = _trained(arch, strategy, pooling, tmp_path / "base")
    assert plan.from_base, "every strategy here freezes part of the base"
    with torch.no_grad():
        expected = model(**_batch()).logits
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_checkpoint(
        ckpt,
        model=model,
        tokenizer=tokenizer,
        trial_info={"hyperparameters": cfg.for_trial(), "merged": False},
        resume_state=None,
        plan=plan,
    )
    stored = _keys(ckpt / WEIGHTS_FILE)
    assert not stored & plan.from_base  # no frozen base tensor is written per checkpoint
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= stored
    info = json.loads((ckpt / TRIAL_FILE).read_text())
    assert info["base"]["sha256"] == plan.ref.sha256

    loaded = load_classifier(ckpt)
    with torch.no_grad():
        assert torch.equal(loaded(**_batch()).logits, expected)

    write_standalone(ckpt, tmp_path / "export")
    exported_info = json.loads((tmp_path / "export" / TRIAL_FILE).read_text())
    assert "base" not in exported_info
    for f in (tmp_path / "base").iterdir():
        f.unlink()  # the export refers to nothing
    exported = load_classifier(tmp_path / "export")
    with torch.no_grad():
        torch.testing.assert_close(exported(**_batch()).logits, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(StoredFileError, match="not found"):
        load_classifier(ckpt)


def test_one_base_serves_every_depth_and_pooling(tmp_path):
    """The base is the untrained embeddings + blocks: the same file whatever a trial freezes."""
    arch = next(a for a in ARCHS if a.id == "bert")
    refs = set()
    for pooling in ("cls", "mean"):
        for strategy, depth in (("full", 1), ("full", 2), ("bitfit", 0), ("lora", 2)):
            cfg = _cfg(strategy, pooling=pooling).model_copy(update={"freeze_layers": depth})
            apply = get_strategy(strategy).apply
            _, plan, base = plan_delta(_build(arch, pooling), lambda m, a=apply, c=cfg: a(m, c))
            refs.add(write_base(base, str(tmp_path)).sha256)
    assert len(refs) == 1 and len(list(tmp_path.iterdir())) == 1


def test_full_fine_tuning_needs_no_base():
    arch = next(a for a in ARCHS if a.id == "bert")
    cfg = _cfg("full").model_copy(update={"freeze_layers": 0})
    model, plan, _ = plan_delta(_build(arch, "cls"), lambda m: get_strategy("full").apply(m, cfg))
    assert not plan.from_base  # the runner then writes no base and a full (plain HF) checkpoint
    assert set(plan.state(model)) == set(model.state_dict())


def test_a_changed_base_is_refused(tokenizer, tmp_path):
    arch = next(a for a in ARCHS if a.id == "bert")
    model, plan, cfg = _trained(arch, "lora", "mean", tmp_path / "base")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    info = {"hyperparameters": cfg.for_trial(), "merged": False}
    save_checkpoint(ckpt, model=model, tokenizer=tokenizer, trial_info=info, resume_state=None, plan=plan)
    base_file = tmp_path / "base" / f"{plan.ref.sha256}.safetensors"
    data = bytearray(base_file.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in a tensor
    base_file.write_bytes(bytes(data))
    with pytest.raises(StoredFileError, match="does not match its sha256"):
        load_classifier(ckpt)


def test_base_names_cover_embeddings_and_blocks_only():
    arch = next(a for a in ARCHS if a.id == "bert")
    model = _build(arch, "cls")
    names = base_names(model)
    assert names and all(n.startswith(("bert.embeddings.", "bert.encoder.layer.")) for n in names)
    assert not any(n.startswith(("classifier.", "bert.pooler.")) for n in names)


def test_checkpoints_refer_to_one_stored_tokenizer(tokenizer, tmp_path, monkeypatch):
    """In a sweep the tokenizer's files are stored once; checkpoints hold a reference, exports the files."""
    from trainables.predictor import TextClassifier
    from trainables.stored_tokenizer import TOKENIZER_KEY, store_tokenizer

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "machine-cache"))
    arch = next(a for a in ARCHS if a.id == "bert")
    model, plan, cfg = _trained(arch, "lora", "mean", tmp_path / "sweep" / "base")
    refs = {store_tokenizer(tokenizer, str(tmp_path / "sweep")) for _ in range(2)}
    assert len(refs) == 1 and len(list((tmp_path / "sweep" / "tokenizer").iterdir())) == 1
    ref = refs.pop()
    info = {
        "hyperparameters": cfg.for_trial(),
        "merged": False,
        "label_names": ["negative", "positive"],
        "template": "{text}",
        "template_name": "plain",
        "max_length": 32,
    }
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_checkpoint(
        ckpt,
        model=model,
        tokenizer=tokenizer,
        trial_info=info,
        resume_state=None,
        plan=plan,
        tokenizer_ref=ref,
    )
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "trial.json"]
    assert json.loads((ckpt / TRIAL_FILE).read_text())[TOKENIZER_KEY] == ref.to_json()
    text = "a fine product, broke after a day"
    assert TextClassifier(ckpt).tokenizer(text).input_ids == tokenizer(text).input_ids
    with torch.no_grad():
        expected = model(**_batch()).logits

    write_standalone(ckpt, tmp_path / "export")
    exported = tmp_path / "export"
    assert (exported / "tokenizer.json").is_file()
    assert TOKENIZER_KEY not in json.loads((exported / TRIAL_FILE).read_text())
    import shutil

    shutil.rmtree(tmp_path / "sweep")  # the export refers to nothing
    shutil.rmtree(tmp_path / "machine-cache")
    served = TextClassifier(exported)
    assert served.tokenizer(text).input_ids == tokenizer(text).input_ids
    with torch.no_grad():
        torch.testing.assert_close(served.model(**_batch()).logits, expected, atol=1e-5, rtol=1e-4)


def test_a_tokenizer_bundle_cannot_write_outside_its_directory(tmp_path, monkeypatch):
    import base64

    from trainables.data import file_sha256
    from trainables.stored import StoredRef
    from trainables.stored_tokenizer import tokenizer_dir

    monkeypatch.setenv("ORCHESTRATOR_CACHE", str(tmp_path / "machine-cache"))
    for name in ("../escaped.txt", "model.safetensors"):  # outside the directory; over the weights
        bundle = tmp_path / "bundle.json"
        bundle.write_text(json.dumps({name: base64.b64encode(b"x").decode()}))
        ref = StoredRef(file_sha256(bundle), str(bundle))
        with pytest.raises(StoredFileError, match="plain tokenizer file names only"):
            tokenizer_dir(tmp_path, {"tokenizer": ref.to_json()})
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not list((tmp_path / "machine-cache" / "tokenizers").iterdir())  # no half-unpacked entry
    with pytest.raises(StoredFileError, match="does not match its sha256"):
        tokenizer_dir(tmp_path, {"tokenizer": {"sha256": "0" * 64, "uri": str(bundle)}})


def test_a_tokenizer_with_a_sub_folder_stays_in_the_checkpoint(tmp_path):
    """transformers may save extra chat templates in a folder: no bundle, the files stay per checkpoint."""
    from trainables.stored_tokenizer import store_tokenizer

    class Saves:
        def save_pretrained(self, directory):
            (Path(directory) / "additional_chat_templates").mkdir(parents=True)
            (Path(directory) / "tokenizer.json").write_text("{}")

    assert store_tokenizer(Saves(), str(tmp_path)) is None
    assert not (tmp_path / "tokenizer").exists()
