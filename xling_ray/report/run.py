"""What the sweep report shows, computed from a run folder alone.

Everything is read through the leaderboard (:func:`xling_ray.leaderboard.build_leaderboard`),
the saved search space and Tune's ``ExperimentAnalysis``, so it works on a finished run,
an interrupted one, one still running, and on any storage the sweep accepts (a path or a
URI). Parts that need finished trials (importances, the Pareto front) say why they are
empty instead of failing.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from xling_ray.config import RecipeConfig
from xling_ray.leaderboard import build_leaderboard
from xling_ray.leaderboard.table import LANGUAGE_COLUMNS, Leaderboard, pareto_front, plain_value
from xling_ray.tune.space import LOSS_SWITCHES, Distribution, SearchSpace

#: Recipe fields that say where things are on one machine, not what a trial does.
_LOCATION_FIELDS = ("data.data_dir", "model.cache_dir")


@dataclass
class RunReport:
    run_dir: str
    board: Leaderboard
    space: SearchSpace | None
    trials: pd.DataFrame  # the leaderboard's trials, in rank order (best configuration first, then seed)
    searched: list[str]  # the searched settings (dotted)
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)  # label -> examples seen, epoch, metrics; top trials
    config_diff: pd.DataFrame = field(default_factory=pd.DataFrame)
    baseline_note: str = ""  # what the config_diff's baseline column is (diff_baseline)

    @property
    def multi_seed(self) -> bool:
        return "seeds" in self.board.configs and bool((self.board.configs["seeds"] > 1).any())


def load_report(run_dir: str, top: int = 3) -> RunReport:
    """Everything :func:`xling_ray.report.html.render_report` shows, for the ``top`` best configurations."""
    from xling_ray.config import ConfigError
    from xling_ray.tune.sweep import load_run_space

    try:
        space = load_run_space(run_dir)
    except ConfigError:
        space = None  # a run from before sweeps saved their space: inferred ranges, default baseline
    board = build_leaderboard(run_dir, space)
    trials = ranked_trials(board)
    searched = list(space.search) if space else _settings_columns(board.trials)
    report = RunReport(str(run_dir), board, space, trials, searched)
    report.importances, report.importance_note = param_importances(board, space, searched)
    report.curves = learning_curves(run_dir, trials, top)
    report.config_diff = config_difference(board, space, searched, top)
    report.baseline_note = diff_baseline(board, space)[1]
    return report


def _settings_columns(trials: pd.DataFrame) -> list[str]:
    fixed = {"trial_id", "status", "config_id", "seed", "epoch", "error", "rank"}
    return [c for c in trials.columns if c not in fixed and not c.startswith(("acc_", "gap")) and "." in c]


def ranked_trials(board: Leaderboard) -> pd.DataFrame:
    """One row per trial, ordered as the leaderboard ranks its configuration (then by seed),
    with the configuration's ``rank`` in front."""
    trials = board.trials
    if trials.empty:
        return trials.assign(rank=pd.Series(dtype=int))
    rank = dict(zip(board.configs["config_id"], board.configs["rank"]))
    out = trials.assign(rank=trials["config_id"].map(rank)).sort_values(["rank", "seed"], kind="stable")
    return out[["rank"] + [c for c in out.columns if c != "rank"]].reset_index(drop=True)


def trial_label(row: pd.Series, multi_seed: bool) -> str:
    return f"#{row['rank']} {row['trial_id']}" + (f" s{row['seed']}" if multi_seed else "")


# ---------------------------------------------------------------- the accuracy heatmap


def heatmap_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per trial (rows, in rank order) and task/language (columns ``acc_<task>_<lang>``,
    XNLI's languages then PAWS-X's): exactly the leaderboard's values."""
    columns = [c for c in LANGUAGE_COLUMNS if c in trials]
    return trials.set_index("trial_id")[columns].astype(float)


# ---------------------------------------------------------------- gap against target accuracy


def gap_front(configs: pd.DataFrame) -> pd.Series:
    """Which configurations are on the Pareto front of (lower ``gap``, higher ``acc_target``),
    among those with both numbers that learned: a ``collapsed`` configuration's gap near 0
    is no trade-off, and it is never on the front."""
    mask = pd.Series(False, index=configs.index)
    if configs.empty or not {"gap", "acc_target"} <= set(configs):
        return mask
    ok = configs[["gap", "acc_target"]].notna().all(axis=1)
    if "collapsed" in configs:
        ok &= ~configs["collapsed"].astype(bool)
    front = pareto_front(configs.loc[ok, ["gap", "acc_target"]].to_numpy(float), ("min", "max"))
    mask.loc[configs.index[ok][front]] = True
    return mask


# ---------------------------------------------------------------- hyperparameter importances


def optuna_distribution(dist: Distribution):
    """The Optuna distribution of a search-space entry (the one ``OptunaSearch`` samples from)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = dist.kind
    if kind == "loguniform":
        return FloatDistribution(*dist.loguniform, log=True)
    if kind == "uniform":
        return FloatDistribution(*dist.uniform)
    if kind == "int":
        return IntDistribution(*dist.int_)
    if kind == "logint":
        return IntDistribution(*dist.logint, log=True)
    return CategoricalDistribution(list(dist.choice))


def _inferred_distribution(values: pd.Series):
    """For a run without a saved search space: the observed range of each setting."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    v = values.dropna()
    if pd.api.types.is_bool_dtype(v) or not pd.api.types.is_numeric_dtype(v):
        return CategoricalDistribution(sorted(set(v.tolist()), key=repr))
    low, high = v.min(), v.max()
    if low == high:
        return None
    if pd.api.types.is_integer_dtype(v):
        return IntDistribution(int(low), int(high))
    return FloatDistribution(float(low), float(high), log=low > 0 and high / low > 10)


def param_importances(board: Leaderboard, space: SearchSpace | None, searched: list[str]) -> tuple[dict[str, float], str]:
    """``optuna.importance.get_param_importances`` (fANOVA) of the searched settings for the
    first objective, on a study rebuilt from the leaderboard: one Optuna trial per finished
    configuration, valued at its mean over seeds. Returns ``(importances, note)``; the note
    says why they are empty."""
    import optuna

    configs = board.configs
    metric, mode = board.metrics[0], board.modes[0]
    if configs.empty or metric not in configs:
        return {}, "no finished configuration yet"
    # Finished configurations only: one stopped early (status STOPPED) has its rung's figures, not its end's.
    done = configs[(configs["status"] == "TERMINATED") & configs[metric].notna()]
    if "baseline" in done:  # the plain baseline is a reference, not a sample of the space (weights at 0)
        done = done[~done["baseline"].astype(bool)]
    dists = {}
    for key in searched:
        if key not in done:
            continue
        dist = optuna_distribution(space.search[key]) if space and key in space.search else _inferred_distribution(done[key])
        if dist is not None:
            dists[key] = dist
    if len(done) < 2 or not dists:
        return {}, f"needs at least 2 finished configurations and a searched setting (has {len(done)})"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for _, row in done.iterrows():
        params = {k: plain_value(row[k]) for k in dists}
        study.add_trial(optuna.trial.create_trial(value=float(row[metric]), params=params, distributions=dists))
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as err:  # e.g. every configuration with the same value
        return {}, f"optuna could not compute importances ({str(err).rstrip('.')})"
    if not any(math.isfinite(v) and v > 0 for v in imp.values()):
        return {}, f"every finished configuration has the same {metric}"
    return dict(imp), f"fANOVA over {len(done)} finished configurations, on {metric} (mean over seeds)"


# ---------------------------------------------------------------- learning curves


def learning_curves(run_dir: str, trials: pd.DataFrame, top: int,
                    metrics: tuple[str, ...] = ("gap", "acc_en", "acc_target")) -> dict[str, pd.DataFrame]:
    """Each report of the trials of the ``top`` best configurations (Tune's ``progress.csv``
    / ``result.json``, read by ``ExperimentAnalysis`` from any storage): label -> frame with
    ``examples_seen`` (the training examples seen at the evaluation, the curves' x axis; absent in
    runs from before the clock), ``epoch``, ``eval_full`` (0: the subset scored during an epoch)
    and ``metrics``, in the order of the reports."""
    from ray.tune import ExperimentAnalysis

    from xling_ray.tune.storage import resolve_storage

    if trials.empty:
        return {}
    chosen = trials[trials["rank"] <= top]
    logger = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a trial that has not reported yet is expected here, not worth a warning
    try:
        frames = ExperimentAnalysis(resolve_storage(run_dir)).trial_dataframes
    finally:
        logger.setLevel(level)
    multi_seed = trials.groupby("config_id").size().max() > 1
    out = {}
    for _, row in chosen.iterrows():
        df = frames.get(row["trial_id"])
        if df is None or df.empty or "epoch" not in df:
            continue
        clock = [c for c in ("examples_seen", "epoch", "eval_full") if c in df]
        out[trial_label(row, multi_seed)] = df[clock + [m for m in metrics if m in df]].sort_values(clock[0])
    return out


# ---------------------------------------------------------------- what the top configurations change


def diff_baseline(board: Leaderboard, space: SearchSpace | None) -> tuple[dict[str, Any], str]:
    """The configuration the top ones are compared with: ``(its searched settings, what it is)``.

    A configuration that ran, so that no column shows a value no trial had: the plain baseline
    where the sweep ran one (``constraint.baseline: plain``), else the space's first point
    (``sweep.points_to_evaluate[0]``, the first configuration the sweep tries). A space with
    neither is compared with its fixed ``recipe`` (no searched setting applied), and says so;
    a run without a saved space, with the project's defaults."""
    configs = board.configs
    if "baseline" in configs and configs["baseline"].fillna(False).astype(bool).any():
        row = configs[configs["baseline"].fillna(False).astype(bool)].iloc[0]
        keys = list(space.search) if space else []
        keys += [k for k in LOSS_SWITCHES if k not in keys]
        settings = {k: plain_value(row[k]) for k in keys if k in row and not _missing(row[k])}
        return settings, (f"the plain baseline the sweep ran (configuration {row['config_id']}: "
                          "every regularizer off, constraint baseline: plain)")
    if space is not None and space.first_points():
        point = space.first_points()[0]
        what = ", ".join(f"{k}={v}" for k, v in point.items())
        return dict(point), f"the space's first point, the first configuration the sweep ran ({what})"
    if space is not None:
        return {}, ("the sweep's fixed recipe with none of the searched settings applied (the space names no "
                    "point to try first, so no trial need have run it)")
    return {}, "the project's default recipe (the run saved no search space)"


def config_difference(board: Leaderboard, space: SearchSpace | None, searched: list[str], top: int) -> pd.DataFrame:
    """Rows: every recipe setting where one of the ``top`` best configurations differs from
    the baseline; columns: ``baseline``, then ``#1``, ``#2``, ...

    The baseline is :func:`diff_baseline`'s: the plain baseline the sweep ran, else the
    space's first point, else the fixed ``recipe`` (without a saved search space, the
    project's defaults, ``RecipeConfig()``)."""
    configs = board.configs
    if configs.empty:
        return pd.DataFrame()
    fixed = space.recipe if space else RecipeConfig()
    try:
        base_recipe = fixed.with_updates(diff_baseline(board, space)[0])
    except ValueError:  # a setting the current code no longer accepts: compare with the fixed recipe
        base_recipe = fixed
    base = _flatten(base_recipe.model_dump())
    columns: dict[str, dict[str, Any]] = {}
    for _, row in configs.head(top).iterrows():
        # The plain baseline also switches off what the recipe fixes on (LOSS_SWITCHES, e.g. adjustment's regime).
        keys = list(searched) + [k for k in LOSS_SWITCHES if k not in searched]
        settings = {k: plain_value(row[k]) for k in keys if k in row and not _missing(row[k])}
        try:
            recipe = _flatten(fixed.with_updates(settings).model_dump())
        except Exception:  # a setting the current code no longer accepts: show it as given
            recipe = {**base, **settings}
        columns[f"#{row['rank']} {row['config_id']}"] = recipe
    keys = [k for k in base if k not in _LOCATION_FIELDS and any(_differs(c.get(k), base[k]) for c in columns.values())]
    table = pd.DataFrame({"baseline": {k: base[k] for k in keys}, **{name: {k: c.get(k) for k in keys} for name, c in columns.items()}})
    table.index.name = "setting"
    return table.reset_index()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}`` (the inverse of ``config.set_dotted``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "config_overrides":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return not math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a != b
