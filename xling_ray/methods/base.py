"""What a method is, and the registry the training loop asks instead of branching on names.

A method (XLingLearn, Ding 2022, XITE, cross-lingual adjustment, ...) is one module that
builds a :class:`Method` and hands it to :func:`register`:

* ``key`` and ``settings``: its typed settings, read under ``losses.<key>`` of a recipe;
* ``terms``: its loss terms (:class:`~xling_ray.losses.base.Term`), each weighted by a
  setting; the step computes ``CE + sum_k w_k L_k`` over every registered term;
* ``prepare``: what it needs before training (:class:`Preparation`), with the step at which
  it runs: ``"task"`` once per task when the model is loaded (target-text pools, alignments,
  frozen copies; kept in the task's term state under the step's name), or ``"before"``
  after all tasks are built and before the first step (e.g. adjusting the weights; not on
  resume, the checkpoint has its result);
* ``switches``, ``weights``: the settings that turn it on, with the value that turns each
  off (the plain baseline of a sweep, :func:`xling_ray.tune.space.plain_point`).

See ``docs/adding-a-method.md`` for a walk through a toy method.
"""
from __future__ import annotations

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


def _w_fields(settings: type[MethodSettings]) -> dict[str, Any]:
    return {f: 0.0 for f in settings.model_fields if f.startswith("w_")}


@dataclass(frozen=True)
class Method:
    """A regularization method: its settings, loss terms and preparation steps."""

    key: str
    settings: type[MethodSettings]
    terms: tuple[LossTerm, ...] = ()
    prepare: tuple[Preparation, ...] = ()
    #: Settings that turn the method on by themselves -> their off value (default: every ``w_*`` at 0).
    switches: dict[str, Any] | None = None
    #: Loss weights switched off where a sweep searches them (default: every ``w_*`` at 0).
    weights: dict[str, Any] | None = None
    #: ``check(recipe, task, eval_sets)``: read the inputs the method's preparation will read
    #: (pool files, benchmark parts) and raise their error; run in the driver before Ray starts
    #: (:mod:`xling_ray.preflight`), so that a bad input fails once, not in every trial.
    check: Callable[[RecipeConfig, str, dict[str, dict[str, "PairDataset"]]], Any] | None = None

    def switch_values(self) -> dict[str, Any]:
        return _w_fields(self.settings) if self.switches is None else dict(self.switches)

    def weight_values(self) -> dict[str, Any]:
        return {**_w_fields(self.settings), **(self.weights or {}), **self.switch_values()}

    def on(self, losses: LossConfig) -> bool:
        return bool(getattr(losses, self.key).active)


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` part of every recipe: ``losses.<key>`` validates with its settings,
    the step weighs its terms, the loop runs its preparations. Import the module that calls
    this before a recipe naming ``losses.<key>`` is read (a recipe's ``methods:`` list does)."""
    names = {t.name for m in _METHODS.values() if m.key != method.key for t in m.terms}
    clash = sorted(names & {t.name for t in method.terms} | ({"ce"} & {t.name for t in method.terms}))
    if clash:
        raise ValueError(f"method {method.key!r}: loss term name(s) {clash} already taken")
    register_method_settings(method.key, method.settings)
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
    return tuple(m for m in registered_methods() if m.on(losses))
