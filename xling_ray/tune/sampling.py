"""Optuna's side of a search space, without Ray: the sampler a sweep uses and each searched
field as an Optuna distribution.

The sweep hands these to Ray Tune's ``OptunaSearch`` (:mod:`xling_ray.tune.search`), which
converts the space's Tune domains itself; :func:`optuna_distributions` gives the same
distributions (tests/test_budget.py checks it against ``OptunaSearch.convert_search_space``)
for code that asks Optuna directly where Ray is not installed (``bench/gpu/``).
"""
from __future__ import annotations

from typing import Any

from xling_ray.tune.space import Distribution, SearchSpace, SweepConfig


def make_sampler(sweep: SweepConfig):
    """The Optuna sampler of ``sweep``: TPE (with ``n_startup_trials`` random ones first),
    NSGA-II or random, seeded with ``sweep.seed``."""
    import optuna

    if sweep.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=sweep.n_startup_trials)
    if sweep.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sweep.seed)
    return optuna.samplers.RandomSampler(seed=sweep.seed)


def optuna_distribution(dist: Distribution):
    """``loguniform``/``uniform`` -> ``FloatDistribution`` (log or not), ``int``/``logint`` ->
    ``IntDistribution`` (both bounds inclusive), ``choice`` -> ``CategoricalDistribution``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    k = dist.kind
    if k in ("loguniform", "uniform"):
        low, high = getattr(dist, k)
        return FloatDistribution(low, high, log=k == "loguniform")
    if k in ("int", "logint"):
        low, high = dist.int_ if k == "int" else dist.logint
        return IntDistribution(low, high, log=k == "logint")
    return CategoricalDistribution(list(dist.choice))


def optuna_distributions(search: dict[str, Distribution]) -> dict[str, Any]:
    """Each searched field's Optuna distribution (:func:`optuna_distribution`)."""
    return {key: optuna_distribution(d) for key, d in search.items()}


def sample_configurations(space: SearchSpace, n: int) -> list[dict[str, Any]]:
    """``n`` configurations as a sweep of ``space`` asks them of Optuna before any result is
    told: its ``points_to_evaluate`` first, then draws of its sampler (with no result told,
    TPE draws as its random start-up does)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(space.sweep),
                                directions=["minimize" if m == "min" else "maximize" for m in space.sweep.modes])
    dists = optuna_distributions(space.search)
    out = []
    for i in range(n):
        if i < len(space.sweep.points_to_evaluate):
            study.enqueue_trial(dict(space.sweep.points_to_evaluate[i]))
        out.append(dict(study.ask(dists).params))
    return out
