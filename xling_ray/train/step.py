"""One training step: the total loss and its named parts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xling_ray.config import LossConfig
from xling_ray.losses import LossTerm, StepContext, classification_loss
from xling_ray.methods import active_terms


@dataclass
class StepResult:
    loss: torch.Tensor                 # the total, to back-propagate
    parts: dict[str, torch.Tensor]     # "ce" and every active term, unweighted and detached


def training_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: LossConfig,
    terms: tuple[LossTerm, ...] | None = None,
    state: dict[str, Any] | None = None,
) -> StepResult:
    """``L = CE + sum_k w_k L_k`` over the terms of the active methods
    (:func:`~xling_ray.methods.active_methods`, the ones that prepared) whose weight is not 0;
    ``terms`` given: over those.

    ``batch`` holds ``input_ids``, ``attention_mask``, ``labels`` and, for tokenizers that
    give them, ``token_type_ids`` (every key but ``labels`` goes to the model); ``state``
    persists across one task's steps (see :class:`~xling_ray.losses.StepContext`).
    With every weight 0 this is exactly one forward pass and plain cross-entropy.
    """
    active = [(t, w) for t in (active_terms(config) if terms is None else terms) if (w := t.weight(config)) != 0]
    needs = set().union(*(t.needs for t, _ in active))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "attentions" in needs:
        inputs["output_attentions"] = True
    if "hidden_states" in needs:
        inputs["output_hidden_states"] = True
    outputs = model(**inputs)
    loss = classification_loss(outputs.logits, batch["labels"], config.label_smoothing)
    parts = {"ce": loss.detach()}
    ctx = StepContext(model=model, batch=batch, outputs=outputs, config=config, state=state if state is not None else {})
    for term, w in active:
        value = term(ctx)
        loss = loss + w * value
        parts[term.name] = value.detach()
    return StepResult(loss=loss, parts=parts)
