"""Cao et al.'s (ICLR 2020) adjustment objective ``L_align + base_rate * L_reg``: one function a formula."""
from __future__ import annotations

from typing import NamedTuple

import torch

from xling_ray.methods.adjustment.batches import AlignedBatch
from xling_ray.methods.adjustment.words import WordMode, _span_vectors
from xling_ray.models.encode import encoder_hidden


def _special_pairs(t_special: list[int], s_special: list[int]) -> list[tuple[int, int]]:
    if len(t_special) == len(s_special):
        return list(zip(t_special, s_special))
    # Unequal counts (e.g. a tokenizer adding a language tag): pair the ends only.
    return [(t_special[0], s_special[0]), (t_special[-1], s_special[-1])] if t_special and s_special else []


def alignment_loss(
    target_hidden: torch.Tensor,
    english_hidden: torch.Tensor,
    batch: AlignedBatch,
    mode: WordMode = "mean",
    include_special: bool = False,
) -> torch.Tensor:
    """Cao et al.'s (ICLR 2020) alignment term, as a mean:

        L_align = 1/|A| sum_{b} sum_{(i, j) in A_b} ||f(t_b)_i - f(s_b)_j||^2

    - ``target_hidden``: (B, T, d) encoder vectors of ``batch.target``;
      ``english_hidden``: (B, S, d) of ``batch.english`` (same model, same layer);
    - ``A_b = batch.alignments[b]``, ``|A|`` the number of pairs in the batch
      (each aligned pair weighs the same, so long sentences weigh more, as in
      the paper's sum); ``f(x)_i`` the vector of word i by :func:`word_vectors`
      with ``mode`` ("mean", "first" or "last" subword);
    - ``include_special``: the special tokens count as aligned pairs too
      (<s> with <s>, </s> with </s>; [CLS]/[SEP] for BERT), so the sentence
      vector a classifier reads from position 0 is pulled together as well.

    Squared distances are summed over the d hidden dims (not averaged), as in
    the paper. A batch with no aligned pair gives 0 (keeping the graph).
    The full objective is :func:`adjustment_loss` ``(L_align, L_reg, base_rate)``.

    Two one-word sentences whose vectors differ by (3, 4) give 25:

    >>> b = AlignedBatch({}, {}, [[[1]]], [[[1]]], [[(0, 0)]], [[0, 2]], [[0, 2]])
    >>> t = torch.zeros(1, 3, 2); s = torch.zeros(1, 3, 2); s[0, 1] = torch.tensor([3.0, 4.0])
    >>> alignment_loss(t, s, b).item()
    25.0
    >>> alignment_loss(t, s, b, include_special=True).item()  # plus two pairs at distance 0
    8.333333015441895
    """
    if target_hidden.dim() != 3 or english_hidden.dim() != 3:
        raise ValueError(
            f"alignment_loss: hidden states must be (B, T, d); got {tuple(target_hidden.shape)} "
            f"and {tuple(english_hidden.shape)}"
        )
    if target_hidden.shape[0] != len(batch) or english_hidden.shape[0] != len(batch):
        raise ValueError(
            f"alignment_loss: batch of {len(batch)} examples but hidden states for "
            f"{target_hidden.shape[0]} / {english_hidden.shape[0]}"
        )
    rows: list[int] = []
    t_spans: list[list[int]] = []
    s_spans: list[list[int]] = []
    for b, alignment in enumerate(batch.alignments):
        for i, j in alignment:
            rows.append(b)
            t_spans.append(batch.target_spans[b][i])
            s_spans.append(batch.english_spans[b][j])
        if include_special:
            for k, l in _special_pairs(batch.target_special[b], batch.english_special[b]):
                rows.append(b)
                t_spans.append([k])
                s_spans.append([l])
    if not rows:
        return (target_hidden.sum() + english_hidden.sum()) * 0.0
    t_vec = _span_vectors(target_hidden, rows, t_spans, mode)
    s_vec = _span_vectors(english_hidden, rows, s_spans, mode)
    return (t_vec.float() - s_vec.float()).pow(2).sum(-1).mean()


def regularization_loss(
    english_hidden: torch.Tensor, english_hidden_original: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Cao et al.'s (ICLR 2020) regularizer, as a mean: keep English where the
    original model put it,

        L_reg = 1/N sum_{b} sum_{k : m_bk = 1} ||f(s_b)_k - f0(s_b)_k||^2

    - ``english_hidden``: (B, S, d) vectors of the English side from the model
      being adjusted; ``english_hidden_original``: the same from ``f0``
      (:func:`frozen_copy`), computed by the caller under ``no_grad`` (detached
      here anyway);
    - ``attention_mask``: (B, S), 1 for real tokens (special tokens included),
      ``N`` their number. Squared distances summed over hidden dims.

    It is 0 at the start of adjustment only if both passes are deterministic:
    with dropout on (train mode) it also measures dropout noise.

    >>> h0 = torch.zeros(1, 3, 2); h = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [9.0, 9.0]]])
    >>> regularization_loss(h, h0, torch.tensor([[1, 1, 0]])).item()  # (2 + 4) / 2; padding ignored
    3.0
    """
    if english_hidden.shape != english_hidden_original.shape or english_hidden.dim() != 3:
        raise ValueError(
            f"regularization_loss: hidden states must both be (B, S, d); got {tuple(english_hidden.shape)} "
            f"and {tuple(english_hidden_original.shape)}"
        )
    mask = attention_mask.to(english_hidden.device, torch.float32)
    sq = (english_hidden.float() - english_hidden_original.detach().float()).pow(2).sum(-1)
    return (sq * mask).sum() / mask.sum().clamp_min(1.0)


def adjustment_loss(align: torch.Tensor, reg: torch.Tensor, base_rate: float) -> torch.Tensor:
    """Cao et al.'s objective ``L = L_align + base_rate * L_reg``: ``base_rate``
    (their lambda) trades moving the target language onto English against
    moving English away from what the pre-trained model (and so the English
    task head) expects.

    >>> adjustment_loss(torch.tensor(2.0), torch.tensor(3.0), base_rate=0.5).item()
    3.5
    """
    return align + base_rate * reg


class AdjustmentParts(NamedTuple):
    total: torch.Tensor
    align: torch.Tensor
    reg: torch.Tensor


def adjustment_objective(
    model: torch.nn.Module,
    original: torch.nn.Module,
    batch: AlignedBatch,
    base_rate: float,
    mode: WordMode = "mean",
    include_special: bool = False,
    layer: int = -1,
) -> AdjustmentParts:
    """One step's ``L_align + base_rate * L_reg`` on an :class:`AlignedBatch`
    already on the model's device: ``model`` on both sides, the frozen
    ``original`` (:func:`frozen_copy`) on the English side under ``no_grad``,
    all at hidden ``layer`` (-1: the last, as in Cao et al.). Three encoder
    passes; with ``base_rate == 0`` the frozen pass is skipped."""
    h_t = encoder_hidden(model, batch.target, layer)
    h_s = encoder_hidden(model, batch.english, layer)
    align = alignment_loss(h_t, h_s, batch, mode=mode, include_special=include_special)
    if base_rate == 0:
        reg = align.new_zeros(())
    else:
        with torch.no_grad():
            h_s0 = encoder_hidden(original, batch.english, layer)
        reg = regularization_loss(h_s, h_s0, batch.english["attention_mask"])
    return AdjustmentParts(adjustment_loss(align, reg, base_rate), align, reg)
