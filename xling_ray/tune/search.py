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
* Collapse: a configuration with a collapsed seed (``collapsed`` 1: it predicted one
  class for nearly every English example, so its gap is near 0, the best value there
  is) is told to Optuna as infeasible (``Trial.set_constraint("collapsed", 1.0)``),
  whatever the floor, with or without ``sweep.constraint``: the sampler moves away
  from configurations that learn nothing, as the leaderboard ranks them last.
* Seeds: :class:`SeedGroups`, Tune's ``Repeater`` generalised to several
  metrics: each configuration Optuna suggests runs ``seeds`` times (Tune trials
  with ``__trial_index__`` 0..n-1), and Optuna is told the mean over the seeds
  once all have finished (``collapsed``: the largest, any seed collapsed). A
  configuration with a failed seed is failed. A configuration that early stopping
  stopped (:class:`~xling_ray.tune.early_stopping.SeedGroupASHA`, which asks
  :class:`SeedGroups` which configuration a trial belongs to) is told once, when its
  last seed has ended, as pruned: Optuna's ``TrialState.PRUNED`` with the mean it had
  at the rung where it was stopped as its value (an intermediate value at that step
  in training examples; several objectives: no value).
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

import contextlib
import copy
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import SearchGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.repeater import TRIAL_INDEX

from xling_ray.tune.sampling import make_sampler  # noqa: F401  (the sweep's sampler; Ray-free)
from xling_ray.tune.space import Constraint, SearchSpace, SweepConfig, same_settings

_FAILED = "__failed__"
#: The metric each trial reports: 1.0 when its English predictions of a task fell on one class.
COLLAPSED = "collapsed"

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
        if trial is not None and result:
            _mark_collapsed(trial, result)
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
                trial.set_user_attr("feasible", slack <= 0 and not trial.user_attrs.get(COLLAPSED, False))
        super().on_trial_complete(trial_id, result=result, error=error)

    def prune(self, trial_id: str, rung: float, values: dict[str, float]) -> None:
        """Tell Optuna the configuration of ``trial_id`` was stopped early: ``TrialState.PRUNED``
        through Ray's public ``Searcher`` calls (an intermediate value, then a completion without a
        result, which ``OptunaSearch`` tells as pruned). ``values``: the configuration's mean of each
        metric at the rung; with one objective its value is reported at step ``rung`` (training
        examples), and Optuna takes a pruned trial's value from its last intermediate value. The rung
        and the values are also user attributes (``stopped_at_examples``, ``stopped_<metric>``).
        Told once: a study that already has the trial finished (a resumed sweep) is left as it is."""
        trial = optuna_trial(self, trial_id)
        if trial is None:
            return
        if _finished(optuna_study(self), trial.number):
            _ray_private(self, "_ot_trials").pop(trial_id, None)
            return
        trial.set_user_attr("stopped_at_examples", rung)
        for key, value in values.items():
            trial.set_user_attr(f"stopped_{key}", value)
        _mark_collapsed(trial, values)  # a configuration stopped for its collapsed seed: infeasible
        if isinstance(self.metric, str) and _known(values.get(self.metric)):
            self.on_trial_result(trial_id, {self.metric: float(values[self.metric]), TRAINING_ITERATION: int(rung)})
        self.on_trial_complete(trial_id, result=None, error=False)

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


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def _mark_collapsed(trial, result: dict) -> None:
    """Where ``result`` says whether the configuration collapsed, tell its Optuna trial: a
    constraint (infeasible when collapsed) and a user attribute."""
    if _known(result.get(COLLAPSED)):
        collapsed = float(result[COLLAPSED]) >= 1.0
        trial.set_constraint(COLLAPSED, 1.0 if collapsed else 0.0)
        trial.set_user_attr(COLLAPSED, collapsed)


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
    _pruned: dict[str, dict[str, Any]] = {}  # never changed in place: reassigned (see prune)

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
        self._pruned = {}  # config id (primary trial id) -> how early stopping stopped it (prune)

    # ------------------------------------------------ the groups, for early stopping

    def config_id(self, trial_id: str) -> str | None:
        """The configuration of Tune trial ``trial_id``: its group's primary trial id (the first
        trial of the configuration, which is the leaderboard's ``config_id``), or ``None`` for a
        trial this searcher did not suggest."""
        group = self._trial_id_to_group.get(trial_id)
        return None if group is None else group.primary_trial_id

    def is_reference(self, config_id: str) -> bool:
        """Whether ``config_id`` is the plain baseline served outside the inner searcher: a
        reference the floor is measured on, which early stopping never stops."""
        return config_id in self._served

    def prune(self, config_id: str, rung: float, values: dict[str, float], per_seed: dict[str, list[float]]) -> None:
        """Early stopping stopped configuration ``config_id`` at ``rung`` training examples, where
        its seeds' mean of each metric was ``values`` (``per_seed``: each metric per seed). Its seeds
        then end without a result of their own (stopped while paused) or at the rung: the
        configuration is told to the inner searcher as pruned once its last seed has ended."""
        self._pruned = {**self._pruned, config_id: {"rung": rung, "values": dict(values),
                                                     "per_seed": {k: list(v) for k, v in per_seed.items()}}}

    def pruned(self) -> dict[str, dict[str, Any]]:
        """Config id -> ``{"rung", "values", "per_seed"}`` of each configuration stopped early."""
        return dict(self._pruned)

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
        pruned = self._pruned.get(group.primary_trial_id)
        if error or (not result and pruned is None):
            group.report(trial_id, {_FAILED: True})
        else:  # a pruned configuration's seed stopped while it waited, paused, has no result of its own
            group.report(trial_id, {m: float(result[m]) for m in self._metrics if m in (result or {})})
        if not group.finished_reporting():
            return
        reports = group.scores()
        failed = any(r.get(_FAILED) for r in reports)
        if pruned is not None and not failed:
            self._tell_pruned(group, pruned)
            return
        mean = {} if failed else {m: float((np.max if m == COLLAPSED else np.mean)([r[m] for r in reports]))
                                  for m in self._metrics if all(m in r for r in reports)}
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

    def _tell_pruned(self, group: _SeedGroup, pruned: dict[str, Any]) -> None:
        """The inner searcher learns that the configuration was stopped early: ``prune`` where it
        has one (:meth:`ConstrainedOptunaSearch.prune`), else a completion without a result
        (Ray's ``OptunaSearch``: pruned)."""
        if group.primary_trial_id in self._served:
            return
        per_seed = pruned.get("per_seed", {})
        self._describe(group, [{m: per_seed[m][i] for m in per_seed if i < len(per_seed[m])}
                               for i in range(max((len(v) for v in per_seed.values()), default=0))])
        if hasattr(self.searcher, "prune"):
            self.searcher.prune(group.primary_trial_id, pruned["rung"], pruned["values"])
        else:
            self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=False)

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


class SweepSearch(SearchGenerator):
    """What a sweep gives ``TuneConfig(search_alg=...)``: Tune's own ``SearchGenerator`` (which
    Tune wraps any ``Searcher`` in) over :class:`SeedGroups`, whose number of trials a resumed
    sweep may raise.

    Tune saves the generator's count of trials with the experiment state and restores it with
    ``Tuner.restore``; inside :meth:`extended` a restored generator takes the larger total
    instead, so ``xling-ray sweep --resume RUN --num-samples N`` asks the same Optuna study (its
    sampler has seen every earlier configuration) for the new configurations only. Outside that
    block it is Tune's ``SearchGenerator`` unchanged."""

    _extend_to: int | None = None  # set only inside `extended`, for the restore it wraps

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        target = SweepSearch._extend_to
        if target is not None and target > self.total_samples:
            self._total_samples = target
            self._finished = False

    @staticmethod
    @contextlib.contextmanager
    def extended(total_trials: int | None) -> Iterator[None]:
        """Restore (``Tuner.restore`` + ``fit``) inside this block with ``total_trials`` Tune trials
        in all (:func:`num_trials` of the extended space); ``None``: as saved."""
        SweepSearch._extend_to = total_trials
        try:
            yield
        finally:
            SweepSearch._extend_to = None


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
    for extra in ([c.metric] if c else []) + (["majority_en"] if c and c.baseline == "majority" else []) + [COLLAPSED]:
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
    """The Optuna study of a sweep, as Tune last saved it in ``run_dir`` (a path or any storage
    URI: the saved searcher is copied to a temporary folder first, since Ray's
    ``Searcher.restore_from_dir`` reads a local folder)."""
    import tempfile

    import pyarrow.fs

    from xling_ray.tune.storage import open_run_dir

    searcher = ConstrainedOptunaSearch()
    fs, path = open_run_dir(run_dir)
    pattern = re.compile(re.escape(searcher.CKPT_FILE_TMPL).replace(r"\{\}", ".*") + "$")
    with tempfile.TemporaryDirectory(prefix="xling-study-") as local:
        for info in fs.get_file_info(pyarrow.fs.FileSelector(path)):
            if info.type == pyarrow.fs.FileType.File and pattern.match(info.base_name):
                pyarrow.fs.copy_files(info.path, os.path.join(local, info.base_name), source_filesystem=fs)
        searcher.restore_from_dir(local)
    return optuna_study(searcher)
