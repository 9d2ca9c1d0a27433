"""Export a ranked configuration as a self-contained recipe file.

``xling-ray export RUN_DIR --rank 1 -o best.yaml`` writes:

.. code-block:: yaml

    recipe: {...}         # the full RecipeConfig: model, data, train (budget, seed), losses, scaling
    seeds: [0, 1, 2]      # the configuration's seeds; recipe.train.seed is the first
    source:               # where it came from
      run_dir: ...        # the sweep
      rank: 1
      config_id: ...
      metrics: {gap: ..., gap_std: ..., acc_en: ...}   # means (and std) over the seeds
      trials: [{trial_id: ..., seed: 0, metrics: {...}}, ...]
    versions: {xling_ray: ..., torch: ..., transformers: ..., ray: ..., optuna: ..., pot: ..., python: ...}

``xling-ray train best.yaml`` reads it back (:func:`load_exported`), and so can
any user: it is the recipe, nothing else is needed.
"""
from __future__ import annotations

import platform
import warnings
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xling_ray.config import ConfigError, RecipeConfig, format_validation_error
from xling_ray.leaderboard.table import LANGUAGE_COLUMNS, SUMMARY_COLUMNS, Leaderboard, build_leaderboard, config_settings

KEY_PACKAGES = {"xling_ray": "xling-ray", "torch": "torch", "transformers": "transformers", "ray": "ray",
                "optuna": "optuna", "pot": "pot", "scikit_learn": "scikit-learn", "numpy": "numpy"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialRecord(_Strict):
    trial_id: str
    seed: int
    metrics: dict[str, float]


class Source(_Strict):
    run_dir: str
    rank: int
    config_id: str
    split: str
    metrics: dict[str, float]
    trials: list[TrialRecord]


class ExportedRecipe(_Strict):
    recipe: RecipeConfig
    seeds: list[int] = Field(min_length=1)
    source: Source | None = None
    versions: dict[str, str] = Field(default_factory=dict)

    def for_seed(self, seed: int) -> RecipeConfig:
        return self.recipe.with_updates({"train.seed": seed})


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for key, dist in KEY_PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _finite(row: pd.Series, columns) -> dict[str, float]:
    return {c: float(row[c]) for c in columns if c in row and pd.notna(row[c])}


def export_config(run_dir: str | Path, rank: int = 1, board: Leaderboard | None = None) -> ExportedRecipe:
    """The configuration at ``rank`` of the sweep in ``run_dir``, as a full recipe."""
    from xling_ray.tune.sweep import load_run_space

    space = load_run_space(run_dir)
    board = board or build_leaderboard(run_dir, space)
    configs = board.configs
    if configs.empty:
        raise ConfigError(f"{run_dir}: the sweep has no trials yet")
    if not 1 <= rank <= len(configs):
        raise ConfigError(f"--rank {rank}: the leaderboard of {run_dir} has ranks 1 to {len(configs)}")
    row = configs.iloc[rank - 1]
    if row["status"] != "TERMINATED":
        why = (f"early stopping stopped it at {row['stopped_at']}" if row["status"] == "STOPPED"
               else row.get("error") or "some of its seeds have not finished")
        raise ConfigError(f"rank {rank} ({row['config_id']}) is {row['status']}, not a finished configuration: {why}")
    trials = board.trials[board.trials["config_id"] == row["config_id"]].sort_values("seed")
    recipe = space.recipe.with_updates(config_settings(row, space))
    seeds = [int(s) for s in trials["seed"]]
    recipe = recipe.with_updates({"train.seed": seeds[0]})
    metric_cols = [c for c in SUMMARY_COLUMNS + [f"{c}_std" for c in SUMMARY_COLUMNS] + LANGUAGE_COLUMNS]
    source = Source(
        run_dir=str(run_dir), rank=rank, config_id=str(row["config_id"]), split=space.recipe.data.split,
        metrics=_finite(row, metric_cols),
        trials=[TrialRecord(trial_id=t["trial_id"], seed=int(t["seed"]), metrics=_finite(t, SUMMARY_COLUMNS + LANGUAGE_COLUMNS))
                for _, t in trials.iterrows()],
    )
    return ExportedRecipe(recipe=recipe, seeds=seeds, source=source, versions=library_versions())


def dump_exported(exported: ExportedRecipe) -> str:
    header = "# xling-ray recipe: train it with `xling-ray train THIS_FILE`\n"
    if exported.source:
        s = exported.source
        header += f"# from {s.run_dir}, rank {s.rank} (configuration {s.config_id}, {len(s.trials)} seed(s))\n"
    return header + yaml.safe_dump(exported.model_dump(mode="json", exclude_none=True), sort_keys=False)


def write_exported(exported: ExportedRecipe, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_exported(exported))
    return path


def load_exported(path: str | Path) -> ExportedRecipe:
    """Read an exported recipe; errors name the file and field. Warns when a key
    library's version differs from the one the recipe was searched with."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if isinstance(raw, dict) and "recipe" not in raw and "model" in raw:
        raw = {"recipe": raw, "seeds": [raw.get("train", {}).get("seed", 0)]}  # a bare RecipeConfig is fine too
    try:
        exported = ExportedRecipe.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
    now = library_versions()
    differ = {k: (v, now.get(k)) for k, v in exported.versions.items() if k != "python" and now.get(k) not in (None, v)}
    if differ:
        warnings.warn(f"{path}: library versions differ from the sweep's (then -> now): "
                      + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in differ.items())
                      + "; results may not reproduce exactly", stacklevel=2)
    return exported
