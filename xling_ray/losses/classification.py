"""The task loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy ``-mean_i log softmax(logits_i)[y_i]``, optionally label-smoothed
    (Szegedy et al., 2016: the target is ``(1 - s) * onehot(y) + s / C``).

    Two classes with logits (0, 0) give ``log 2``:

    >>> round(classification_loss(torch.zeros(1, 2), torch.tensor([1])).item(), 4)
    0.6931
    """
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
