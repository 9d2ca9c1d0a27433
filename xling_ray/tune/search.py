"""The search algorithm: Optuna's sampler behind Ray Tune's ``OptunaSearch``, every
configuration repeated over seeds.

* One or several objectives: ``OptunaSearch(metric=[...], mode=[...])`` with an
  Optuna sampler (TPE, NSGA-II or random; all three handle several objectives).
* An optional floor (:class:`~xling_ray.tune.space.Constraint`):
  :class:`ConstrainedOptunaSearch` sets it on the Optuna trial
  (``Trial.set_constraint``) before it tells Optuna the result, with the floor
  known when the result arrives: a number's ``baseline - delta``; ``majority``:
  the configuration's own ``majority_en + delta``; ``plain``: the plain
  baseline's observed mean ``- delta`` once it has finished, and before that
  the configuration is reported feasible (a constraint value is set once).
* Seeds: :class:`SeedGroups`, Tune's ``Repeater`` generalised to several
  metrics: each configuration Optuna suggests runs ``seeds`` times (Tune trials
  with ``__trial_index__`` 0..n-1), and Optuna is told the mean over the seeds
  once all have finished. A configuration with a failed seed is failed.
* The plain baseline (``constraint.baseline: plain``): :class:`SeedGroups` runs
  it first, before asking Optuna, over the same seeds, and hands its mean to
  :class:`ConstrainedOptunaSearch`. Optuna is not told its result: it is a
  reference, not a sample of the space (its weights at 0 lie outside a log
  range, which Optuna refuses).

The whole state (Optuna's study and sampler, the seed groups) is saved by Tune
with the experiment state and restored by ``Tuner.restore``; :func:`load_study`
reads the study back from a run folder.

Ray's ``OptunaSearch`` has no public handle on its Optuna study or on the Optuna
trial of a Tune trial; the two private attributes read for them (``_ot_study``,
``_ot_trials``) are read in :func:`optuna_study` and :func:`optuna_trial` only,
which fail with the attribute's name and :data:`RAY_TESTED` when a Ray release
changes them (pyproject pins Ray to that range; tests/test_search_apis.py checks it).
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX

from xling_ray.tune.space import Constraint, SearchSpace, SweepConfig, same_settings

_FAILED = "__failed__"

#: The Ray releases whose ``OptunaSearch`` private attributes this module was tested
#: with (the range pyproject allows): the lowest by CI's lowest-versions step, the newest by its main run.
RAY_TESTED = ">=2.52,<2.61"


def _ray_private(searcher: OptunaSearch, name: str):
    try:
        return getattr(searcher, name)
    except AttributeError:
        import ray

        raise RuntimeError(
            f"ray {ray.__version__}: OptunaSearch has no attribute {name!r}, which xling_ray.tune.search reads "
            f"(no public API gives it); tested with ray{RAY_TESTED}") from None


def optuna_study(searcher: OptunaSearch):
    """The Optuna study behind Ray's ``OptunaSearch`` (its private ``_ot_study``)."""
    return _ray_private(searcher, "_ot_study")


def optuna_trial(searcher: OptunaSearch, trial_id: str):
    """The live Optuna trial Ray's ``OptunaSearch`` asked for Tune trial ``trial_id``
    (its private ``_ot_trials``), or ``None`` if it asked none for it."""
    return _ray_private(searcher, "_ot_trials").get(trial_id)


class ConstrainedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that also sets a constraint on the Optuna trial before telling
    its result: ``trial.set_constraint(metric, floor - value)``, feasible when <= 0.
    Optuna's TPE and NSGA-II samplers then prefer feasible regions. The floor is the
    one known when the result arrives (:meth:`floor_for`)."""

    # Defaults for a searcher pickled by an earlier version (a sweep resumed across an upgrade).
    _guard: Constraint | None = None
    _plain_reference: float | None = None

    _persistent = False  # a searcher pickled before studies had a storage of their own

    def __init__(self, *args, constraint: Constraint | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._persistent = kwargs.get("storage") is not None
        self._guard = constraint
        self._plain_reference: float | None = None  # the plain baseline's mean of the metric, once known

    def set_plain_reference(self, value: float) -> None:
        """The plain baseline's mean of the constraint's metric over its seeds."""
        self._plain_reference = float(value)

    @property
    def guard(self) -> Constraint | None:
        """The constraint; a searcher pickled before relative floors kept ``_constraint = (metric, floor)``."""
        if self._guard is None and getattr(self, "_constraint", None):
            metric, floor = self._constraint
            return Constraint(metric=metric, baseline=floor, delta=0.0)
        return self._guard

    def floor_for(self, result: dict) -> float | None:
        """The floor for a configuration's (mean) ``result``: a number's ``baseline - delta``;
        ``majority``: ``result["majority_en"] + delta``; ``plain``: the baseline's mean
        ``- delta``. ``None`` while unknown (plain's baseline not finished, no
        ``majority_en`` reported): the configuration is then reported feasible."""
        c = self.guard
        if c is None:
            return None
        if not c.relative:
            return c.floor
        reference = self._plain_reference if c.baseline == "plain" else result.get("majority_en")
        if reference is None or math.isnan(reference):
            return None
        return c.floor_from(float(reference))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        trial = optuna_trial(self, trial_id)
        if trial is not None and _finished(optuna_study(self), trial.number):
            # A persistent study already has it: Tune saved its state before the trial ended
            # and a resumed sweep ran it again. Telling twice is an error in Optuna.
            _ray_private(self, "_ot_trials").pop(trial_id, None)
            return
        c = self.guard
        if trial is not None and result and c:
            value = result.get(c.metric)
            if value is not None and not math.isnan(value):
                floor = self.floor_for(result)
                slack = 0.0 if floor is None else floor - float(value)
                trial.set_constraint(c.metric, slack)
                # optuna-dashboard (0.21) shows constraints in Optuna's older list format only:
                # the same value as user attributes, which it shows for every trial.
                trial.set_user_attr(f"constraint_{c.metric}", slack)
                trial.set_user_attr("feasible", slack <= 0)
        super().on_trial_complete(trial_id, result=result, error=error)

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore; then, in a persistent study, the trials asked after that state was
        saved (a killed driver) are told failed: no Tune trial will ever report them."""
        super().restore(checkpoint_path)
        if not self._persistent:
            return
        import optuna

        study = optuna_study(self)
        live = {t.number for t in _ray_private(self, "_ot_trials").values()}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.number not in live:
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _finished(study, number: int) -> bool:
    trials = study.get_trials(deepcopy=False)
    return number < len(trials) and trials[number].state.is_finished()


def optuna_storage(url: str | None):
    """The Optuna storage a sweep's study lives in: ``None`` (in memory, inside Tune's saved
    searcher only), an RDB URL (``sqlite:///...``, ``postgresql://...``, ``mysql://...``:
    ``RDBStorage``) or a journal file (a path: ``JournalStorage``, what optuna-dashboard and
    ``optuna.load_study`` open, and what several processes may append to)."""
    if not url:
        return None
    import optuna

    if re.match(r"^[a-z][a-z0-9+]*://", url) and not url.startswith("file://"):
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    path = Path(url.removeprefix("file://")).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def check_new_study(url: str, study_name: str) -> None:
    """Refuse a new sweep whose study name a persistent storage already holds: Ray's
    ``OptunaSearch`` would silently continue that study (``load_if_exists``)."""
    import optuna

    from xling_ray.config import ConfigError

    try:
        names = optuna.study.get_all_study_names(optuna_storage(url))
    except Exception as err:  # unreachable database, unreadable journal
        raise ConfigError(f"--optuna-storage {url}: cannot open it ({type(err).__name__}: "
                          f"{' '.join(str(err).split())[:300]})") from None
    if study_name in names:
        raise ConfigError(f"--optuna-storage {url} already holds a study named {study_name!r}; "
                          "pick another --name, or continue that sweep with --resume")


class _SeedGroup:
    """The trials of one configuration: the primary one (the trial the inner searcher
    suggested and is told about) and its other seeds, each with its report once finished.
    Same attributes and methods as Ray's private ``repeater._TrialGroup``, which a
    searcher saved by an earlier version holds (and still restores with)."""

    def __init__(self, primary_trial_id: str, config: dict, max_trials: int = 1):
        self.primary_trial_id = primary_trial_id
        self.config = config
        self._trials: dict[str, dict | None] = {primary_trial_id: None}
        self.max_trials = max_trials

    def add(self, trial_id: str) -> None:
        assert len(self._trials) < self.max_trials
        self._trials.setdefault(trial_id, None)

    def full(self) -> bool:
        return len(self._trials) == self.max_trials

    def count(self) -> int:
        return len(self._trials)

    def report(self, trial_id: str, score: dict) -> None:
        assert trial_id in self._trials
        self._trials[trial_id] = score

    def finished_reporting(self) -> bool:
        return None not in self._trials.values() and len(self._trials) == self.max_trials

    def scores(self) -> list:
        return list(self._trials.values())


class SeedGroups(Searcher):
    """Runs every suggested configuration with ``seeds`` trials and tells the inner
    searcher the mean of each of ``metrics`` over them (Tune's ``Repeater``, on Ray's
    public ``Searcher`` API, for several metrics: ``Repeater`` averages one). If any
    seed fails, the configuration is reported failed.

    ``baseline``: the plain baseline's settings. With ``run_baseline`` it is the first
    configuration, served before the inner searcher is asked and never told to it.
    Whenever a configuration with these settings finishes (served here, or an identical
    point the searcher suggested), its mean of the constraint's metric goes to the
    inner searcher's ``set_plain_reference`` first.

    The attribute names are ``Repeater``'s (``repeat``, ``_groups``, ``_trial_id_to_group``,
    ``_current_group``): Tune saves a wrapper's ``__dict__`` (:meth:`get_state`), and
    a sweep saved when this class extended ``Repeater`` resumes with it."""

    # Defaults for a searcher pickled by an earlier version (a sweep resumed across an upgrade).
    _baseline: dict[str, Any] | None = None
    _baseline_metric: str | None = None
    _serve_baseline = False
    _served: frozenset[str] = frozenset()

    def __init__(self, searcher, seeds: int, metrics: list[str], baseline: dict[str, Any] | None = None,
                 run_baseline: bool = False, baseline_metric: str | None = None):
        self.searcher = searcher
        self.repeat = seeds
        self._set_index = True
        self._groups: list[_SeedGroup] = []
        self._trial_id_to_group: dict[str, _SeedGroup] = {}
        self._current_group: _SeedGroup | None = None
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self._metrics = list(metrics)
        self._baseline = dict(baseline) if baseline is not None else None
        self._baseline_metric = baseline_metric
        self._serve_baseline = bool(run_baseline and baseline is not None)
        self._served = frozenset()  # primary trial ids of groups the inner searcher never suggested

    def _start_group(self, trial_id: str, config: dict) -> None:
        self._current_group = _SeedGroup(trial_id, config, max_trials=self.repeat)
        self._groups.append(self._current_group)

    def suggest(self, trial_id: str) -> dict | None:
        if self._current_group is None or self._current_group.full():
            if self._serve_baseline:
                self._serve_baseline = False
                self._start_group(trial_id, dict(self._baseline))
                self._served = self._served | {trial_id}
            else:
                config = self.searcher.suggest(trial_id)
                if config is None or config == Searcher.FINISHED:
                    return config
                self._start_group(trial_id, copy.deepcopy(config))
            index = 0
        else:
            index = self._current_group.count()
            self._current_group.add(trial_id)
        self._trial_id_to_group[trial_id] = self._current_group
        config = self._current_group.config.copy()
        if self._set_index:
            config[TRIAL_INDEX] = index
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, **kwargs):
        group = self._trial_id_to_group[trial_id]
        if error or not result:
            group.report(trial_id, {_FAILED: True})
        else:
            group.report(trial_id, {m: float(result[m]) for m in self._metrics if m in result})
        if not group.finished_reporting():
            return
        reports = group.scores()
        failed = any(r.get(_FAILED) for r in reports)
        mean = {} if failed else {m: float(np.mean([r[m] for r in reports])) for m in self._metrics
                                  if all(m in r for r in reports)}
        if (self._baseline is not None and self._baseline_metric in mean
                and same_settings(group.config, self._baseline) and hasattr(self.searcher, "set_plain_reference")):
            self.searcher.set_plain_reference(mean[self._baseline_metric])
        if group.primary_trial_id in self._served:
            return
        self._describe(group, reports)
        if failed:
            self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=True)
            return
        self.searcher.on_trial_complete(group.primary_trial_id, result=mean, error=False)

    def _describe(self, group: _SeedGroup, reports: list[dict]) -> None:
        """The configuration's Tune trials and each metric per seed, as user attributes of its
        Optuna trial (what optuna-dashboard and ``optuna.load_study`` show beside the mean)."""
        trial = optuna_trial(self.searcher, group.primary_trial_id) if isinstance(self.searcher, OptunaSearch) else None
        if trial is None or _finished(optuna_study(self.searcher), trial.number):
            return
        trial.set_user_attr("tune_trial_ids", list(group._trials))
        for m in self._metrics:
            trial.set_user_attr(f"{m}_per_seed", [r.get(m) for r in reports])

    # Tune saves the inner searcher itself (save_to_dir) and a wrapper's state apart (get_state).
    def get_state(self) -> dict:
        state = self.__dict__.copy()
        del state["searcher"]
        return state

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)


def make_sampler(sweep: SweepConfig):
    import optuna

    if sweep.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=sweep.n_startup_trials)
    if sweep.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sweep.seed)
    return optuna.samplers.RandomSampler(seed=sweep.seed)


def make_search_alg(space: SearchSpace, storage: str | None = None, study_name: str | None = None) -> SeedGroups:
    """The searcher a sweep gives ``TuneConfig(search_alg=...)``; Tune's
    ``num_samples`` must then be :func:`num_trials`. ``storage``: where the Optuna study
    lives besides Tune's saved searcher (:func:`optuna_storage`), as ``study_name``."""
    sweep = space.sweep
    metrics, modes = list(sweep.metrics), list(sweep.modes)
    single = len(metrics) == 1
    points = list(space.first_points())
    if space.runs_baseline_first:
        points = points[1:]  # served by SeedGroups, outside Optuna
    c = sweep.constraint
    inner = ConstrainedOptunaSearch(
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=make_sampler(sweep),
        points_to_evaluate=points or None,
        constraint=c,
        storage=optuna_storage(storage),
        study_name=study_name,
    )
    told = list(metrics)
    for extra in ([c.metric] if c else []) + (["majority_en"] if c and c.baseline == "majority" else []):
        if extra not in told:
            told.append(extra)
    return SeedGroups(inner, seeds=sweep.seeds, metrics=told, baseline=space.baseline_point,
                      run_baseline=space.runs_baseline_first, baseline_metric=c.metric if c else None)


def num_trials(space: SearchSpace) -> int:
    """Tune trials of a searched sweep: ``num_samples`` configurations, plus the plain
    baseline when the sweep adds it (:attr:`~xling_ray.tune.space.SearchSpace.runs_baseline_first`),
    each with ``seeds`` trials."""
    s = space.sweep
    return (s.num_samples + int(space.runs_baseline_first)) * s.seeds


def seed_index(config: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Split a trial's config into the searched settings and its seed index."""
    config = dict(config)
    return config, int(config.pop(TRIAL_INDEX, 0))


def load_study(run_dir: str | Path):
    """The Optuna study of a sweep, as Tune last saved it in ``run_dir``."""
    searcher = ConstrainedOptunaSearch()
    searcher.restore_from_dir(str(run_dir))
    return optuna_study(searcher)
