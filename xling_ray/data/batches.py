"""Tokenised sets and the batches drawn from them.

Sets are tokenised once, without padding; each batch is padded only to its own
longest sequence. Evaluation batches are length-sorted so that little compute
goes to padding.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from xling_ray.data.sources import PairDataset


@dataclass(frozen=True)
class EncodedSet:
    """A tokenised :class:`PairDataset`: token ids per example, and labels.

    ``token_type_ids``: the segment id of every token (0 for sentence A with ``[CLS]``
    and its ``[SEP]``, 1 for sentence B with the last ``[SEP]``), when the tokenizer
    returns them (BERT-family tokenizers do, e.g. bert-base-multilingual-cased's; XLM-R's
    and e5's do not, and then it is ``None`` and the model uses its default, all 0).
    """

    task: str
    language: str
    input_ids: tuple[tuple[int, ...], ...]
    labels: tuple[int, ...]
    token_type_ids: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: list[int], labels: tuple[int, ...] | None = None) -> "EncodedSet":
        """The examples at ``indices`` (every per-token field), with ``labels`` if given."""
        pick = lambda rows: tuple(rows[i] for i in indices)  # noqa: E731
        return EncodedSet(self.task, self.language, pick(self.input_ids),
                          pick(self.labels) if labels is None else tuple(labels),
                          None if self.token_type_ids is None else pick(self.token_type_ids))


def with_prefix(data: PairDataset, prefix: str) -> PairDataset:
    """``data`` with ``prefix`` before each sentence of each pair (e.g. e5's ``"query: "``)."""
    if not prefix:
        return data
    return replace(data, text_a=tuple(prefix + t for t in data.text_a), text_b=tuple(prefix + t for t in data.text_b))


def encode(tokenizer, data: PairDataset, max_length: int) -> EncodedSet:
    """Each pair ``(text_a, text_b)`` tokenised as the model reads it (special tokens,
    truncation to ``max_length``, no padding): token ids, and segment ids when the
    tokenizer returns them (its ``model_input_names`` hold ``token_type_ids``)."""
    enc = tokenizer(list(data.text_a), list(data.text_b), truncation=True, max_length=max_length)
    types = tuple(map(tuple, enc["token_type_ids"])) if "token_type_ids" in enc else None
    return EncodedSet(data.task, data.language, tuple(map(tuple, enc["input_ids"])), tuple(data.labels), types)


def collate(data: EncodedSet, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the chosen examples to the longest of them: ``input_ids`` (padded with
    ``pad_id``), ``attention_mask``, ``token_type_ids`` when the set has them (padded with
    0, as BERT's tokenizers pad them) and ``labels``; every key but ``labels`` is a model
    input. A set that pads itself (e.g. :class:`~xling_ray.train.frozen_cache.FrozenStates`)
    does so with its own ``collate``."""
    if not isinstance(data, EncodedSet):
        return data.collate(indices, pad_id)
    seqs = [data.input_ids[i] for i in indices]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if data.token_type_ids is not None:
        types = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, i in enumerate(indices):
            types[row, : len(data.token_type_ids[i])] = torch.tensor(data.token_type_ids[i], dtype=torch.long)
        batch["token_type_ids"] = types
    batch["labels"] = torch.tensor([data.labels[i] for i in indices], dtype=torch.long)
    return batch


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Shuffled index batches of one epoch for one worker.

    The order depends only on ``(seed, epoch)``, so a resumed run sees the same
    batches. With several workers each takes every ``world_size``-th example of
    the permutation, and the tail that not every worker would get is dropped so
    that all workers run the same number of steps (DDP needs that).
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    usable = (n // world_size) * world_size
    mine = perm[rank:usable:world_size]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def eval_batches(data: EncodedSet, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """Length-sorted batches of this worker's shard of ``data`` (every example once over all workers)."""
    shard = list(range(rank, len(data), world_size))
    shard.sort(key=lambda i: len(data.input_ids[i]))
    return [shard[i : i + batch_size] for i in range(0, len(shard), batch_size)]
