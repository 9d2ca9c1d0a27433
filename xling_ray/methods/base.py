"""What a method is, and the registry the training loop asks instead of branching on names.

A method (XLingLearn, Ding 2022, XITE, cross-lingual adjustment, ...) is one module that
builds a :class:`Method` and hands it to :func:`register`:

* ``key`` and ``settings``: its typed settings, read under ``losses.<key>`` of a recipe;
  ``settings.off()`` names the settings that switch it off (the one notion of "off": the
  method is ``active`` unless they all hold their off value, and the plain baseline of a
  sweep sets them, :func:`xling_ray.tune.space.plain_point`);
* ``terms``: its loss terms (:class:`~xling_ray.losses.base.Term`), each weighted by a
  setting; the step computes ``CE + sum_k w_k L_k`` over the terms of the active methods;
* ``prepare``: what it needs before training (:class:`Preparation`), with the step at which
  it runs: ``"task"`` once per task when the model is loaded (target-text pools, alignments,
  frozen copies; kept in the task's term state under the step's name), or ``"before"``
  after all tasks are built and before the first step (e.g. adjusting the weights; not on
  resume, the checkpoint has its result).

See ``docs/adding-a-method.md`` for a walk through a toy method.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from xling_ray.config import LossConfig, MethodSettings, RecipeConfig, register_method_settings
from xling_ray.losses.base import LossTerm

if TYPE_CHECKING:
    import torch

    from xling_ray.data import PairDataset


@dataclass
class PrepareContext:
    """What a preparation step may read: the recipe, the task, its model as loaded (no DDP
    wrapper), the tokenizer, the English training set (raw and tokenised), every evaluated
    set (for the leakage guard), the pad id, the device and the task's term state."""

    recipe: RecipeConfig
    task: str
    model: "torch.nn.Module"
    tokenizer: Any
    train_data: "PairDataset"
    train: Any
    eval_sets: dict[str, dict[str, "PairDataset"]]
    pad_id: int
    device: "torch.device"
    state: dict[str, Any] = field(default_factory=dict)

    def settings(self, key: str) -> MethodSettings:
        return getattr(self.recipe.losses, key)


@dataclass(frozen=True)
class Preparation:
    """One step a method runs before training.

    ``when="task"``: ``run(ctx)`` returns an object kept in the task's term state as
    ``state[name]`` (terms read it there). ``when="before"``: ``run(ctx)`` may change the
    model and returns metrics reported once, with the first evaluation, as
    ``loss_<task>_<key>``."""

    name: str
    run: Callable[[PrepareContext], Any]
    when: Literal["task", "before"] = "task"


@dataclass(frozen=True)
class Method:
    """A regularization method: its settings, loss terms and preparation steps."""

    key: str
    settings: type[MethodSettings]
    terms: tuple[LossTerm, ...] = ()
    prepare: tuple[Preparation, ...] = ()
    #: ``check(recipe, task, eval_sets)``: read the inputs the method's preparation will read
    #: (pool files, benchmark parts) and raise their error; run in the driver before Ray starts
    #: (:mod:`xling_ray.preflight`), so that a bad input fails once, not in every trial.
    check: Callable[[RecipeConfig, str, dict[str, dict[str, "PairDataset"]]], Any] | None = None

    def on(self, losses: LossConfig) -> bool:
        """Whether ``losses`` has this method, switched on (its settings' ``active``)."""
        settings = losses.methods().get(self.key)
        return settings is not None and bool(settings.active)


_METHODS: dict[str, Method] = {}


def register(method: Method, owner: str | None = None) -> Method:
    """Make ``method`` part of the recipes that name ``owner`` (default: the calling module)
    in ``methods:``: ``losses.<key>`` validates with its settings, the step weighs its
    terms, the loop runs its preparations. The recipe's ``methods:`` list imports that
    module wherever the recipe is read; another recipe of the process does not see it."""
    names = {t.name for m in _METHODS.values() if m.key != method.key for t in m.terms}
    clash = sorted(names & {t.name for t in method.terms} | ({"ce"} & {t.name for t in method.terms}))
    if clash:
        raise ValueError(f"method {method.key!r}: loss term name(s) {clash} already taken")
    off = method.settings.off()  # raises, naming the class, where the method does not say
    unknown = sorted(set(off) - set(method.settings.model_fields))
    if unknown:
        raise ValueError(f"method {method.key!r}: off() names {unknown}, which are not fields of "
                         f"{method.settings.__qualname__}")
    if method.settings.model_validate(off).active:
        raise ValueError(f"method {method.key!r}: its settings at off() {off} are still active; off() must name "
                         "every setting that switches it on")
    # The module that registers it: recipes that name it (or a package above it) in `methods:` have it.
    owner = sys._getframe(1).f_globals.get("__name__") if owner is None else owner
    register_method_settings(method.key, method.settings, owner=owner)
    _METHODS[method.key] = method
    return method


def unregister(key: str) -> None:
    """Undo :func:`register` for ``key``: its section, terms and preparations are gone from
    recipes read afterwards in this process. Registration is process-wide: a plug-in
    method registered for one sweep is in every recipe this process dumps until then."""
    from xling_ray.config import unregister_method_settings

    _METHODS.pop(key, None)
    unregister_method_settings(key)


def registered_methods() -> tuple[Method, ...]:
    """Every registered method, built-in ones first, in registration order."""
    import xling_ray.methods  # noqa: F401  (the built-in methods register on import)

    return tuple(_METHODS.values())


def registered_terms() -> tuple[LossTerm, ...]:
    """The loss terms of every registered method, in registration order."""
    return tuple(t for m in registered_methods() for t in m.terms)


def active_methods(losses: LossConfig) -> tuple[Method, ...]:
    """The methods of ``losses`` that are on (:attr:`~xling_ray.config.MethodSettings.active`),
    in registration order: the ones that prepare, and whose terms the step weighs."""
    return tuple(m for m in registered_methods() if m.on(losses))


def active_terms(losses: LossConfig) -> tuple[LossTerm, ...]:
    """The loss terms of the active methods (:func:`active_methods`), in registration order."""
    return tuple(t for m in active_methods(losses) for t in m.terms)
