"""Accuracy on every evaluation language.

Fast by construction: each set is tokenised once per sweep (:mod:`xling_ray.train.cache`),
batches are length-sorted and padded only to their own longest pair
(:func:`~xling_ray.train.batches.eval_batches`), and no autograd state is kept
(``torch.inference_mode``). ``bench/eval_speed.py`` compares it with a padded
Hugging Face ``Trainer.evaluate``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist

from xling_ray.train.batches import EncodedSet, collate, eval_batches


def _batch_predictions(model, data: EncodedSet, batch_size: int, pad_id: int, device: torch.device,
                       autocast, rank: int, world_size: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """(indices, predicted classes, labels) per length-sorted batch of this worker's shard."""
    for idx in eval_batches(data, batch_size, rank, world_size):
        batch = {k: v.to(device) for k, v in collate(data, idx, pad_id).items()}
        labels = batch.pop("labels")
        with autocast or contextlib.nullcontext():
            logits = model(**batch).logits
        yield idx, logits.argmax(-1), labels


@torch.inference_mode()
def predict(model: torch.nn.Module, data: EncodedSet, batch_size: int, pad_id: int,
            device: torch.device, autocast: contextlib.AbstractContextManager | None = None) -> list[int]:
    """The predicted class of every example of ``data``, in its order (one worker)."""
    was_training = model.training
    model.eval()
    out = [0] * len(data)
    for idx, pred, _ in _batch_predictions(model, data, batch_size, pad_id, device, autocast, 0, 1):
        for i, p in zip(idx, pred.tolist()):
            out[i] = p
    model.train(was_training)
    return out


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
        for idx, pred, labels in _batch_predictions(model, sets[lang], batch_size, pad_id, device, autocast,
                                                    rank, world_size):
            counts[j, 0] += (pred == labels).sum().item()
            counts[j, 1] += len(idx)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        c = counts.to(device)
        dist.all_reduce(c)
        counts = c.cpu()
    model.train(was_training)
    return {lang: 100.0 * float(counts[j, 0] / counts[j, 1]) for j, lang in enumerate(langs)}
