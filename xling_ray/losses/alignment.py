"""Alignment and uniformity on the unit sphere: XLingLearn's distance-dispersion constraint.

A clean batch ``z`` and its perturbed view ``z~`` (e.g. after token
substitution) should map to nearby points (alignment), while the clean points
as a whole should spread over the sphere (uniformity), so that pulling views
together cannot collapse every sentence onto one point.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def alignment(z: torch.Tensor, z_tilde: torch.Tensor) -> torch.Tensor:
    """Alignment ``mean_i ||z_i - z~_i||^2`` of L2-normalised embeddings
    (Wang & Isola, ICML 2020, "Understanding contrastive representation learning
    through alignment and uniformity on the hypersphere", with their alpha = 2).

    - ``z``: (B, d) clean embeddings; ``z~``: (B, d) embeddings of their views,
      row i of ``z~`` is a view of row i of ``z``. Both are L2-normalised here,
      so the value lies in [0, 4].

    Orthogonal pairs give 2 and identical pairs 0, so one of each gives 1:

    >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> alignment(z, torch.tensor([[0.0, 1.0], [0.0, 1.0]])).item()
    1.0
    """
    if z.shape != z_tilde.shape or z.dim() != 2:
        raise ValueError(f"alignment: z and z_tilde must both be (B, d); got {tuple(z.shape)} and {tuple(z_tilde.shape)}")
    z, z_tilde = F.normalize(z.float(), dim=-1), F.normalize(z_tilde.float(), dim=-1)
    return (z - z_tilde).pow(2).sum(-1).mean()


def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity ``log mean_{i != j} exp(-t ||z_i - z_j||^2)`` of L2-normalised
    embeddings (Wang & Isola, ICML 2020; the log of the mean Gaussian potential).

    - ``z``: (B, d) embeddings, L2-normalised here; ``t`` > 0: the kernel's sharpness.

    Lower (more negative) is more spread out; the minimum over the sphere is
    reached by a uniform distribution. Squared distances are taken as
    ``2 - 2 <z_i, z_j>`` (exact on the sphere, with a finite gradient when two
    points coincide, unlike ``pdist``) and the mean is a ``logsumexp`` so a large
    ``t`` cannot underflow. A batch of one has no pair and gives 0 (no
    constraint), so a ragged last batch of size 1 adds nothing.

    Two orthogonal unit vectors are ``sqrt(2)`` apart, so with t = 2 the value is -2 * 2:

    >>> uniformity(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), t=2.0).item()
    -4.0
    """
    if z.dim() != 2:
        raise ValueError(f"uniformity: z must be (B, d); got {tuple(z.shape)}")
    n = z.shape[0]
    if n < 2:
        return z.float().sum() * 0.0  # keeps the graph (and the device) of z
    z = F.normalize(z.float(), dim=-1)
    i, j = torch.triu_indices(n, n, offset=1, device=z.device)
    # The mean over i != j equals the mean over i < j: the distance is symmetric.
    sq = (2.0 - 2.0 * (z[i] * z[j]).sum(-1)).clamp_min(0.0)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


def alignment_uniformity(z: torch.Tensor, z_tilde: torch.Tensor, beta: float = 1.0, t: float = 2.0) -> torch.Tensor:
    """XLingLearn's distance-dispersion constraint: alignment of each example
    with its perturbed view plus ``beta`` times the uniformity of the clean batch,

        L = mean_i ||z_i - z~_i||^2 + beta * log mean_{i != j} exp(-t ||z_i - z_j||^2)

    with every vector L2-normalised (Wang & Isola, ICML 2020).

    - ``z``: (B, d) clean sentence embeddings; ``z~``: (B, d) their perturbed views;
    - ``beta`` >= 0: weight of uniformity against alignment;
    - ``t`` > 0: sharpness of the Gaussian potential in the uniformity term.

    Choices left open and taken here: uniformity is over the clean batch only
    (the views are not pushed apart from each other); the alignment exponent is
    2; a batch of one has uniformity 0 (see :func:`uniformity`).

    Identical orthogonal views: alignment 0, uniformity -2t:

    >>> z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> alignment_uniformity(z, z, beta=0.5, t=2.0).item()
    -2.0
    """
    return alignment(z, z_tilde) + beta * uniformity(z, t)
