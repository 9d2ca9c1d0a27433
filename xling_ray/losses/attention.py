"""Attention consistency: the perturbed view should attend like the clean one.

Maps are the ``attentions`` a transformers encoder returns with
``output_attentions=True``: one (B, H, T, T) tensor per layer, row ``q`` of
head ``h`` being a softmax distribution over the keys ``k``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

#: Floor inside the logarithms: a key with zero mass must not give log 0.
LOG_EPS = 1e-8

# The settings' types live with the settings, which a recipe reads without torch.
from xling_ray.method_settings import AttentionLayers, DivergenceKind  # noqa: E402


def _masked_rows(attn: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Zero the mass on padding keys and renormalise every row to sum to 1."""
    attn = attn.float() * key_mask
    return attn / attn.sum(-1, keepdim=True).clamp_min(LOG_EPS)


def _kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``sum_k p log(p / q)`` per row; terms with p = 0 are 0."""
    return (p * (p.clamp_min(LOG_EPS).log() - q.clamp_min(LOG_EPS).log())).sum(-1)


def attention_divergence(
    reference: torch.Tensor,
    other: torch.Tensor,
    attention_mask: torch.Tensor,
    kind: DivergenceKind = "kl",
) -> torch.Tensor:
    """Divergence between two attention maps of one layer, averaged over the
    real query rows of every head and example:

        D = 1/(H * N) * sum_{b, h} sum_{q real in b} d(p_{bhq}, q_{bhq})

        kl:            d(p, q) = sum_k p_k log(p_k / q_k)
        symmetric_kl:  d(p, q) = (KL(p || q) + KL(q || p)) / 2
        mse:           d(p, q) = 1/n_b * sum_k (p_k - q_k)^2

    - ``reference`` p: (B, H, T, T) maps of the clean input, detached here
      (stop-gradient: the clean view is the target, only ``other`` moves);
    - ``other`` q: (B, H, T, T) maps of the perturbed input, same shape;
    - ``attention_mask``: (B, T), 1 for real tokens, 0 for padding;
      ``n_b`` is the number of real tokens of example b and ``N = sum_b n_b``.

    Consistency of attention between a clean and a perturbed view follows
    Ding et al. (COLING 2022) and XLingLearn; the papers leave open:

    - which rows count: only query rows of real tokens; padding rows (which
      attend to something arbitrary) are dropped;
    - padding keys: their mass is set to 0 and each row renormalised over the
      real keys. A transformers encoder already gives them ~0 mass, so this
      changes nothing there, and it makes the value independent of how much
      padding the batch has;
    - the averaging: every real row of every head weighs the same, so a longer
      sentence weighs more than a short one;
    - ``log``: both arguments are floored at ``LOG_EPS`` so a zero in ``q``
      gives a large finite value, not ``inf``.

    Reference rows all on the first of two keys, other rows uniform:
    KL = 1 * log(1 / 0.5) = log 2 for each row:

    >>> p = torch.tensor([1.0, 0.0]).expand(1, 1, 2, 2)
    >>> q = torch.tensor([0.5, 0.5]).expand(1, 1, 2, 2)
    >>> round(attention_divergence(p, q, torch.ones(1, 2), "kl").item(), 4)
    0.6931
    """
    if reference.shape != other.shape or reference.dim() != 4 or reference.shape[-1] != reference.shape[-2]:
        raise ValueError(
            f"attention_divergence: maps must both be (B, H, T, T); got {tuple(reference.shape)} and {tuple(other.shape)}"
        )
    batch, _, length, _ = reference.shape
    if attention_mask.shape != (batch, length):
        raise ValueError(
            f"attention_divergence: attention_mask is {tuple(attention_mask.shape)}, expected {(batch, length)}"
        )
    mask = attention_mask.to(device=other.device, dtype=torch.float32)
    p = _masked_rows(reference.detach(), mask[:, None, None, :])
    q = _masked_rows(other, mask[:, None, None, :])
    if kind == "kl":
        rows = _kl_rows(p, q)
    elif kind == "symmetric_kl":
        rows = 0.5 * (_kl_rows(p, q) + _kl_rows(q, p))
    elif kind == "mse":
        n_keys = mask.sum(-1).clamp_min(1.0)[:, None, None]
        rows = (p - q).pow(2).sum(-1) / n_keys
    else:
        raise ValueError(f"attention_divergence: kind={kind!r}; use 'kl', 'symmetric_kl' or 'mse'")
    row_mask = mask[:, None, :]  # (B, 1, T): real query rows
    n_rows = row_mask.sum() * rows.shape[1]
    return (rows * row_mask).sum() / n_rows.clamp_min(1.0)


def select_layers(attentions: Sequence[torch.Tensor], layers: Literal["last", "all"] | int) -> list[int]:
    """Indices of the layers whose attention is compared: ``"last"``, ``"all"``,
    or an int k >= 1 for the last k layers.

    >>> select_layers([None] * 12, 3)
    [9, 10, 11]
    """
    n = len(attentions)
    if n == 0:
        raise ValueError("select_layers: no attention maps; run the model with output_attentions=True")
    if layers == "last":
        return [n - 1]
    if layers == "all":
        return list(range(n))
    if isinstance(layers, int) and not isinstance(layers, bool):
        if not 1 <= layers <= n:
            raise ValueError(f"select_layers: layers={layers}, but the model has {n} layers; use 1..{n}")
        return list(range(n - layers, n))
    raise ValueError(f"select_layers: layers={layers!r}; use 'last', 'all' or a number of last layers")


def attention_consistency(
    ref_attns: Sequence[torch.Tensor],
    other_attns: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    layers: Literal["last", "all"] | int = "last",
    kind: DivergenceKind = "kl",
) -> torch.Tensor:
    """Mean of :func:`attention_divergence` over the chosen layers,

        L = 1/|S| * sum_{l in S} D(A^l_clean, A^l_perturbed)

    with S = :func:`select_layers` ``(ref_attns, layers)``. Both views must have
    the same token positions (same length), e.g. token substitution or an
    embedding-space push.

    Identical maps give 0:

    >>> a = (torch.full((1, 1, 2, 2), 0.5),) * 2
    >>> attention_consistency(a, a, torch.ones(1, 2), "all").item()
    0.0
    """
    if len(ref_attns) != len(other_attns):
        raise ValueError(f"attention_consistency: {len(ref_attns)} reference layers but {len(other_attns)} other layers")
    chosen = select_layers(ref_attns, layers)
    return torch.stack([attention_divergence(ref_attns[i], other_attns[i], attention_mask, kind) for i in chosen]).mean()
