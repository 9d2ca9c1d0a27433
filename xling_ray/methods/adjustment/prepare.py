"""Cross-lingual adjustment's preparation: word-aligned parallel pairs and the frozen
original model (:func:`prepare_adjustment`), and Cao et al.'s regime of adjusting before
fine-tuning (:func:`adjust_before_fine_tuning`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from xling_ray.data import DataError
from xling_ray.methods.adjustment.aligner import align_corpus
from xling_ray.methods.adjustment.batches import AlignedBatch, AlignedCollator
from xling_ray.methods.adjustment.objective import adjustment_objective
from xling_ray.methods.adjustment.pharaoh import read_pharaoh
from xling_ray.models.encode import frozen_copy

if TYPE_CHECKING:
    from xling_ray.methods.adjustment import AdjustmentConfig


@dataclass
class AdjustmentData:
    """Aligned parallel pairs and the frozen original model ``f0`` of one task."""

    pairs: list[tuple[str, str]]
    alignments: list[list[tuple[int, int]]]
    original: torch.nn.Module
    collate: AlignedCollator

    def draw(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> AlignedBatch:
        """``n`` aligned pairs drawn with ``generator`` (the task's per-rank one, ``state["generator"]``)."""
        idx = torch.randint(len(self.pairs), (n,), generator=generator).tolist()
        return self.collate([(*self.pairs[i], self.alignments[i]) for i in idx]).to(device)


def prepare_adjustment(model, tokenizer, pairs: list[tuple[str, str]], cfg: "AdjustmentConfig", max_length: int) -> AdjustmentData:
    """Word alignments (Pharaoh file, or mutual argmax of the frozen encoder's similarities at
    ``cfg.align_layer``) and ``f0``, a frozen copy of the model as loaded."""
    if not pairs:
        raise DataError("cross-lingual adjustment: no parallel pairs (check losses.pool and data.languages)")
    if cfg.alignment_file:
        alignments = read_pharaoh(cfg.alignment_file, len(pairs))
    else:
        alignments = align_corpus(model, tokenizer, pairs, layer=cfg.align_layer, max_length=max_length)
    return AdjustmentData(pairs, alignments, frozen_copy(model), AlignedCollator(tokenizer, max_length=max_length))


def adjust_before_fine_tuning(model, data: AdjustmentData, cfg: "AdjustmentConfig", device: torch.device,
                              generator: torch.Generator | None = None) -> list[float]:
    """Cao et al.'s regime: ``cfg.steps`` steps of ``L_align + base_rate * L_reg`` before any
    task training; AdamW (betas 0.9/0.98), linear warm-up over the first 10 % then decay.
    Returns the losses, for logging."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98))
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, cfg.steps // 10), cfg.steps)
    was_training = model.training
    model.train()
    losses = []
    for _ in range(cfg.steps):
        parts = adjustment_objective(model, data.original, data.draw(cfg.batch_size, device, generator), cfg.base_rate,
                                     mode=cfg.word_vector, include_special=cfg.include_special)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(parts.total.detach()))
    model.train(was_training)
    return losses
