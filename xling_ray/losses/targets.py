"""Robust targets: train a view against a mix of the gold label and the model's own clean prediction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xling_ray.losses.classification import classification_loss


def robust_target_loss(
    logits: torch.Tensor, labels: torch.Tensor, reference_logits: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Cross-entropy against a soft "robust" target (the Robust targets of Ding
    et al., COLING 2022, "A Simple and Effective Method to Improve Zero-Shot
    Cross-Lingual Transfer Learning"),

        L = -1/B * sum_i sum_c t_ic log softmax(logits_i)_c
        t_i = (1 - gamma) * onehot(y_i) + gamma * stopgrad(softmax(reference_logits_i))

    - ``logits``: (B, C) logits of the view being trained (e.g. a perturbed view);
    - ``labels`` y: (B,) gold classes;
    - ``reference_logits``: (B, C) logits whose prediction is mixed into the
      target, typically the clean forward pass; detached here, so the target
      does not move to meet the prediction;
    - ``gamma`` in [0, 1]: 0 is plain cross-entropy (computed by
      :func:`classification_loss`, so the two are bit-identical), 1 is
      self-distillation onto the reference.

    Left open by the paper and taken here: the reference is the softmax at
    temperature 1, and gamma is constant (no schedule; a schedule belongs to
    the caller).

    With gamma = 1 and reference = logits the loss is the entropy of the
    prediction; for logits (0, 0) that is log 2:

    >>> z = torch.zeros(1, 2)
    >>> round(robust_target_loss(z, torch.tensor([0]), z, gamma=1.0).item(), 4)
    0.6931
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"robust_target_loss: gamma must be in [0, 1], got {gamma}")
    if gamma == 0.0:
        return classification_loss(logits, labels)
    logits = logits.float()
    onehot = F.one_hot(labels, num_classes=logits.shape[-1]).float()
    target = (1.0 - gamma) * onehot + gamma * F.softmax(reference_logits.detach().float(), dim=-1)
    return F.cross_entropy(logits, target)
