"""Accuracy on every evaluation language."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

from xling_ray.train.batches import EncodedSet, collate, eval_batches


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    sets: dict[str, EncodedSet],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """``{language: accuracy in %}``. With several workers each evaluates a
    shard and the counts are summed, so every worker returns the same numbers."""
    was_training = model.training
    model.eval()
    langs = list(sets)
    counts = torch.zeros(len(langs), 2, dtype=torch.float64)
    for j, lang in enumerate(langs):
        data = sets[lang]
        for idx in eval_batches(data, batch_size, rank, world_size):
            batch = {k: v.to(device) for k, v in collate(data, idx, pad_id).items()}
            labels = batch.pop("labels")
            with autocast or contextlib.nullcontext():
                logits = model(**batch).logits
            counts[j, 0] += (logits.argmax(-1) == labels).sum().item()
            counts[j, 1] += len(idx)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        c = counts.to(device)
        dist.all_reduce(c)
        counts = c.cpu()
    model.train(was_training)
    return {lang: 100.0 * float(counts[j, 0] / counts[j, 1]) for j, lang in enumerate(langs)}
