"""The loss-term protocol: what a term reads in a step (:class:`StepContext`) and gives back."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from xling_ray.config import LossConfig


@dataclass
class StepContext:
    """What a loss term may read in one training step.

    ``outputs`` is the clean forward pass (a transformers ``SequenceClassifierOutput``,
    with ``attentions`` / ``hidden_states`` when an active term ``needs`` them).
    ``cache`` lets terms share work within the step, e.g. one perturbed forward
    pass used by several terms: the first term that needs it stores it under a key.
    ``state`` lives across the steps of one task's run (a neighbour table, a
    running centroid); the loop owns it and may seed it (``train_token_ids``).
    """

    model: torch.nn.Module
    batch: dict[str, torch.Tensor]
    outputs: Any
    config: LossConfig
    cache: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """Made once per step."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def persistent(self, key: str, make: Callable[[], Any]) -> Any:
        """Made once per run and kept in ``state``. An object with
        ``state_dict``/``load_state_dict`` is checkpointed, and restored here on resume."""
        if key not in self.state:
            obj = make()
            saved = self.state.get("saved", {}).get(key)
            if saved is not None:
                obj.load_state_dict(saved)
            self.state[key] = obj
        return self.state[key]


class LossTerm(Protocol):
    #: Name in logs and in the step's named parts, e.g. "sinkhorn".
    name: str
    #: Extra outputs of the clean forward pass it reads: "attentions", "hidden_states".
    needs: frozenset[str]

    def weight(self, config: LossConfig) -> float:
        """The term's weight ``w_k`` in the total loss; 0 means off."""

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        """The unweighted scalar value ``L_k``."""


NONE, HIDDEN, ATTENTIONS = frozenset(), frozenset({"hidden_states"}), frozenset({"attentions"})


@dataclass(frozen=True)
class Term:
    """A loss term: ``value(ctx)`` weighted by ``weight_of(config)``. A method lists its
    terms (:class:`xling_ray.methods.Method`); the training step asks every registered one."""

    name: str
    needs: frozenset[str]
    weight_of: Callable[[LossConfig], float]
    value: Callable[[StepContext], torch.Tensor]

    def weight(self, config: LossConfig) -> float:
        return self.weight_of(config)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return self.value(ctx)
