"""The loss formulas of the training objective, one function a formula.

The objective of one step is

    L = CE(f(x), y) + sum_k w_k * L_k

where each regularizer ``L_k`` is a :class:`~xling_ray.losses.base.Term` of a method
(:mod:`xling_ray.methods`); weight 0 switches it off and it is then never evaluated.
This package holds what the terms compute: cross-entropy (:mod:`.classification`),
alignment and uniformity (:mod:`.alignment`), attention consistency (:mod:`.attention`),
Sinkhorn divergences (:mod:`.transport`), robust targets (:mod:`.targets`), the perturbed
and pushed views (:mod:`.views`), and the term protocol (:mod:`.base`).
"""
from xling_ray.losses.base import LossTerm, StepContext, Term
from xling_ray.losses.classification import classification_loss

__all__ = ["LossTerm", "StepContext", "Term", "classification_loss"]

