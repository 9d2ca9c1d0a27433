"""Search on validation, rank on test: retrain the top configurations and evaluate
them on another split.

``xling-ray final RUN_DIR --top K --split test`` takes the K best finished (and
feasible) configurations of the sweep's leaderboard, in its rank order (those that
learned before collapsed ones, :mod:`xling_ray.leaderboard.table`), retrains each with the
seeds it was searched with, evaluates on ``split`` (the hub's test split or
``{task}/test-{lang}.tsv`` in the data folder), and writes
``final_<split>_leaderboard.{csv,md}`` beside the sweep's leaderboard. With
``--heldout`` it evaluates instead on the examples of the sweep's own split that
``data.heldout`` set aside (where no test split is at hand), writing
``final_heldout_leaderboard.*``. The retraining is a Tune run of its own
(``RUN_DIR/final-<split>/``, :mod:`xling_ray.tune.final`): the jobs run in parallel as the
cluster allows, and running ``final`` again resumes it. This module chooses and ranks. The final leaderboard ranks by the same rules; a
``baseline: plain`` floor resolves there only when the plain configuration is among
the retrained ones (else no finalist is judged infeasible, and its notes say so).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xling_ray.config import ConfigError, RecipeConfig
from xling_ray.leaderboard.intervals import add_noise
from xling_ray.leaderboard.table import (Leaderboard, RunNotFoundError, build_leaderboard, config_settings,
                                         group_configs, load_leaderboard, load_trials)


def final_jobs(run_dir: str | Path, top: int, split: str, heldout: bool = False, seeds: int | None = None,
               overrides: dict[str, Any] | None = None, feasible_only: bool = True,
               board: Leaderboard | None = None) -> dict[str, dict[str, Any]]:
    """``job id -> {config_id, seed, settings, recipe}`` for the top ``top`` configurations,
    evaluated on ``split``, or with ``heldout`` on the part of the sweep's split that
    ``data.heldout`` set aside. Each runs with the seeds it was searched with, or with
    ``seeds``: the recipe's ``train.seed`` and the ``seeds - 1`` after it. ``overrides``
    (dotted recipe settings, e.g. ``data.eval_max_per_language``) apply to every job.
    With ``feasible_only=False`` the top configurations are taken in rank order even
    when they are below the sweep's constraint (infeasible ones rank last). ``board`` is the
    sweep's leaderboard, by default built from its trials; one written beside them
    (:func:`~xling_ray.leaderboard.table.load_leaderboard`) serves where they are gone."""
    from xling_ray.tune.sweep import load_run_space

    space = load_run_space(run_dir)
    if board is None:
        board = sweep_leaderboard(run_dir, space)
    configs = board.configs
    ok = configs["status"] == "TERMINATED"
    if feasible_only and "feasible" in configs:
        ok &= configs["feasible"].astype(bool)
    chosen = configs[ok].head(top)
    if chosen.empty:
        raise ConfigError(f"{run_dir}: no finished{' feasible' if 'feasible' in configs else ''} configuration to retrain")
    jobs = {}
    for _, row in chosen.iterrows():
        settings = config_settings(row, space)
        base = space.recipe.with_updates(settings)
        if heldout:
            if not base.data.heldout:
                raise ConfigError(f"{run_dir}: the sweep set no evaluation examples aside (recipe.data.heldout); "
                                  "use --split test")
            base = base.with_updates({"data.eval_part": "heldout"})
        else:
            base = base.evaluated_on(split)
        searched = sorted(int(t) for t in board.trials.loc[board.trials["config_id"] == row["config_id"], "seed"])
        for seed in searched if seeds is None else [base.train.seed + i for i in range(seeds)]:
            recipe = base.with_updates({"train.seed": seed, **(overrides or {})})
            jobs[f"{row['config_id']}-seed{seed}"] = {"config_id": row["config_id"], "seed": seed,
                                                     "settings": settings, "recipe": recipe.model_dump()}
    return jobs


def sweep_leaderboard(run_dir: str | Path, space=None) -> Leaderboard:
    """The sweep's leaderboard, built from its trials; where they are gone (a folder that kept
    only ``leaderboard.csv``, ``leaderboard_trials.csv`` and ``search_space.yaml``, as
    bench/study's results do), the one written beside them
    (:func:`~xling_ray.leaderboard.table.load_leaderboard`)."""
    try:
        return build_leaderboard(run_dir, space)
    except RunNotFoundError as no_sweep:
        try:
            return load_leaderboard(run_dir, space)
        except RunNotFoundError:
            raise no_sweep from None


def check_jobs(jobs: dict[str, dict[str, Any]], split: str, heldout: bool) -> None:
    """Read every input the jobs read (:mod:`xling_ray.preflight`) before Ray starts; a
    missing test split says how to do without one."""
    from xling_ray.data import DataError
    from xling_ray.preflight import check_recipes

    try:
        check_recipes(RecipeConfig.model_validate(job["recipe"]) for job in jobs.values())
    except DataError as err:
        if heldout or split != "test":
            raise
        raise DataError(f"{err}. Where no test split is at hand, sweep with recipe.data.heldout set and run "
                        "`xling-ray final RUN_DIR --heldout` (it evaluates on the examples the sweep set aside)") from None


def run_final(run_dir: str | Path, top: int = 3, split: str = "test", heldout: bool = False,
              seeds: int | None = None, overrides: dict[str, Any] | None = None,
              address: str | None = None, verbose: int = 0, feasible_only: bool = True,
              mlflow: str | None = None, board: Leaderboard | None = None) -> Leaderboard:
    """Retrain the top configurations on ``split`` and rank them; see the module docstring.
    ``board``: the sweep's leaderboard, as :func:`final_jobs` takes it.
    Choosing and ranking happen here; the retraining is :func:`xling_ray.tune.final.run_final_jobs`."""
    from xling_ray.tune.final import final_name, interrupted_jobs, run_final_jobs, save_jobs
    from xling_ray.tune.sweep import load_run_space

    space = load_run_space(run_dir)
    name = final_name(split, heldout)
    jobs = interrupted_jobs(run_dir, name)  # an interrupted final run: the same jobs, whatever the leaderboard says now
    if jobs is None:
        jobs = final_jobs(run_dir, top, split, heldout, seeds, overrides, feasible_only, board)
        check_jobs(jobs, split, heldout)
        save_jobs(run_dir, name, jobs, mlflow)
    s = space.sweep
    path = run_final_jobs(run_dir, name, jobs, s.metrics[0], s.modes[0], s.max_failures, address, verbose, mlflow)
    return final_leaderboard(path, space, jobs)


def final_leaderboard(path: str, space, jobs: dict[str, dict[str, Any]]) -> Leaderboard:
    """The final stage at ``path`` ranked by the sweep's rules, each trial named by its job's
    configuration and seed."""

    def describe(config):
        job = jobs[config["job"]]
        return job["config_id"], job["seed"], job["settings"]

    predictions: dict = {}
    return rank_trials(load_trials(path, space, describe=describe, predictions=predictions), space, predictions)


def rank_trials(trials, space, predictions: dict | None = None) -> Leaderboard:
    """Final trials (of one Tune run, or several runs of the same configurations concatenated)
    ranked by the sweep's rules, with their error bars and intervals against rank 1 where
    ``predictions`` (trial id -> :class:`~xling_ray.noise.Predictions`) holds their kept predictions
    (:mod:`xling_ray.leaderboard.intervals`)."""
    s = space.sweep
    configs = group_configs(trials, s.metrics, s.modes, s.constraint, space.baseline_point)
    return Leaderboard(add_noise(configs, trials, predictions or {}), trials, s.metrics, s.modes, s.constraint,
                       dict(predictions or {}))
