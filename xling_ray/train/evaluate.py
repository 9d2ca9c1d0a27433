"""Accuracy on every evaluation language, and how concentrated the predictions are.

Fast by construction: each set is tokenised once per sweep (:mod:`xling_ray.train.cache`),
batches are length-sorted and padded only to their own longest pair
(:func:`~xling_ray.data.batches.eval_batches`), and no autograd state is kept
(``torch.inference_mode``). ``bench/eval_speed.py`` compares it with a padded
Hugging Face ``Trainer.evaluate``.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from xling_ray.metrics import summarize, top_share
from xling_ray.noise import Predictions, TaskPredictions, standard_errors
from xling_ray.data.batches import EncodedSet, collate, eval_batches


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


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation of a task's model measured, per language, in percent:

    * ``accuracy``: correct predictions;
    * ``top_class``: the share of the most predicted class (100: one class for every
      example, the model collapsed; 100 / classes at the least);
    * ``majority``: the share of the most frequent label, i.e. the accuracy of always
      predicting it (from the labels alone: the same for every model);
    * ``predicted`` and ``labels``: per language, every example's predicted class and label,
      in the set's order (int8; what :mod:`xling_ray.noise` measures the gap's error from).
    """

    accuracy: dict[str, float]
    top_class: dict[str, float]
    majority: dict[str, float]
    predicted: dict[str, np.ndarray] | None = None
    labels: dict[str, np.ndarray] | None = None

    @classmethod
    def from_counts(cls, sets: dict[str, EncodedSet], counts: torch.Tensor,
                    predicted: dict[str, np.ndarray] | None = None) -> "Evaluation":
        """From :func:`count_predictions`' counts (summed over every worker)."""
        accuracy, top_class, majority = {}, {}, {}
        for j, lang in enumerate(sets):
            accuracy[lang] = 100.0 * float(counts[j, 0] / counts[j, 1])
            top_class[lang] = top_share(counts[j, 2:].tolist())
            majority[lang] = top_share(list(Counter(sets[lang].labels).values()))
        labels = {lang: np.asarray(sets[lang].labels, dtype=np.int8) for lang in sets} if predicted else None
        return cls(accuracy, top_class, majority, predicted, labels)

    def task_predictions(self, ids) -> TaskPredictions | None:
        """The predictions on ``ids`` (the set's ids, every language's), or None if not kept."""
        if self.predicted is None:
            return None
        return TaskPredictions(np.asarray(ids).astype(str), self.predicted, self.labels)


def summarize_evaluations(evaluations: dict[str, Evaluation]) -> dict[str, float]:
    """Every metric of a trial's report from ``{task: Evaluation}``: :func:`xling_ray.metrics.summarize`
    with the accuracies, prediction concentration (``top_class_*``, ``collapsed*``) and ``majority_en``,
    and, where the predictions were kept, the sampling errors ``gap_se``, ``gap_<task>_se``,
    ``acc_en_se``, ``acc_target_se`` (:func:`xling_ray.noise.standard_errors`)."""
    out = summarize({t: e.accuracy for t, e in evaluations.items()},
                    top_class={t: e.top_class for t, e in evaluations.items()},
                    majority={t: e.majority for t, e in evaluations.items()})
    if evaluations and all(e.predicted is not None for e in evaluations.values()):
        tasks = {t: e.task_predictions(np.arange(len(next(iter(e.labels.values())))))
                 for t, e in evaluations.items()}
        out.update(standard_errors([Predictions(tasks)]))
    return out


def _num_classes(model: torch.nn.Module, sets: dict[str, EncodedSet]) -> int:
    """The classes the model predicts among: ``config.num_labels`` of the model or of what it
    wraps (DDP's ``module``, a view's ``model``), else one more than the largest label."""
    inner, num_labels = model, 0
    for _ in range(4):
        num_labels = int(getattr(getattr(inner, "config", None), "num_labels", 0) or 0)
        inner = getattr(inner, "module", None) or getattr(inner, "model", None)
        if num_labels or inner is None:
            break
    labels = max((max(d.labels) for d in sets.values() if len(d)), default=0) + 1
    return max(num_labels, labels)


@torch.inference_mode()
def count_predictions(model: torch.nn.Module, sets: dict[str, EncodedSet], batch_size: int, pad_id: int,
                      device: torch.device, autocast: contextlib.AbstractContextManager | None = None,
                      rank: int = 0, world_size: int = 1,
                      predicted: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """This worker's counts on its shard of each set, one row per language (in ``sets``'
    order): ``[correct, examples, predictions of class 0, of class 1, ...]``. Counts of
    all workers add up to the whole sets' (what :func:`evaluate` all-reduces). With
    ``predicted`` (a dict), also each language's predicted classes plus 1 at this worker's
    examples, 0 elsewhere (so that the workers' tensors add up to every example's)."""
    was_training = model.training
    model.eval()
    classes = _num_classes(model, sets)
    counts = torch.zeros(len(sets), 2 + classes, dtype=torch.float64)
    for j, lang in enumerate(sets):
        if predicted is not None:
            predicted[lang] = torch.zeros(len(sets[lang]), dtype=torch.long)
        for idx, pred, labels in _batch_predictions(model, sets[lang], batch_size, pad_id, device, autocast,
                                                    rank, world_size):
            if predicted is not None:
                predicted[lang][idx] = pred.cpu() + 1
            counts[j, 0] += (pred == labels).sum().item()
            counts[j, 1] += len(idx)
            counts[j, 2:] += torch.bincount(pred.cpu(), minlength=classes)[:classes].double()
    model.train(was_training)
    return counts


def evaluate(
    model: torch.nn.Module,
    sets: dict[str, EncodedSet],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Evaluation:
    """Accuracy, top-class share and label majority of every language, and every example's
    prediction (:class:`Evaluation`). With several workers each evaluates a shard and the
    counts (correct, examples, predictions per class) and predictions are summed, so every
    worker returns the same numbers."""
    shards: dict[str, torch.Tensor] = {}
    counts = count_predictions(model, sets, batch_size, pad_id, device, autocast, rank, world_size, shards)
    if world_size > 1 and dist.is_available() and dist.is_initialized():
        c = counts.to(device)
        dist.all_reduce(c)
        counts = c.cpu()
        if shards:
            joined = torch.cat(list(shards.values())).to(device)
            dist.all_reduce(joined)
            shards = dict(zip(shards, joined.cpu().split([len(v) for v in shards.values()])))
    predicted = {lang: (v - 1).numpy().astype(np.int8) for lang, v in shards.items()}
    return Evaluation.from_counts(sets, counts, predicted or None)
