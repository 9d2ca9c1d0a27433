"""Batches of word-aligned parallel sentences: tokenised, padded, with word spans."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from xling_ray.methods.adjustment.words import Alignment, _encode_with_spans, split_words
from xling_ray.models.encode import MODEL_INPUTS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class AlignedBatch:
    """A padded batch of parallel sentences with their word alignments.

    - ``target`` / ``english``: tokenizer outputs, (B, T) / (B, S) tensors
      (``input_ids``, ``attention_mask``); feed them to :func:`encoder_hidden`.
    - ``target_spans[b][i]``: token positions of target word i of example b
      (``[]`` if truncation took all or part of it); likewise ``english_spans``.
    - ``alignments[b]``: the aligned (target word, English word) pairs of example
      b whose words both survived truncation.
    - ``target_special[b]`` / ``english_special[b]``: token positions of the
      special tokens (e.g. <s> and </s>), in order.
    - ``dropped``: aligned pairs lost to truncation in this batch.
    """

    target: dict[str, torch.Tensor]
    english: dict[str, torch.Tensor]
    target_spans: list[list[list[int]]]
    english_spans: list[list[list[int]]]
    alignments: list[Alignment]
    target_special: list[list[int]]
    english_special: list[list[int]]
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.alignments)

    @property
    def n_aligned(self) -> int:
        return sum(len(a) for a in self.alignments)

    def to(self, device: torch.device | str) -> "AlignedBatch":
        return AlignedBatch(
            {k: v.to(device) for k, v in self.target.items()},
            {k: v.to(device) for k, v in self.english.items()},
            self.target_spans, self.english_spans, self.alignments,
            self.target_special, self.english_special, self.dropped,
        )


def _special_positions(encoding: Any) -> list[list[int]]:
    mask = encoding["attention_mask"]
    return [
        [pos for pos, wid in enumerate(encoding.word_ids(b)) if wid is None and int(mask[b, pos])]
        for b in range(len(encoding.encodings))
    ]


def build_aligned_batch(
    tokenizer: "PreTrainedTokenizerBase",
    pairs: Sequence[tuple[str, str]],
    alignments: Sequence[Iterable[tuple[int, int]]],
    max_length: int = 128,
) -> AlignedBatch:
    """Tokenise parallel sentences (target, English) word by word into padded
    tensors and attach their alignments (target word, English word).

    An alignment index past the sentence's word count is an error (the
    alignment file does not belong to these sentences); a pair one of whose
    words was cut, wholly or in part, by ``max_length`` is dropped and counted
    in ``dropped``.
    """
    if len(pairs) != len(alignments):
        raise ValueError(f"build_aligned_batch: {len(pairs)} sentence pairs but {len(alignments)} alignments")
    t_words = [split_words(t) for t, _ in pairs]
    s_words = [split_words(s) for _, s in pairs]
    enc_t, t_spans = _encode_with_spans(tokenizer, t_words, max_length)
    enc_s, s_spans = _encode_with_spans(tokenizer, s_words, max_length)
    kept: list[Alignment] = []
    dropped = 0
    for b, alignment in enumerate(alignments):
        row: Alignment = []
        for i, j in alignment:
            if not (0 <= i < len(t_words[b]) and 0 <= j < len(s_words[b])):
                raise ValueError(
                    f"build_aligned_batch: example {b} aligns {i}-{j} but has {len(t_words[b])} target and "
                    f"{len(s_words[b])} English words ({pairs[b][0][:60]!r} / {pairs[b][1][:60]!r}); "
                    "are the alignments in the order of the sentence pairs, target word first?"
                )
            if i < len(t_spans[b]) and t_spans[b][i] and j < len(s_spans[b]) and s_spans[b][j]:
                row.append((i, j))
            else:
                dropped += 1
        kept.append(row)
    keep = lambda enc: {k: v for k, v in enc.items() if k in MODEL_INPUTS}  # noqa: E731
    return AlignedBatch(
        keep(enc_t), keep(enc_s), t_spans, s_spans, kept, _special_positions(enc_t), _special_positions(enc_s), dropped
    )


@dataclass
class AlignedCollator:
    """``collate_fn`` for a ``DataLoader`` over ``(target, english, alignment)`` items:

        loader = DataLoader(list(zip(targets, englishes, alignments)), batch_size=16,
                            shuffle=True, collate_fn=AlignedCollator(tokenizer, max_length=128))
    """

    tokenizer: Any
    max_length: int = 128

    def __call__(self, items: Sequence[tuple[str, str, Iterable[tuple[int, int]]]]) -> AlignedBatch:
        return build_aligned_batch(
            self.tokenizer, [(t, s) for t, s, _ in items], [a for _, _, a in items], self.max_length
        )
