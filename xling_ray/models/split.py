"""Run a BERT-style encoder in two parts: the frozen bottom ``k`` layers, then the rest.

With the embeddings and bottom ``k`` layers frozen (``model.freeze_layers``), their
output for a given input never changes during fine-tuning: it can be computed once
(:mod:`xling_ray.train.frozen_cache`) and the model run from layer ``k`` on. Both parts
run *the model's own forward* (transformers' attention masks, pooler, classifier,
loss), with its module lists swapped for the duration of one call:

* :func:`bottom_only`: the encoder holds layers ``0 .. k-1`` and no pooler, so
  ``last_hidden_state`` is the output of layer ``k-1`` (``hidden_states[k]``);
* :func:`top_only`: the embeddings become the identity on ``inputs_embeds`` and the
  encoder holds layers ``k ..``, so ``model(inputs_embeds=h_k, attention_mask=m)``
  gives the logits the full model gives for the input that produced ``h_k``.

BERT, XLM-R and e5 share this layout (``base_model.embeddings``, ``base_model.encoder.layer``).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from xling_ray.models.loading import encoder_layers


class _Identity(nn.Module):
    """Stands in for the embeddings: returns ``inputs_embeds`` (already layer ``k``'s output)."""

    def forward(self, inputs_embeds: torch.Tensor | None = None, **_) -> torch.Tensor:
        return inputs_embeds


@contextlib.contextmanager
def _swapped(model: nn.Module, **modules) -> Iterator[None]:
    base = model.base_model
    saved = {}
    for path, module in modules.items():
        owner, attr = (base.encoder, "layer") if path == "layers" else (base, path)
        saved[path] = (owner, attr, getattr(owner, attr))
        setattr(owner, attr, module)
    try:
        yield
    finally:
        for owner, attr, module in saved.values():
            setattr(owner, attr, module)


@contextlib.contextmanager
def bottom_only(model: nn.Module, k: int) -> Iterator[None]:
    """Within the block, ``model.base_model(...)`` runs the embeddings and layers ``0 .. k-1`` only."""
    layers = encoder_layers(model)
    with _swapped(model, layers=layers[:k], pooler=None):
        yield


@contextlib.contextmanager
def top_only(model: nn.Module, k: int) -> Iterator[None]:
    """Within the block, ``model(inputs_embeds=h_k, ...)`` runs layers ``k ..``, the pooler and the head."""
    layers = encoder_layers(model)
    with _swapped(model, layers=layers[k:], embeddings=_Identity()):
        yield


class TopView(nn.Module):
    """``model`` called from layer ``k``: ``view(inputs_embeds=h_k, attention_mask=m)``.

    It owns no parameters of its own; ``train()``/``eval()`` reach the wrapped model.
    ``model`` may be a DDP wrapper: the swap happens on the model inside it."""

    def __init__(self, model: nn.Module, k: int):
        super().__init__()
        self.model = model
        self.k = k

    def forward(self, **inputs):
        inner = getattr(self.model, "module", self.model)
        with top_only(inner, self.k):
            return self.model(**inputs)


@torch.no_grad()
def bottom_states(model: nn.Module, k: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  **extra: torch.Tensor) -> torch.Tensor:
    """(B, T, d) output of layer ``k-1`` (``hidden_states[k]``) in evaluation mode (no dropout).
    ``extra``: the model's other inputs, e.g. ``token_type_ids`` (they enter at the embeddings)."""
    was_training = model.training
    model.eval()
    try:
        with bottom_only(model, k):
            out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        return out.last_hidden_state
    finally:
        model.train(was_training)
