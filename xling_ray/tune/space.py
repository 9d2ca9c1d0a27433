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


class SweepConfig(_Strict):
    num_samples: int = Field(4, ge=1)
    metric: str = "gap"
    mode: Literal["min", "max"] = "min"
    seed: int = Field(0, description="seeds Optuna's TPE sampler")
    n_startup_trials: int = Field(10, ge=0, description="TPE's random trials before it models the space")
    max_concurrent_trials: int | None = Field(None, ge=1, description="default: as many as the resources allow")
    scheduler: SchedulerConfig = SchedulerConfig()
    max_failures: int = Field(0, ge=0, description="retries of a failed trial")


class SearchSpace(_Strict):
    recipe: RecipeConfig = RecipeConfig()
    search: dict[str, Distribution] = Field(default_factory=dict)
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _fields_exist(self) -> "SearchSpace":
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
