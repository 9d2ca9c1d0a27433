"""The final stage's Tune run: retrain chosen jobs (a configuration and a seed each, the
recipe fixed per job) and evaluate them on another split.

Which jobs and how they rank is the leaderboard's business
(:mod:`xling_ray.leaderboard.final`); this module runs them, in ``RUN_DIR/final-<split>/``
(or ``final-heldout/``), as the cluster allows, with the sweep's progress lines, TensorBoard
names and MLflow tracking. The jobs are kept beside it (``final-<split>-jobs.json``), so an
interrupted final run resumes with the same jobs, whatever the leaderboard says by then.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xling_ray.config import RecipeConfig


def final_name(split: str, heldout: bool) -> str:
    """The final stage's folder under the run folder (and its MLflow stage)."""
    return "final-heldout" if heldout else f"final-{split}"


def run_job(config: dict[str, Any], recipes: dict[str, dict[str, Any]]) -> None:
    """Tune trainable of a final run: ``config = {"job": id}``, the recipe fixed per job."""
    from xling_ray.tune.trainable import run_trial

    run_trial({}, recipes[config["job"]])


def interrupted_jobs(run_dir: str | Path, name: str) -> dict[str, dict[str, Any]] | None:
    """The jobs of an interrupted final run of ``name``, to resume; ``None`` if there is none."""
    from ray import tune

    from xling_ray.tune.storage import read_text, run_dir_of

    if not tune.Tuner.can_restore(run_dir_of(str(run_dir), name)):
        return None
    return json.loads(read_text(run_dir, f"{name}-jobs.json"))


def save_jobs(run_dir: str | Path, name: str, jobs: dict[str, dict[str, Any]], mlflow: str | None = None) -> None:
    """Keep the jobs (and where they are tracked) for a resumed final run."""
    from xling_ray.tune.storage import write_text
    from xling_ray.tune.tracking import check_mlflow, save_tracking

    if mlflow:
        check_mlflow(mlflow, run_dir=str(run_dir))
    write_text(run_dir, f"{name}-jobs.json", json.dumps(jobs, indent=1))
    if mlflow:
        save_tracking(str(run_dir), name, mlflow)


def run_final_jobs(run_dir: str | Path, name: str, jobs: dict[str, dict[str, Any]], metric: str = "gap",
                   mode: str = "min", max_failures: int = 0, address: str | None = None, verbose: int = 0,
                   mlflow: str | None = None) -> str:
    """Run (or resume) the final stage ``name`` of ``run_dir``; returns its Tune folder."""
    from ray import tune

    from xling_ray.train.ray_train import ray_runtime
    from xling_ray.tune.storage import resolve_storage, run_dir_of
    from xling_ray.tune.sweep import progress_callback, tune_output, tune_verbosity
    from xling_ray.tune.tracking import MLflowTracking, ReadableTensorBoard
    from xling_ray.tune.trainable import trial_resources

    storage = resolve_storage(str(run_dir))
    path = run_dir_of(storage, name)
    with ray_runtime(address, log_to_driver=verbose >= 2):
        recipes = {k: v["recipe"] for k, v in jobs.items()}
        trainable = tune.with_resources(tune.with_parameters(run_job, recipes=recipes),
                                        trial_resources(RecipeConfig.model_validate(next(iter(recipes.values())))))
        if tune.Tuner.can_restore(path):
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, restart_errored=True)
        else:
            described = {k: {f: v[f] for f in ("config_id", "seed", "settings")} for k, v in jobs.items()}
            tuner = tune.Tuner(
                trainable,
                param_space={"job": tune.grid_search(list(jobs))},
                tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),  # see run_sweep
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=tune_verbosity(verbose),
                    callbacks=[progress_callback(metric, mode, verbose), ReadableTensorBoard(),
                               *([MLflowTracking(mlflow, str(run_dir), stage=name, jobs=described)] if mlflow else [])],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=max_failures),
                ),
            )
        with tune_output(verbose):
            tuner.fit()
    return path
