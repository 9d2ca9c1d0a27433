"""One training step: the total loss and its named parts."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from xling_ray.config import LossConfig
from xling_ray.losses import LossTerm, StepContext, classification_loss, registered_terms


@dataclass
class StepResult:
    loss: torch.Tensor                 # the total, to back-propagate
    parts: dict[str, torch.Tensor]     # "ce" and every active term, unweighted and detached


def training_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    config: LossConfig,
    terms: tuple[LossTerm, ...] | None = None,
) -> StepResult:
    """``L = CE + sum_k w_k L_k`` over the registered terms whose weight is not 0.

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``labels``.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    outputs = model(**inputs)
    loss = classification_loss(outputs.logits, batch["labels"], config.label_smoothing)
    parts = {"ce": loss.detach()}
    ctx = StepContext(model=model, batch=batch, outputs=outputs, config=config)
    for term in registered_terms() if terms is None else terms:
        w = term.weight(config)
        if w == 0:
            continue
        value = term(ctx)
        loss = loss + w * value
        parts[term.name] = value.detach()
    return StepResult(loss=loss, parts=parts)
