"""Search spaces: a YAML file of fixed recipe settings, distributions and sweep settings.

.. code-block:: yaml

    recipe:                 # a RecipeConfig: what every trial shares
      data: {train_size: 256}
    search:                 # dotted recipe field -> distribution
      train.lr: {loguniform: [1.0e-5, 1.0e-3]}
      train.warmup_ratio: {uniform: [0.0, 0.2]}
      train.epochs: {int: [1, 3]}
      train.batch_size: {choice: [8, 16]}
    sweep:
      num_samples: 4

Everything is validated on load: the recipe, each distribution, and that each
searched field exists and accepts the distribution's values.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from xling_ray.config import ConfigError, RecipeConfig, format_validation_error
from xling_ray.methods import registered_methods


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """Exactly one of: ``loguniform: [low, high]``, ``uniform: [low, high]``,
    ``int: [low, high]`` (inclusive), ``logint: [low, high]``, ``choice: [values...]``."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    logint: tuple[int, int] | None = None
    choice: tuple[Any, ...] | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        given = [k for k in ("loguniform", "uniform", "int_", "logint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, int, logint, choice")
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice needs at least one value")
        else:
            low, high = getattr(self, kind)
            if not low < high:
                raise ValueError(f"{kind.rstrip('_')}: low ({low}) must be below high ({high})")
            if kind in ("loguniform", "logint") and low <= 0:
                raise ValueError(f"{kind}: low must be positive, got {low}")
        return self

    @property
    def kind(self) -> str:
        for k in ("loguniform", "uniform", "int_", "logint", "choice"):
            if getattr(self, k) is not None:
                return k.rstrip("_")
        raise AssertionError

    def to_tune(self):
        """The Ray Tune domain; OptunaSearch converts it to Optuna's distribution."""
        from ray import tune

        k = self.kind
        if k == "loguniform":
            return tune.loguniform(*self.loguniform)
        if k == "uniform":
            return tune.uniform(*self.uniform)
        if k == "int":
            return tune.randint(self.int_[0], self.int_[1] + 1)  # Tune's upper bound is exclusive
        if k == "logint":
            return tune.lograndint(self.logint[0], self.logint[1] + 1)
        return tune.choice(list(self.choice))

    def midpoint(self) -> Any:
        """The value a setting takes where nothing else says which: the middle of the range
        (on the log scale for ``loguniform`` and ``logint``: the geometric mean; ``int``:
        rounded down, ``logint``: to the nearest integer), or the first ``choice``.

        >>> Distribution(loguniform=(1e-5, 1e-3)).midpoint()
        0.0001
        """
        k = self.kind
        if k == "choice":
            return self.choice[0]
        if k == "uniform":
            return (self.uniform[0] + self.uniform[1]) / 2
        if k == "loguniform":
            return float(f"{math.sqrt(self.loguniform[0] * self.loguniform[1]):.12g}")
        if k == "int":
            return (self.int_[0] + self.int_[1]) // 2
        return int(round(math.sqrt(self.logint[0] * self.logint[1])))

    def extremes(self) -> list[Any]:
        """Values that every trial's config must accept (checked on load)."""
        k = self.kind
        if k == "choice":
            return list(self.choice)
        return list({"loguniform": self.loguniform, "uniform": self.uniform, "int": self.int_, "logint": self.logint}[k])


class SchedulerConfig(_Strict):
    """ASHA (Li et al., 2020) stops poor trials early at epochs ``grace_period * reduction_factor**k``."""

    type: Literal["asha", "fifo"] = "fifo"
    grace_period: float = Field(1, gt=0, description="epochs before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1)


class Constraint(_Strict):
    """A floor on a metric, English accuracy by default: a configuration whose mean over its
    seeds falls below it is infeasible. A low gap bought by hurting English is no win.

    ``baseline`` is what the floor is measured against:

    * a number (e.g. ``acc_en`` of plain fine-tuning in an earlier sweep):
      ``floor = baseline - delta``;
    * ``plain``: the sweep measures it itself. It runs plain fine-tuning (the recipe with
      every loss weight at 0, :func:`plain_point`) first, with the same seeds, and
      ``floor = plain's mean metric - delta``; until that configuration has finished no
      configuration is judged infeasible;
    * ``majority``: ``floor = majority_en + delta``, plus, not minus: English accuracy must
      beat predicting each task's most frequent evaluation class by ``delta`` (each trial
      reports ``majority_en``; needs ``metric: acc_en``).

    Optuna's sampler learns the floor (``Trial.set_constraint``, see
    :mod:`xling_ray.tune.search`) and the leaderboard ranks infeasible configurations
    after the feasible ones."""

    metric: str = "acc_en"
    baseline: float | Literal["plain", "majority"] = Field(
        description="the metric's reference value (percent), or plain, or majority (see the class docstring)")
    delta: float = Field(1.0, ge=0, description="allowed drop below the baseline (majority: required margin above it)")

    @field_validator("baseline", mode="before")
    @classmethod
    def _known_baseline(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("plain", "majority"):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"baseline: a number (the metric's reference value), 'plain' (measured by the sweep) "
                                 f"or 'majority' (the constant predictor); got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _majority_is_english(self) -> "Constraint":
        if self.baseline == "majority" and self.metric != "acc_en":
            raise ValueError(f"baseline majority is the English accuracy of the constant predictor (majority_en): "
                             f"it needs metric acc_en, not {self.metric!r}")
        return self

    @property
    def relative(self) -> bool:
        """Whether the floor is measured in the sweep (``plain``, ``majority``), not given."""
        return isinstance(self.baseline, str)

    def floor_from(self, reference: float) -> float:
        """The floor given the reference value: ``reference + delta`` for ``majority``
        (beat the constant predictor), ``reference - delta`` for ``plain`` and a number."""
        return reference + self.delta if self.baseline == "majority" else reference - self.delta

    @property
    def floor(self) -> float | None:
        """The floor of a numeric baseline; ``None`` for ``plain`` and ``majority``, which
        resolve from the trials (:func:`xling_ray.leaderboard.table.resolve_floor`)."""
        return None if self.relative else self.floor_from(float(self.baseline))


# ---------------------------------------------------------------- the plain baseline

class _LossSwitches(Mapping):
    """``losses.label_smoothing`` and each registered method's switches
    (:attr:`xling_ray.methods.Method.switches`), read from the registry when used, so a
    method registered later (a recipe's ``methods:``) is included."""

    def _items(self) -> dict[str, Any]:
        return {"losses.label_smoothing": 0.0,
                **{f"losses.{m.key}.{f}": off for m in registered_methods() for f, off in m.switch_values().items()}}

    def __getitem__(self, key: str) -> Any:
        return self._items()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())


#: Settings that turn a part of the objective beyond cross-entropy on by themselves,
#: each with the value that turns it off (the settings' defaults). The plain baseline
#: switches these off even where ``recipe`` fixes them (e.g. adjustment.yaml's
#: ``regime: before``), not only where they are searched.
LOSS_SWITCHES: Mapping[str, Any] = _LossSwitches()


def loss_off_value(key: str) -> Any | None:
    """The value that switches the searched setting ``key`` off in the plain baseline, or
    ``None`` when ``key`` is not a loss weight.

    A loss weight is a setting under ``losses.`` that is

    * a term's weight ``w_*`` (XLingLearn's four, Ding 2022's two, continual
      adjustment's ``w_align`` and ``w_reg``): 0.0;
    * adjustment's ``base_rate`` (the weight of L_reg before fine-tuning): 0.0;
    * ``xite.ratio`` (synthetic examples per real one): 0.0;
    * ``adjustment.regime``: ``"off"``;
    * ``label_smoothing``: 0.0 (plain cross-entropy).

    Every other setting of a method (``p_sub``, ``rho``, ``lam``, pool sizes, ...) does
    nothing once its weights are 0, and is not one.
    """
    if not key.startswith("losses."):
        return None
    if key in LOSS_SWITCHES:
        return LOSS_SWITCHES[key]
    for m in registered_methods():
        weights = {f"losses.{m.key}.{f}": off for f, off in m.weight_values().items()}
        if key in weights:
            return weights[key]
    return 0.0 if key.rsplit(".", 1)[-1].startswith("w_") else None


def plain_point(recipe: RecipeConfig, search: dict[str, Distribution],
                points_to_evaluate: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """The settings of the plain baseline: plain fine-tuning under the sweep's budget.

    * every searched loss weight at its off value (:func:`loss_off_value`);
    * every other searched setting (``train.lr``, ``losses.xite.lam``, ...) at its value in
      the first ``points_to_evaluate`` entry (the space's reference configuration), or,
      without one, at its distribution's :meth:`~Distribution.midpoint`;
    * plus, beyond the searched keys, each :data:`LOSS_SWITCHES` setting that ``recipe``
      fixes on, switched off (adjustment.yaml's ``losses.adjustment.regime: off``).
    """
    first = points_to_evaluate[0] if points_to_evaluate else {}
    point: dict[str, Any] = {}
    for key, dist in search.items():
        off = loss_off_value(key)
        point[key] = off if off is not None else first.get(key, dist.midpoint())
    fixed = recipe.model_dump()
    for key, off in LOSS_SWITCHES.items():
        if key in search:
            continue
        value = fixed
        for part in key.split("."):
            value = value[part]
        if value != off:
            point[key] = off
    return point


def same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two configurations' settings are equal: the same keys, numbers equal to
    1e-9 relative (values read back from a CSV or numpy), everything else ``==``."""
    if set(a) != set(b):
        return False
    for key, x in a.items():
        y = b[key]
        x, y = (v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v for v in (x, y))
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers:
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=0.0):
                return False
        elif x != y:
            return False
    return True


class SweepConfig(_Strict):
    """How the sweep searches. ``metric``/``mode`` take one name (single objective) or a
    list (multi-objective: Optuna keeps a Pareto front, e.g. ``[gap, acc_target]`` with
    ``[min, max]``)."""

    num_samples: int = Field(4, ge=1, description="configurations to try (each runs `seeds` trials)")
    seeds: int = Field(
        3, ge=1,
        description="trials per configuration, with train.seed, train.seed+1, ...; ranked on their mean")
    metric: str | tuple[str, ...] = "gap"
    mode: Literal["min", "max"] | tuple[Literal["min", "max"], ...] = "min"
    constraint: Constraint | None = Field(
        None, description="a floor on a metric (English accuracy); null: only collapsed models are ranked last")
    sampler: Literal["tpe", "nsga2", "random"] = Field("tpe", description="Optuna sampler (all handle several objectives)")
    seed: int = Field(0, description="seeds Optuna's sampler")
    n_startup_trials: int = Field(10, ge=0, description="TPE's random configurations before it models the space")
    points_to_evaluate: tuple[dict[str, Any], ...] = Field(
        (), description="configurations to try first (searched keys -> values), e.g. a known good one")
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: as many as the resources allow")
    scheduler: SchedulerConfig = SchedulerConfig()
    max_failures: int = Field(0, ge=0, description="retries of a failed trial (e.g. a lost node); NaN losses fail at once")

    @model_validator(mode="after")
    def _consistent(self) -> "SweepConfig":
        metrics, modes = self.metrics, self.modes
        if len(metrics) != len(modes):
            raise ValueError(f"sweep.metric has {len(metrics)} name(s) but sweep.mode has {len(modes)}")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"sweep.metric names a metric twice: {list(metrics)}")
        if self.seeds > 1 and self.scheduler.type == "asha":
            raise ValueError("sweep.scheduler asha with sweep.seeds > 1: ASHA stops each seed on its own, so a "
                             "configuration's mean would mix epochs; use scheduler fifo, or seeds: 1")
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    @property
    def modes(self) -> tuple[str, ...]:
        return (self.mode,) * len(self.metrics) if isinstance(self.mode, str) else tuple(self.mode)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


class SearchSpace(_Strict):
    """A sweep: ``recipe`` fixed, ``search`` sampled by Optuna. With nothing to search the
    sweep runs the recipe once per seed (``num_samples`` is then moot): a baseline."""

    recipe: RecipeConfig = RecipeConfig()
    search: dict[str, Distribution] = Field(default_factory=dict)
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _fields_exist(self) -> "SearchSpace":
        for i, point in enumerate(self.sweep.points_to_evaluate):
            unknown = sorted(set(point) - set(self.search))
            if unknown:
                raise ValueError(f"sweep.points_to_evaluate[{i}]: {unknown} not searched; searched: {sorted(self.search)}")
            try:
                self.recipe.with_updates(point)
            except ConfigError as err:
                raise ValueError(f"sweep.points_to_evaluate[{i}] is not a valid recipe setting: {err}") from None
        for key, dist in self.search.items():
            for value in dist.extremes():
                try:
                    self.recipe.with_updates({key: value})
                except ConfigError as err:
                    raise ValueError(f"search.{key} = {value!r} is not a valid recipe setting: {err}") from None
        if self.baseline_point is not None:
            if not self.search and self.baseline_point:
                raise ValueError(f"sweep.constraint baseline plain: nothing is searched, so the sweep runs the recipe "
                                 f"alone, and its recipe is not plain fine-tuning ({self.baseline_point} would be); "
                                 "give a number or majority")
            try:
                self.recipe.with_updates(self.baseline_point)
            except ConfigError as err:
                raise ValueError(f"sweep.constraint baseline plain: the plain configuration is not a valid recipe: {err}") from None
        return self

    def param_space(self) -> dict[str, Any]:
        return {key: dist.to_tune() for key, dist in self.search.items()}

    @property
    def baseline_point(self) -> dict[str, Any] | None:
        """The plain baseline's settings (:func:`plain_point`) when ``sweep.constraint`` has
        ``baseline: plain``; else ``None``."""
        c = self.sweep.constraint
        if c is None or c.baseline != "plain":
            return None
        return plain_point(self.recipe, self.search, self.sweep.points_to_evaluate)

    @property
    def runs_baseline_first(self) -> bool:
        """Whether the sweep adds the plain baseline before ``points_to_evaluate``: with
        ``baseline: plain``, unless an identical point is already there (then that one is
        the baseline) or nothing is searched (then the recipe itself is)."""
        point = self.baseline_point
        return (point is not None and bool(self.search)
                and not any(same_settings(point, p) for p in self.sweep.points_to_evaluate))

    def first_points(self) -> tuple[dict[str, Any], ...]:
        """The configurations the sweep tries first: the plain baseline when
        :attr:`runs_baseline_first`, then ``sweep.points_to_evaluate``. The added baseline
        is one configuration more than ``num_samples``."""
        points = tuple(dict(p) for p in self.sweep.points_to_evaluate)
        return ((self.baseline_point,) + points) if self.runs_baseline_first else points


def load_search_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """Read and validate a search space; ``overrides`` (dotted, e.g.
    ``recipe.data.data_dir``) are applied before validation. Errors name the
    file and the field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search space file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'recipe', 'search' and 'sweep'")
    if overrides:
        from xling_ray.config import set_dotted

        raw = set_dotted(raw, overrides)
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
