"""The frozen layers' outputs, computed once per sweep instead of at every step.

With ``model.freeze_layers = k`` the embeddings and bottom ``k`` layers never change, so
the output of layer ``k-1`` for each training and evaluation example is the same in
every step, every epoch and every trial of a sweep. :func:`frozen_states` computes it
once (in evaluation mode: the frozen layers apply no dropout) and keeps it on disk under
``<cache root>/frozen/<key>.npz``, where the key is a SHA-256 of the frozen weights
themselves, ``k`` and the examples' token ids and, where the tokenizer gives them, segment
ids (``token_type_ids`` enter at the embedding layer, so the same tokens in other segments
have other states); training and evaluation then run only the
layers above (:class:`xling_ray.models.split.TopView`). States are stored as float16
(half the disk and memory; the layers above compute in float32).

A trial pays for layers ``k ..`` only: with 12 layers and ``k = 8`` a training step
costs about a third of a full one and an evaluation a third of a full evaluation, after
the sweep's first trial has filled the cache. It applies only where no active loss term
needs the model's input (every regularizer builds a view of the input or of hidden
states below the top, so today: plain fine-tuning); other recipes still freeze the
layers and skip their backward pass.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xling_ray.models.split import bottom_states
from xling_ray.data.batches import EncodedSet, collate, eval_batches
from xling_ray.train.cache import atomic_savez

#: Bump when the file layout changes.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FrozenStates:
    """An :class:`EncodedSet` run through the frozen layers: per example a (T, d) float16 array."""

    task: str
    language: str
    input_ids: tuple[tuple[int, ...], ...]  # kept for lengths (length-sorted evaluation batches)
    labels: tuple[int, ...]
    states: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int]) -> "FrozenStates":
        """The examples at ``indices``."""
        pick = lambda rows: tuple(rows[i] for i in indices)  # noqa: E731
        return FrozenStates(self.task, self.language, pick(self.input_ids), pick(self.labels), pick(self.states))

    def collate(self, indices: list[int], pad_id: int = 0) -> dict[str, torch.Tensor]:
        """``inputs_embeds`` (B, T, d) float32 padded with zeros, ``attention_mask`` and ``labels``."""
        rows = [self.states[i] for i in indices]
        width, dim = max(len(r) for r in rows), rows[0].shape[1]
        embeds = torch.zeros((len(rows), width, dim), dtype=torch.float32)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            embeds[j, : len(r)] = torch.from_numpy(r.astype(np.float32))
            mask[j, : len(r)] = 1
        labels = torch.tensor([self.labels[i] for i in indices], dtype=torch.long)
        return {"inputs_embeds": embeds, "attention_mask": mask, "labels": labels}


def frozen_weights_key(model: torch.nn.Module, k: int) -> str:
    """SHA-256 of the embeddings' and bottom ``k`` layers' weights, and ``k``."""
    from xling_ray.models.loading import encoder_layers

    h = hashlib.sha256(f"v{FORMAT_VERSION}|{k}|".encode())
    modules = [model.base_model.embeddings, *encoder_layers(model)[:k]]
    for module in modules:
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _data_key(weights_key: str, data: EncodedSet) -> str:
    """Of the weights' key, the token ids and the segment ids. A set without segment ids
    keeps the key it had before they were kept (its states have not changed)."""
    h = hashlib.sha256(weights_key.encode())
    for row in data.input_ids:
        h.update(np.asarray(row, dtype=np.int64).tobytes())
        h.update(b"|")
    if data.token_type_ids is not None:
        h.update(b"token_type_ids")
        for row in data.token_type_ids:
            h.update(np.asarray(row, dtype=np.int64).tobytes())
            h.update(b"|")
    return h.hexdigest()[:32]


def _read(path: Path, data: EncodedSet) -> tuple[np.ndarray, ...] | None:
    try:
        with np.load(path) as f:
            flat, offsets = f["states"], f["offsets"]
    except (OSError, ValueError, KeyError):
        return None
    lengths = [len(s) for s in data.input_ids]
    if len(offsets) != len(data) + 1 or np.diff(offsets).tolist() != lengths:
        return None
    return tuple(flat[offsets[i] : offsets[i + 1]] for i in range(len(data)))


def _write(path: Path, states: tuple[np.ndarray, ...]) -> None:
    offsets = np.zeros(len(states) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in states])
    atomic_savez(path, states=np.concatenate(states), offsets=offsets)


def compute_states(model: torch.nn.Module, k: int, data: EncodedSet, batch_size: int, pad_id: int,
                   device: torch.device) -> tuple[np.ndarray, ...]:
    """Layer ``k-1``'s output for every example of ``data`` (unpadded, float16)."""
    out: list[np.ndarray | None] = [None] * len(data)
    for idx in eval_batches(data, batch_size):
        batch = {key: v.to(device) for key, v in collate(data, idx, pad_id).items() if key != "labels"}
        h = bottom_states(model, k, **batch)
        h = h.float().cpu().numpy().astype(np.float16)
        for row, i in enumerate(idx):
            out[i] = h[row, : len(data.input_ids[i])]
    return tuple(out)


def frozen_states(model: torch.nn.Module, k: int, data: EncodedSet, batch_size: int, pad_id: int,
                  device: torch.device, cache_dir: str | os.PathLike | None, weights_key: str | None = None) -> FrozenStates:
    """:class:`FrozenStates` of ``data``, read from ``cache_dir`` when the same frozen weights,
    ``k``, token ids and segment ids were run before (``None``: no disk cache)."""
    states = None
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_data_key(weights_key or frozen_weights_key(model, k), data)}.npz"
        if path.is_file():
            states = _read(path, data)
    if states is None:
        states = compute_states(model, k, data, batch_size, pad_id, device)
        if path is not None:
            try:
                _write(path, states)
            except OSError:
                pass  # a read-only or full cache only costs the next trial this pass
    return FrozenStates(data.task, data.language, data.input_ids, data.labels, states)
