"""Loss terms of the training objective.

The objective of one step is

    L = CE(f(x), y) + sum_k w_k * L_k

where each regularizer ``L_k`` is a :class:`LossTerm` registered here with
:func:`register`. A term reads its weight from :class:`~xling_ray.config.LossConfig`;
weight 0 switches it off and it is then never evaluated, so it costs nothing.
Adding a regularizer is one new object registered in one place plus its
config fields: the training step does not change.
"""
from xling_ray.losses.base import LossTerm, StepContext, register, registered_terms
from xling_ray.losses.classification import classification_loss
from xling_ray.losses import terms as _terms  # noqa: F401  (registers the regularizers)

__all__ = ["LossTerm", "StepContext", "classification_loss", "register", "registered_terms"]
