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

from xling_ray.config import ConfigError, RecipeConfig, format_validation_error, method_settings


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
    """Early stopping. ``fifo``: none, every trial trains to its end. ``asha``: asynchronous
    successive halving (Li et al., 2020) over seed groups
    (:class:`xling_ray.tune.early_stopping.SeedGroupASHA`): a configuration's seeds are judged
    together, on the mean of their metric, at rungs of ``grace_period * reduction_factor**k``
    training examples (the clock ``examples_seen`` every report carries), ``k = 0, 1, ...``,
    below ``max_t``; at each rung the configurations outside the best ``1 / reduction_factor``
    of those judged there so far are stopped, all their seeds at once.

    A rung is judged at the first evaluation at or past it, so a trial that evaluates only at
    the end of its single epoch is never judged: set ``train.eval_every_examples`` (and
    ``train.eval_subset_per_language`` for cheap evaluations) to give it rungs."""

    type: Literal["asha", "fifo"] = "fifo"
    grace_period: int | None = Field(
        None, ge=1, description="training examples (examples_seen) before a configuration can be stopped: the first "
                                "rung; default train.eval_every_examples, else one epoch")
    max_t: int | None = Field(
        None, ge=1, description="training examples of a whole trial (ASHA's max_t); default: the recipe's, "
                                "train.epochs x the tasks' data.train_size summed")
    reduction_factor: float = Field(2, gt=1, description="keep the best 1/reduction_factor at each rung; rungs "
                                                         "reduction_factor times apart")

    @model_validator(mode="after")
    def _grace_below_max_t(self) -> "SchedulerConfig":
        if self.grace_period is not None and self.max_t is not None and self.grace_period >= self.max_t:
            raise ValueError(f"sweep.scheduler.grace_period ({self.grace_period} examples) must be below "
                             f"sweep.scheduler.max_t ({self.max_t} examples): a configuration is judged only at rungs "
                             "before the end of its training")
        return self

    def milestones(self, grace_period: int, max_t: int) -> list[int]:
        """The rungs, in training examples: ``grace_period * reduction_factor**k`` for
        ``k < int(log(max_t / grace_period) / log(reduction_factor) + 1)`` (Tune's ASHA bracket,
        one bracket), those below ``max_t`` (a trial at ``max_t`` has ended: it is stopped there,
        not judged).

        >>> SchedulerConfig(type="asha").milestones(1000, 4000)
        [1000, 2000]
        """
        count = int(math.log(max_t / grace_period) / math.log(self.reduction_factor) + 1)
        rungs = [grace_period * self.reduction_factor ** k for k in range(count)]
        return [int(r) if float(r).is_integer() else r for r in rungs if r < max_t]


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

def off_settings(methods: "Mapping[str, type[BaseModel]] | None" = None) -> dict[str, Any]:
    """Dotted setting -> the value that switches it off: ``losses.label_smoothing`` (0.0, plain
    cross-entropy) and, for each method of ``methods`` (key -> settings class; default: every
    registered one), the settings its :meth:`~xling_ray.config.MethodSettings.off` names."""
    methods = method_settings() if methods is None else methods
    return {"losses.label_smoothing": 0.0,
            **{f"losses.{key}.{f}": off for key, settings in methods.items() for f, off in settings.off().items()}}


class _LossSwitches(Mapping):
    """:func:`off_settings` of every registered method, read from the registry when used,
    so a method registered later (a recipe's ``methods:``) is included."""

    def __getitem__(self, key: str) -> Any:
        return off_settings()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(off_settings())

    def __len__(self) -> int:
        return len(off_settings())


#: The settings that switch a part of the objective beyond cross-entropy off, each with its
#: off value (:func:`off_settings`). The plain baseline sets them all, searched or fixed
#: (e.g. adjustment.yaml's ``regime: before``).
LOSS_SWITCHES: Mapping[str, Any] = _LossSwitches()


def loss_off_value(key: str) -> Any | None:
    """The value that switches the setting ``key`` off in the plain baseline, or ``None``
    when ``key`` switches nothing (:func:`off_settings`): XLingLearn's four ``w_*`` and Ding
    2022's two at 0.0, ``xite.ratio`` 0.0, ``adjustment.regime`` ``"off"``, ``label_smoothing``
    0.0, and what each plug-in method's ``off()`` names. Every other setting of a method
    (``p_sub``, ``rho``, ``lam``, adjustment's ``base_rate``, pool sizes, ...) does nothing once
    its method is off, and is not one."""
    return LOSS_SWITCHES.get(key)


def plain_point(recipe: RecipeConfig, search: dict[str, Distribution],
                points_to_evaluate: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """The settings of the plain baseline: plain fine-tuning under the sweep's budget.

    * every setting that switches a method of ``recipe`` off (each method's ``off()``, built-in
      or named in ``methods:``; :func:`off_settings`) at its off value, where searched and
      where ``recipe`` fixes it otherwise (adjustment.yaml's ``losses.adjustment.regime: off``);
    * every other searched setting (``train.lr``, ``losses.xite.lam``, ...) at its value in
      the first ``points_to_evaluate`` entry (the space's reference configuration), or,
      without one, at its distribution's :meth:`~Distribution.midpoint`. The shipped method
      spaces fix ``train.lr`` (the method and plain compare at one learning rate).
    """
    first = points_to_evaluate[0] if points_to_evaluate else {}
    offs = off_settings({key: type(settings) for key, settings in recipe.losses.methods().items()})
    point: dict[str, Any] = {}
    for key, dist in search.items():
        point[key] = offs[key] if key in offs else first.get(key, dist.midpoint())
    fixed = recipe.model_dump()
    for key, off in offs.items():
        if key in search:
            continue
        value = fixed
        for part in key.split("."):
            value = value[part]
        if value != off:
            point[key] = off
    return point


def methods_on(recipe: RecipeConfig) -> list[str]:
    """What of ``recipe``'s objective is on beyond cross-entropy: its active methods' keys and
    ``label_smoothing`` when not 0. Empty for plain fine-tuning."""
    on = [key for key, settings in recipe.losses.methods().items() if settings.active]
    return on + (["label_smoothing"] if recipe.losses.label_smoothing else [])


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
        if (self.scheduler.type == "asha" and self.seeds > 1 and self.max_concurrent_trials is not None
                and self.max_concurrent_trials < self.seeds):
            raise ValueError(f"sweep.max_concurrent_trials ({self.max_concurrent_trials}) is below sweep.seeds "
                             f"({self.seeds}) with scheduler asha: a configuration's seeds wait, paused, at each rung "
                             "until all have reached it, and a paused seed still counts against the limit, so the last "
                             "seed would never start; allow at least as many trials as seeds, or leave it unset")
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
                plain = self.recipe.with_updates(self.baseline_point)
            except ConfigError as err:
                raise ValueError(f"sweep.constraint baseline plain: the plain configuration is not a valid recipe: {err}") from None
            on = methods_on(plain)
            if on:
                raise ValueError(f"sweep.constraint baseline plain: the plain configuration {self.baseline_point} leaves "
                                 f"{on} on; a method's off() must name every setting that switches it on")
        return self

    @model_validator(mode="after")
    def _asha_has_rungs(self) -> "SearchSpace":
        if self.sweep.scheduler.type == "asha":
            self.asha_clock()
        return self

    def trial_examples(self) -> int | None:
        """Training examples of a whole trial of this recipe (``examples_seen`` at its end): per
        epoch, each task's ``data.train_size`` rounded down to a multiple of the workers (each
        worker steps on an equal share), summed over tasks; times ``train.epochs``. ``None`` where
        the recipe does not fix it: no ``train_size`` (the whole training set), or a space that
        searches ``train.epochs``, ``data.train_size``, ``data.tasks`` or ``scaling.num_workers``."""
        r = self.recipe
        searched = {"train.epochs", "data.train_size", "data.tasks", "scaling.num_workers"} & set(self.search)
        sizes = [r.data.train_size_of(t) for t in r.data.tasks]
        if None in sizes or searched:
            return None
        workers = r.scaling.num_workers
        return r.train.epochs * sum((n // workers) * workers for n in sizes)

    def asha_clock(self) -> tuple[int, int]:
        """``(grace_period, max_t)`` of ``sweep.scheduler`` in training examples, the defaults
        resolved (:class:`SchedulerConfig`), checked so that a trial reports at least one
        evaluation at or past the first rung before its end (else ASHA never judges anything).
        Raises ``ValueError`` naming the field to set."""
        sched, r = self.sweep.scheduler, self.recipe
        max_t = sched.max_t or self.trial_examples()
        if max_t is None:
            why = ("data.train_size is not set: each trial trains on the whole training set" if r.data.train_size is None
                   else "the space searches " + ", ".join(sorted({"train.epochs", "data.train_size", "data.tasks",
                                                                   "scaling.num_workers"} & set(self.search))))
            raise ValueError(f"sweep.scheduler.max_t: not given, and the recipe does not fix a trial's length in "
                             f"training examples ({why}); give max_t in training examples (the examples_seen a trial "
                             "reports at its end)")
        every = None if "train.eval_every_examples" in self.search else r.train.eval_every_examples
        epoch = self.trial_examples() // r.train.epochs if self.trial_examples() else None
        # The evaluations a trial reports before its end, where the recipe fixes them.
        points = None
        known = not {"train.eval_every_examples", "train.eval_every_steps"} & set(self.search)
        if known and epoch is not None and r.train.eval_every_steps is None:
            points = [k * every for k in range(1, max_t // every + 1) if k * every < max_t] if every else []
            points += [e * epoch for e in range(1, r.train.epochs) if e * epoch < max_t]
            if not points:
                raise ValueError(
                    f"sweep.scheduler asha: a trial of this recipe is evaluated only at the end of its "
                    f"{r.train.epochs} epoch(s) (train.eval_every_examples is not set), so it reports nothing before "
                    "its end for ASHA to judge; set train.eval_every_examples (e.g. --set "
                    "train.eval_every_examples=1000, with train.eval_subset_per_language for cheap evaluations during "
                    "the epoch)")
        grace = sched.grace_period or every or epoch
        if grace is None:
            raise ValueError("sweep.scheduler.grace_period: not given, and neither train.eval_every_examples nor the "
                             "length of an epoch gives a first rung; give it in training examples")
        if grace >= max_t:
            raise ValueError(f"sweep.scheduler.grace_period ({grace} examples) must be below max_t ({max_t} examples, "
                             "a whole trial): a configuration is judged only at rungs before the end of its training")
        if points and max(points) < grace:
            raise ValueError(
                f"sweep.scheduler.grace_period ({grace} examples): the last evaluation before a trial's end is at "
                f"{max(points)} examples, so no configuration would ever be judged; lower grace_period or evaluate "
                "more often (train.eval_every_examples)")
        return grace, max_t

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


def load_search_space(path: str | Path, overrides: dict[str, Any] | None = None,
                      budget: str | Path | None = None) -> SearchSpace:
    """Read and validate a search space; ``budget`` (a name such as ``full``, or a file:
    :mod:`xling_ray.tune.budget`) is composed in first, then ``overrides`` (dotted, e.g.
    ``recipe.data.data_dir``) are applied, before validation. Errors name the
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
    if budget is not None:
        from xling_ray.tune.budget import apply_budget, load_budget

        raw = apply_budget(raw, load_budget(budget, path))
    if overrides:
        from xling_ray.config import set_dotted

        raw = set_dotted(raw, overrides)
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None


# ---------------------------------------------------------------- --set keys


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The settings class a field holds (``Constraint | None`` -> ``Constraint``), else ``None``."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(annotation: Any) -> bool:
    import typing

    return any(typing.get_origin(a) is dict or a is dict for a in (annotation, *typing.get_args(annotation)))


def _setting_paths(cls: type[BaseModel], prefix: str, out: dict[str, bool]) -> None:
    """``out[dotted path] = whether it is a mapping`` (whose entries ``path.key`` are settings too),
    for every field of ``cls`` and of the sections under it."""
    fields = dict(cls.model_fields)
    for name, info in fields.items():
        path = f"{prefix}{name}"
        out[path] = _is_mapping(info.annotation)
        section = _section_class(info.annotation)
        if section is not None:
            _setting_paths(section, f"{path}.", out)
    if cls.__name__ == "LossConfig":  # each registered method's section (losses.<key>.<field>)
        from xling_ray.config import method_settings

        for key, settings in method_settings().items():
            out[f"{prefix}{key}"] = False
            _setting_paths(settings, f"{prefix}{key}.", out)


def setting_paths(with_sweep: bool = True) -> dict[str, bool]:
    """Every dotted setting a ``--set`` may name, in full form (``recipe.train.lr``, ``sweep.num_samples``),
    each with whether it is a mapping (``recipe.model.config_overrides.hidden_size`` is then a setting too)."""
    out: dict[str, bool] = {}
    _setting_paths(RecipeConfig, "recipe.", out)
    if with_sweep:
        _setting_paths(SweepConfig, "sweep.", out)
    return out


def set_key(key: str, space: SearchSpace | None = None, source: str = "the space", with_sweep: bool = True) -> str:
    """The full dotted form of a ``--set`` key, checked.

    ``recipe.train.lr`` and ``train.lr`` (a recipe section first) name the same setting, for
    ``sweep``, ``final`` and ``train`` alike; ``sweep.<field>`` a sweep setting (only where
    ``with_sweep``). Raises :class:`ConfigError` for a key that names no setting, with the
    nearest one it might mean, and for a recipe setting that ``space`` searches (every trial
    draws its own value, so a fixed one cannot hold)."""
    import difflib

    paths = setting_paths(with_sweep)
    full = key if key.startswith(("recipe.", "sweep.")) else f"recipe.{key}"
    known = full in paths or any(full.startswith(f"{p}.") and mapping for p, mapping in paths.items())
    if not known:
        # Compare with and without "recipe.", so that `train.lrr` finds `recipe.train.lr`.
        short = {p.removeprefix("recipe."): p for p in paths}
        near = difflib.get_close_matches(key, list(short) + list(paths), n=1, cutoff=0.6)
        hint = (f"did you mean {short.get(near[0], near[0])}?" if near else
                "settings are recipe.<section>.<field> (sections: " + ", ".join(RecipeConfig.model_fields) + ")"
                + (" or sweep.<field>" if with_sweep else ""))
        where = "" if with_sweep or not key.startswith("sweep.") else " (sweep settings are fixed once the sweep ran)"
        raise ConfigError(f"--set {key}: no such setting{where}; {hint}")
    if space is not None and full.startswith("recipe."):
        searched = full.removeprefix("recipe.")
        if searched in space.search:
            dist = space.search[searched]
            values = getattr(dist, dist.kind if dist.kind != "int" else "int_")
            raise ConfigError(
                f"--set {key}: {source} searches {searched} ({dist.kind} {list(values)}), so each configuration "
                f"sets its own value; change the range under search: in a copy of the space, or move {searched} "
                "to recipe: to fix it")
    return full
