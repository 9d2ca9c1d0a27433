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

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xling_ray.config import ConfigError, RecipeConfig, format_validation_error


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
    """A floor on a metric, e.g. English accuracy: ``metric >= baseline - delta``.

    A low gap bought by hurting English is not a win: with ``baseline`` the
    English accuracy of plain fine-tuning (a previous sweep's leaderboard),
    configurations below ``baseline - delta`` are infeasible. Optuna's sampler
    learns the constraint (``Trial.set_constraint``) and the leaderboard ranks
    infeasible configurations after the feasible ones."""

    metric: str = "acc_en"
    baseline: float = Field(description="the metric's reference value, e.g. acc_en of plain fine-tuning (percent)")
    delta: float = Field(1.0, ge=0, description="allowed drop below the baseline")

    @property
    def floor(self) -> float:
        return self.baseline - self.delta


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
    constraint: Constraint | None = None
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
        return self

    def param_space(self) -> dict[str, Any]:
        return {key: dist.to_tune() for key, dist in self.search.items()}


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
