"""The search algorithm: Optuna's sampler behind Ray Tune's ``OptunaSearch``, every
configuration repeated over seeds.

* One or several objectives: ``OptunaSearch(metric=[...], mode=[...])`` with an
  Optuna sampler (TPE, NSGA-II or random; all three handle several objectives).
* An optional floor (:class:`~xling_ray.tune.space.Constraint`):
  :class:`ConstrainedOptunaSearch` sets it on the Optuna trial
  (``Trial.set_constraint``) before it tells Optuna the result.
* Seeds: :class:`SeedGroups`, Tune's ``Repeater`` generalised to several
  metrics: each configuration Optuna suggests runs ``seeds`` times (Tune trials
  with ``__trial_index__`` 0..n-1), and Optuna is told the mean over the seeds
  once all have finished. A configuration with a failed seed is failed.

The whole state (Optuna's study and sampler, the seed groups) is saved by Tune
with the experiment state and restored by ``Tuner.restore``; :func:`load_study`
reads the study back from a run folder.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX

from xling_ray.tune.space import SweepConfig

_FAILED = "__failed__"


class ConstrainedOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that also sets a constraint on the Optuna trial before telling
    its result: ``trial.set_constraint(metric, floor - value)``, feasible when <= 0.
    Optuna's TPE and NSGA-II samplers then prefer feasible regions."""

    def __init__(self, *args, constraint_metric: str | None = None, constraint_floor: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._constraint = (constraint_metric, constraint_floor) if constraint_metric else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and self._constraint and trial_id in self._ot_trials:
            metric, floor = self._constraint
            value = result.get(metric)
            if value is not None and not math.isnan(value):
                self._ot_trials[trial_id].set_constraint(metric, floor - float(value))
        super().on_trial_complete(trial_id, result=result, error=error)


class SeedGroups(Repeater):
    """Runs every suggested configuration with ``seeds`` trials and tells the inner
    searcher the mean of each of ``metrics`` over them (Tune's ``Repeater`` averages
    one metric only). If any seed fails, the configuration is reported failed."""

    def __init__(self, searcher, seeds: int, metrics: list[str]):
        super().__init__(searcher, repeat=seeds, set_index=True)
        self._metrics = list(metrics)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False, **kwargs):
        group = self._trial_id_to_group[trial_id]
        if error or not result:
            group.report(trial_id, {_FAILED: True})
        else:
            group.report(trial_id, {m: float(result[m]) for m in self._metrics if m in result})
        if not group.finished_reporting():
            return
        reports = group.scores()
        if any(r.get(_FAILED) for r in reports):
            self.searcher.on_trial_complete(group.primary_trial_id, result=None, error=True)
            return
        mean = {m: float(np.mean([r[m] for r in reports])) for m in self._metrics if all(m in r for r in reports)}
        self.searcher.on_trial_complete(group.primary_trial_id, result=mean, error=False)


def make_sampler(sweep: SweepConfig):
    import optuna

    if sweep.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=sweep.n_startup_trials)
    if sweep.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sweep.seed)
    return optuna.samplers.RandomSampler(seed=sweep.seed)


def make_search_alg(sweep: SweepConfig) -> SeedGroups:
    """The searcher a sweep gives ``TuneConfig(search_alg=...)``; Tune's
    ``num_samples`` must then be ``sweep.num_samples * sweep.seeds``."""
    metrics, modes = list(sweep.metrics), list(sweep.modes)
    single = len(metrics) == 1
    inner = ConstrainedOptunaSearch(
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=make_sampler(sweep),
        points_to_evaluate=[dict(p) for p in sweep.points_to_evaluate] or None,
        constraint_metric=sweep.constraint.metric if sweep.constraint else None,
        constraint_floor=sweep.constraint.floor if sweep.constraint else None,
    )
    told = metrics + ([sweep.constraint.metric] if sweep.constraint and sweep.constraint.metric not in metrics else [])
    return SeedGroups(inner, seeds=sweep.seeds, metrics=told)


def seed_index(config: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Split a trial's config into the searched settings and its seed index."""
    config = dict(config)
    return config, int(config.pop(TRIAL_INDEX, 0))


def load_study(run_dir: str | Path):
    """The Optuna study of a sweep, as Tune last saved it in ``run_dir``."""
    searcher = ConstrainedOptunaSearch()
    searcher.restore_from_dir(str(run_dir))
    return searcher._ot_study
