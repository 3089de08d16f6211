"""How a sequence becomes one vector for the classification head: the ``pooling`` knob.

* ``cls``: the architecture's own sequence-classification head. For encoders that is Hugging
  Face's ``AutoModelForSequenceClassification`` (BERT: the pooler over the first token, RoBERTa:
  the first token through a dense layer, ...). For decoder-only models it is the last non-pad
  token, computed here from the attention mask (:class:`PooledClassifier` with ``last``), so it
  stays right when soft prompts are prepended to the input embeddings.
* ``mean``: the masked mean of the last hidden states, then a linear head
  (:class:`PooledClassifier` with ``mean``): what sentence-transformers checkpoints were trained for.
* ``auto``: ``mean`` where the checkpoint says it was trained that way (a sentence-transformers
  ``1_Pooling/config.json`` with ``pooling_mode_mean_tokens``), otherwise ``cls``.
  :func:`trainables.models.resolved_pooling` is the one place that decides (reading JSON only,
  no torch, so ``validate`` stays fast); the driver resolves it before a sweep
  starts, so trials, MLflow params and checkpoints carry ``cls`` or ``mean``, never ``auto``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

__all__ = ["PooledClassifier", "is_decoder_only", "pool", "uses_own_head"]


def is_decoder_only(config: Any) -> bool:
    """True for causal LMs (GPT-2, Llama, ...): models without a masked-LM variant."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return getattr(config, "model_type", None) not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def uses_own_head(config: Any, pooling: str) -> bool:
    """Whether ``pooling`` is served by Hugging Face's own sequence-classification class."""
    return pooling == "cls" and not is_decoder_only(config)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``[batch, time, dim]`` -> ``[batch, dim]``: masked mean, or the last non-pad position.

    ``mask`` is the attention mask (1 = token, 0 = right padding), any dtype.
    """
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    if how == "mean":
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    last = mask.squeeze(-1).sum(1).long().clamp(min=1) - 1  # right padding: last token at length - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class PooledClassifier(nn.Module):
    """A backbone (``AutoModel``), a pooling of its last hidden states, and a linear head.

    The backbone is registered under its own ``base_model_prefix`` (``bert``, ``transformer``,
    ``model``, ...), so the weights of a saved classifier load into a plain ``AutoModel``
    (``AutoModel.from_pretrained(dir)``); the head is ``classifier.weight`` / ``classifier.bias``.
    The call signature and output match Hugging Face's sequence classifiers (``labels`` -> ``loss``).
    """

    def __init__(self, backbone: nn.Module, *, how: Literal["mean", "last"], num_labels: int):
        super().__init__()
        config = backbone.config
        if isinstance(getattr(backbone, "pooler", None), nn.Module):
            backbone.pooler = None  # unused here; DDP must not wait for its gradients
        self.config = config
        self.how = how
        self.backbone_name = getattr(backbone, "base_model_prefix", "") or "backbone"
        self.add_module(self.backbone_name, backbone)
        p = getattr(config, "classifier_dropout", None)
        if p is None:
            p = getattr(config, "hidden_dropout_prob", 0.0)
        self.dropout = nn.Dropout(float(p or 0.0))
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        std = float(getattr(config, "initializer_range", 0.02))
        nn.init.normal_(self.classifier.weight, std=std)  # as Hugging Face initialises its heads
        nn.init.zeros_(self.classifier.bias)

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.backbone_name)

    @property
    def device(self) -> torch.device:  # as PreTrainedModel has (peft reads it)
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        extra = (
            {"token_type_ids": kwargs["token_type_ids"]} if kwargs.get("token_type_ids") is not None else {}
        )
        out = self.base_model(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **extra
        )
        hidden = out.last_hidden_state
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        logits = self.classifier(self.dropout(pool(hidden, attention_mask, self.how)))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
