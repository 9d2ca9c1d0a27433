"""XITE's building blocks: cross-lingual interpolation of embeddings.

XITE (Fazili & Jyothi, 2026, "XITE: Cross-lingual Interpolation for Transfer
using Embeddings", arXiv:2604.23589) turns unlabeled target-language text into
synthetic training data in four steps, one function each here:

1. encode the target texts and the English training set with a frozen encoder
   (:func:`xling_ray.models.encode.encode_texts`, shared with the diagnostics);
2. give each target text the label of its nearest English training examples
   (a vote of the ``k`` nearest) and pair it with the nearest of those that carry
   that label (:func:`match_to_english`);
3. optionally project the target embeddings into a language-discriminant
   subspace found by linear discriminant analysis with the language as the
   class (:class:`LanguageLDA`);
4. interpolate each (English, target) pair, ``e = lam e_src + (1 - lam) e_tgt``,
   and train on ``e`` with the label of both (:func:`interpolate`,
   :func:`sample_lambda`).

All are pure functions of tensors (no training state), so the training loop
decides when to call them (once before training, or again every epoch).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["LanguageLDA", "Match", "interpolate", "match_to_english", "sample_lambda"]


# ---------------------------------------------------------------- 2. match


@dataclass(frozen=True)
class Match:
    """Result of :func:`match_to_english`, one entry per target row.

    - ``indices`` (n,) long: row of the paired English example, the nearest of the
      top-k neighbours whose label is ``labels`` (with ``k = 1``: the nearest), so
      ``english_labels[indices] == labels`` always;
    - ``labels`` (n,) long: the label given to the target row (top-k vote);
    - ``similarity`` (n,) float: cosine similarity to the paired English example;
    - ``keep`` (n,) bool: ``similarity >= tau`` (all True when ``tau`` is None).
    """

    indices: torch.Tensor
    labels: torch.Tensor
    similarity: torch.Tensor
    keep: torch.Tensor

    def __len__(self) -> int:
        return self.indices.shape[0]


def match_to_english(
    target: torch.Tensor,
    english: torch.Tensor,
    english_labels: torch.Tensor,
    k: int = 1,
    tau: float | None = None,
    chunk_size: int = 4096,
) -> Match:
    """Label each target embedding by its nearest English training examples and pair it
    with one that carries that label (XITE's step 2),

        s_ij = <t_i, e_j> / (||t_i|| ||e_j||),
        y_i = argmax_c |{j in N_k(i) : y_j = c}|,
        j*(i) = argmax_{j in N_k(i), y_j = y_i} s_ij,     keep_i = [s_{i j*(i)} >= tau]

    - ``t_i``: row i of ``target`` (n, d); ``e_j``: row j of ``english`` (m, d);
    - ``y_j``: ``english_labels[j]``, integers >= 0;
    - ``N_k(i)``: the ``k`` English rows most similar to ``t_i``;
    - ``j*(i)`` (``indices``): the English example XITE interpolates ``t_i`` with.

    Choices left open: cosine similarity (embeddings of different languages
    differ in norm). With ``k > 1`` the pair is the nearest neighbour *among the
    voters for the winning label*, not the nearest neighbour overall: the synthetic
    example ``lam e_{j*} + (1 - lam) t_i`` is trained on ``y_i``, and with ``lam``
    near 1 it is mostly ``e_{j*}``, whose own label must then be ``y_i``. So
    ``y_{j*(i)} = y_i`` always; with ``k = 1``, ``j*(i)`` is the nearest row. A tie
    in the vote goes to the tied label whose best neighbour is nearest, so
    ``k = 2`` always agrees with ``k = 1``. ``similarity`` is ``s_{i j*(i)}``, that
    of the pair actually interpolated, and ``tau`` filters on it: a target row is
    kept when its partner is at least ``tau`` similar (with ``k > 1`` that is at
    most the nearest row's similarity, so ``k > 1`` keeps no more rows than
    ``k = 1``). ``tau`` never changes the labels (``keep`` is a mask, rows are
    never dropped here).
    Similarities are computed ``chunk_size`` target rows at a time, so memory
    is ``chunk_size x m`` whatever ``n`` is.
    """
    if target.dim() != 2 or english.dim() != 2 or target.shape[1] != english.shape[1]:
        raise ValueError(
            f"match_to_english: target (n, d) and english (m, d) must share d; got {tuple(target.shape)} and {tuple(english.shape)}"
        )
    m = english.shape[0]
    if english_labels.shape != (m,):
        raise ValueError(f"match_to_english: english_labels must be ({m},), got {tuple(english_labels.shape)}")
    if not 1 <= k <= m:
        raise ValueError(f"match_to_english: k must be in 1..{m} (the English rows), got {k}")
    if chunk_size < 1:
        raise ValueError(f"match_to_english: chunk_size must be >= 1, got {chunk_size}")
    labels_en = english_labels.long().to(english.device)
    if m and int(labels_en.min()) < 0:
        raise ValueError("match_to_english: english_labels must be >= 0")
    num_classes = int(labels_en.max()) + 1
    eng = F.normalize(english.float(), dim=-1)
    indices, labels, sims = [], [], []
    for start in range(0, target.shape[0], chunk_size):
        tgt = F.normalize(target[start : start + chunk_size].float().to(eng.device), dim=-1)
        top_sim, top_idx = (tgt @ eng.T).topk(k, dim=1)  # sorted, nearest first
        top_labels = labels_en[top_idx]  # (c, k)
        counts = F.one_hot(top_labels, num_classes).sum(1)  # (c, C)
        # A neighbour votes for a winning label if its label has the top count;
        # argmax returns the first such neighbour, i.e. the nearest. Its label is
        # the assigned one and it is the pair: the nearest voter for that label.
        winners = counts.gather(1, top_labels) == counts.max(1, keepdim=True).values
        first = winners.int().argmax(1, keepdim=True)
        indices.append(top_idx.gather(1, first).squeeze(1))
        labels.append(top_labels.gather(1, first).squeeze(1))
        sims.append(top_sim.gather(1, first).squeeze(1))
    if not indices:
        empty = torch.empty(0, dtype=torch.long)
        return Match(empty, empty.clone(), torch.empty(0), torch.empty(0, dtype=torch.bool))
    similarity = torch.cat(sims)
    keep = torch.ones_like(similarity, dtype=torch.bool) if tau is None else similarity >= tau
    return Match(torch.cat(indices), torch.cat(labels), similarity, keep)


# ---------------------------------------------------------------- 3. project


class LanguageLDA:
    """Linear discriminant analysis with the language as the class, and the
    projection of embeddings onto its discriminant subspace (XITE's step 3).

    Fitting finds directions ``W = [w_1 .. w_k]`` (d, k) that maximise the
    Fisher criterion ``w^T S_B w / w^T S_W w`` (scikit-learn's
    ``LinearDiscriminantAnalysis``), with

    - ``S_B``: between-language scatter of the language means around ``mu``;
    - ``S_W``: within-language scatter (shrunk towards a scaled identity when
      ``shrinkage`` is set: Ledoit-Wolf for ``"auto"``, or a float in [0, 1]);
    - ``mu``: the mean of the fitted embeddings; ``k <= L - 1`` for ``L`` languages.

    :meth:`transform` gives the coordinates ``z = (e - mu) W`` (k-dim).
    :meth:`project` maps back into the d-dim embedding space, so the result can
    be interpolated with English embeddings:

        phi(e) = mu + P (e - mu),     P = Q Q^T,  Q an orthonormal basis of span(W)

    Choice left open and taken here: ``P`` is the *orthogonal* projector onto
    the span of the discriminant directions (equivalently, the least-squares
    reconstruction of ``e`` from its LDA coordinates), so ``phi`` is idempotent
    and keeps the components of ``e - mu`` that tell languages apart while
    dropping the rest. (LDA's own metric would instead whiten by ``S_W``; that
    changes lengths inside the subspace, not the subspace.) The solver is
    ``"svd"`` without shrinkage and ``"eigen"`` with it (scikit-learn's svd
    solver cannot shrink).
    """

    def __init__(self) -> None:
        self.languages: tuple[str, ...] = ()
        self.mean: torch.Tensor | None = None  # (d,)
        self.directions: torch.Tensor | None = None  # W, (d, k)
        self.basis: torch.Tensor | None = None  # Q, (d, k) orthonormal columns
        self.lda = None  # the fitted scikit-learn estimator

    @property
    def n_components(self) -> int:
        self._check_fitted()
        return self.directions.shape[1]

    def _check_fitted(self) -> None:
        if self.directions is None:
            raise RuntimeError("LanguageLDA: call fit(embeddings, languages) first")

    def fit(
        self,
        embeddings: torch.Tensor,
        languages: Sequence[str],
        n_components: int | None = None,
        shrinkage: None | str | float = None,
    ) -> LanguageLDA:
        """Fit on ``embeddings`` (n, d), row i in language ``languages[i]``; returns ``self``.

        ``n_components`` defaults to ``L - 1`` (all discriminant directions);
        ``shrinkage``: None, ``"auto"`` or a float in [0, 1] (see the class doc).
        """
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        if embeddings.dim() != 2:
            raise ValueError(f"LanguageLDA.fit: embeddings must be (n, d), got {tuple(embeddings.shape)}")
        n, d = embeddings.shape
        languages = list(languages)
        if len(languages) != n:
            raise ValueError(f"LanguageLDA.fit: {n} embeddings but {len(languages)} language labels")
        distinct = tuple(dict.fromkeys(languages))
        if len(distinct) < 2:
            raise ValueError(
                f"LanguageLDA.fit: needs embeddings of at least 2 languages to find language-discriminant "
                f"directions, got {list(distinct)}; add e.g. English embeddings"
            )
        max_components = min(len(distinct) - 1, d)
        if n_components is not None and not 1 <= n_components <= max_components:
            raise ValueError(
                f"LanguageLDA.fit: n_components must be in 1..{max_components} "
                f"(languages - 1 = {len(distinct) - 1}, d = {d}), got {n_components}"
            )
        if isinstance(shrinkage, str) and shrinkage != "auto":
            raise ValueError(f"LanguageLDA.fit: shrinkage must be None, 'auto' or a float in [0, 1], got {shrinkage!r}")
        if shrinkage is None:
            lda = LinearDiscriminantAnalysis(solver="svd", n_components=n_components)
        else:
            lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage, n_components=n_components)
        x = embeddings.detach().to("cpu", torch.float64).numpy()
        lda.fit(x, np.asarray(languages))
        k = min(lda._max_components, lda.scalings_.shape[1])  # svd drops directions beyond the rank
        w = torch.from_numpy(np.ascontiguousarray(lda.scalings_[:, :k]))
        # An orthonormal basis of span(W) via SVD (robust if W is ill-conditioned).
        u, s, _ = torch.linalg.svd(w, full_matrices=False)
        rank = int((s > s[0] * 1e-10).sum()) if s.numel() else 0
        self.languages = distinct
        self.mean = torch.from_numpy(x.mean(0)).float()
        self.directions = w.float()
        self.basis = u[:, :rank].float()
        self.lda = lda
        return self

    def _params(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._check_fitted()
        d = self.mean.shape[0]
        if e.shape[-1] != d:
            raise ValueError(f"LanguageLDA: fitted on d={d}, got a tensor of shape {tuple(e.shape)}")
        dtype = e.dtype if e.is_floating_point() else torch.float32
        return (t.to(e.device, dtype) for t in (self.mean, self.directions, self.basis))

    def transform(self, e: torch.Tensor) -> torch.Tensor:
        """LDA coordinates ``z = (e - mu) W``: (..., d) -> (..., k)."""
        mean, w, _ = self._params(e)
        return (e - mean) @ w

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """``phi(e) = mu + P (e - mu)`` in the embedding space: (..., d) -> (..., d),
        for sentence embeddings (n, d) and token states (B, T, d) alike."""
        mean, _, q = self._params(e)
        return mean + ((e - mean) @ q) @ q.T


# ---------------------------------------------------------------- 4. interpolate


def interpolate(e_src: torch.Tensor, e_tgt: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """XITE's synthetic example: ``e = lam * e_src + (1 - lam) * e_tgt``.

    - ``e_src``: English embeddings (B, ...) (sentence (B, d) or token states (B, T, d));
    - ``e_tgt``: target-language embeddings of the same shape, row i matched to row i;
    - ``lam``: a scalar, or a (B,) tensor broadcast over the trailing dims.

    Written as two products rather than ``torch.lerp`` so that ``lam = 1`` gives
    ``e_src`` and ``lam = 0`` gives ``e_tgt`` exactly. Token-level use needs
    both sides padded to the same length; which attention mask goes with ``e``
    is the caller's choice.

    >>> interpolate(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), 0.25)
    tensor([[0.2500, 1.5000]])
    """
    if e_src.shape != e_tgt.shape:
        raise ValueError(f"interpolate: e_src and e_tgt must have the same shape; got {tuple(e_src.shape)} and {tuple(e_tgt.shape)}")
    lam = torch.as_tensor(lam, dtype=e_src.dtype, device=e_src.device)
    if lam.dim() == 1:
        if e_src.dim() == 0 or lam.shape[0] != e_src.shape[0]:
            raise ValueError(f"interpolate: lam of shape {tuple(lam.shape)} does not match {e_src.shape[0] if e_src.dim() else 0} rows")
        lam = lam.reshape(-1, *([1] * (e_src.dim() - 1)))
    elif lam.dim() != 0:
        raise ValueError(f"interpolate: lam must be a scalar or a (B,) tensor, got shape {tuple(lam.shape)}")
    return lam * e_src + (1 - lam) * e_tgt


def sample_lambda(alpha: float, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` interpolation weights ``lam ~ Beta(alpha, alpha)``, as in mixup
    (Zhang et al., ICLR 2018, "mixup: Beyond empirical risk minimization").

    ``alpha`` > 0: small values put ``lam`` near 0 or 1 (mostly one side), 1 is
    uniform, large values concentrate near 0.5. Returns a float32 (n,) tensor in
    [0, 1]. torch's Beta sampler takes no generator, so a seed is drawn from
    ``generator`` (advancing it) and numpy draws the Betas: the result depends
    only on the generator's state.
    """
    if not alpha > 0:
        raise ValueError(f"sample_lambda: alpha must be > 0, got {alpha}")
    if n < 0:
        raise ValueError(f"sample_lambda: n must be >= 0, got {n}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    draws = np.random.default_rng(seed).beta(alpha, alpha, size=n)
    return torch.from_numpy(draws).float().clamp_(0.0, 1.0)
