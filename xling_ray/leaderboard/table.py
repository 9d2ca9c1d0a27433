"""The leaderboard: configurations ranked by their mean over seeds.

Rebuilt from a run folder alone (``ExperimentAnalysis`` reads Tune's own
experiment state and each trial's results; the sweep's objectives come from
``search_space.yaml`` in the same folder), so it works on a finished sweep, an
interrupted one, or one still running. A trial's row is its last report: the
model the recipe produced (or where the scheduler stopped it).

Two tables:

* ``trials``: one row per trial (a configuration at one seed).
* ``configs``: one row per configuration: for each metric the mean over its
  seeds and, for the summary metrics, the sample standard deviation
  (``<metric>_std``, ddof 1; empty with one seed). Ranked: configurations whose
  seeds all finished first, then feasible ones (``feasible``: the constraint's
  metric mean is at least ``baseline - delta``), then by the first objective's
  mean (ties: higher ``acc_target``). With several objectives, ``pareto``
  marks the finished, feasible configurations no other such configuration
  dominates.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES
from xling_ray.tune.space import Constraint, SearchSpace

SUMMARY_COLUMNS = ["gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "acc_xnli_target", "acc_pawsx_target"]
LANGUAGE_COLUMNS = [f"acc_xnli_{l}" for l in XNLI_LANGUAGES] + [f"acc_pawsx_{l}" for l in PAWSX_LANGUAGES]
_STATUS_ORDER = ["ERROR", "RUNNING", "PENDING", "PAUSED", "TERMINATED"]  # a configuration is as far as its least finished seed


class RunNotFoundError(FileNotFoundError):
    pass


@dataclass
class Leaderboard:
    configs: pd.DataFrame
    trials: pd.DataFrame
    metrics: tuple[str, ...] = ("gap",)
    modes: tuple[str, ...] = ("min",)
    constraint: Constraint | None = None

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


def build_leaderboard(run_dir: str | Path, space: SearchSpace | None = None) -> Leaderboard:
    """Rank the sweep in ``run_dir`` (a local path or a URI Ray's storage reads)."""
    if space is None:
        space = _run_space(run_dir)
    trials = load_trials(run_dir, space)
    s = space.sweep if space else None
    metrics, modes = (s.metrics, s.modes) if s else (("gap",), ("min",))
    constraint = s.constraint if s else None
    return Leaderboard(group_configs(trials, metrics, modes, constraint), trials, metrics, modes, constraint)


def _run_space(run_dir) -> SearchSpace | None:
    from xling_ray.config import ConfigError
    from xling_ray.tune.sweep import load_run_space

    try:
        return load_run_space(run_dir)
    except ConfigError:
        return None  # a run from before search spaces were saved: defaults


def load_trials(run_dir: str | Path, space: SearchSpace | None = None, describe=None) -> pd.DataFrame:
    """One row per trial: ``trial_id, status, config_id, seed``, the metrics of its last
    report, ``epoch``, the searched settings, ``error``.

    ``describe(config) -> (config_id or None, seed, settings)`` reads a trial's Tune
    config; by default a sweep's: the searched settings and the seed index, with
    trials of equal settings sharing the first one's id."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(run_dir))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise RunNotFoundError(f"{run_dir}: no sweep here ({err}); pass the folder `xling-ray sweep` printed") from None
    describe = describe or _sweep_trial(space.recipe.train.seed if space else 0)
    rows, groups = [], {}
    # Tune lists trials in the order it restored them; sort so ids and seed lists are stable.
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        config_id, seed, settings = describe(trial.config or {})
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        config_id = config_id or groups.setdefault(key, trial.trial_id)
        result = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": trial.status, "config_id": config_id, "seed": seed}
        row.update({k: v for k, v in result.items() if k.startswith(("acc_", "gap", "diag_"))})
        row["epoch"] = result.get("epoch")
        row.update(settings)
        row["error"] = _error_line(trial)
        rows.append(row)
    return pd.DataFrame(rows)


def _sweep_trial(base_seed: int):
    from xling_ray.tune.search import seed_index

    def describe(config):
        settings, index = seed_index(config)
        return None, settings.get("train.seed", base_seed) + index, settings

    return describe


def group_configs(trials: pd.DataFrame, metrics=("gap",), modes=("min",), constraint: Constraint | None = None) -> pd.DataFrame:
    """One ranked row per configuration (see the module docstring)."""
    if trials.empty:
        return trials
    metric_cols = [c for c in trials.columns if c.startswith(("acc_", "gap", "diag_"))]
    settings = [c for c in trials.columns if c not in {"trial_id", "status", "config_id", "seed", "epoch", "error", *metric_cols}]
    rows = []
    for config_id, g in trials.groupby("config_id", sort=False):
        g = g.sort_values("seed", kind="stable")
        statuses = set(g["status"])
        row = {"config_id": config_id, "status": next(s for s in _STATUS_ORDER + sorted(statuses) if s in statuses),
               "seeds": len(g)}
        for c in metric_cols:
            row[c] = g[c].mean()
            if c in SUMMARY_COLUMNS:
                row[f"{c}_std"] = g[c].std(ddof=1) if g[c].notna().sum() > 1 else float("nan")
        row["epoch"] = g["epoch"].mean()
        row.update({c: g[c].iloc[0] for c in settings})
        row["seed_list"] = " ".join(str(int(s)) for s in g["seed"])
        row["trial_ids"] = " ".join(g["trial_id"])
        errors = [e for e in g["error"] if isinstance(e, str) and e]
        row["error"] = errors[0] if errors else ""
        rows.append(row)
    df = pd.DataFrame(rows)
    for m in metrics:
        if m not in df:
            df[m] = float("nan")
    if "acc_target" not in df:
        df["acc_target"] = float("nan")
    complete = (df["status"] == "TERMINATED") & df[list(metrics)].notna().all(axis=1)
    feasible = pd.Series(True, index=df.index)
    if constraint is not None:
        value = df[constraint.metric] if constraint.metric in df else pd.Series(float("nan"), index=df.index)
        feasible = value >= constraint.floor
        df["feasible"] = feasible
    if len(metrics) > 1:
        df["pareto"] = False
        eligible = df.index[complete & feasible]
        front = pareto_front(df.loc[eligible, list(metrics)].to_numpy(float), modes)
        df.loc[eligible[front], "pareto"] = True
    primary, ascending = metrics[0], modes[0] == "min"
    df["_incomplete"], df["_infeasible"] = ~complete, ~feasible
    df = df.sort_values(["_incomplete", "_infeasible", primary, "acc_target"], ascending=[True, True, ascending, False],
                        na_position="last", kind="stable").drop(columns=["_incomplete", "_infeasible"])
    df.insert(0, "rank", range(1, len(df) + 1))
    marks = [c for c in ("feasible", "pareto") if c in df]
    first = ["rank", "config_id", "status", "seeds"] + marks
    first += [c for col in SUMMARY_COLUMNS for c in (col, f"{col}_std") if c in df]
    first += [c for c in LANGUAGE_COLUMNS + ["epoch"] if c in df]
    rest = [c for c in df.columns if c not in first and c not in ("seed_list", "trial_ids", "error")]
    return df[first + rest + ["seed_list", "trial_ids", "error"]].reset_index(drop=True)


def plain_value(value: Any) -> Any:
    """A numpy scalar from a pandas cell as the Python value (YAML, pydantic and Optuna want those)."""
    return value.item() if isinstance(value, np.generic) else value


def pareto_front(values: np.ndarray, modes) -> np.ndarray:
    """Boolean mask of the rows of ``values`` (n x k) that no other row dominates:
    ``b`` dominates ``a`` when it is at least as good in every objective (``min``:
    lower, ``max``: higher) and better in one."""
    if len(values) == 0:
        return np.zeros(0, bool)
    signed = values * np.array([1.0 if m == "min" else -1.0 for m in modes])  # everything minimised
    no_worse = (signed[:, None, :] <= signed[None, :, :]).all(-1)  # [b, a]: b no worse than a
    better = (signed[:, None, :] < signed[None, :, :]).any(-1)
    dominated = (no_worse & better).any(0)
    return ~dominated


def _error_line(trial) -> str:
    if trial.status != "ERROR":
        return ""
    try:
        err = trial.get_error()
    except Exception:  # the error file may not have been written before an interruption
        err = None
    text = str(err) if err else "failed (no error recorded)"
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else text


def write_leaderboard(board: Leaderboard, run_dir: str | Path, prefix: str = "leaderboard") -> list[str]:
    """``<prefix>.csv`` and ``<prefix>.md`` (configurations) and ``<prefix>_trials.csv``
    into ``run_dir`` (any storage pyarrow writes). Returns the paths written."""
    from xling_ray.tune.storage import write_text

    files = {
        f"{prefix}.csv": board.configs.to_csv(index=False),
        f"{prefix}.md": board.configs.to_markdown(index=False, floatfmt=".2f") + "\n" if not board.configs.empty else "(no trials)\n",
        f"{prefix}_trials.csv": board.trials.to_csv(index=False),
    }
    return [write_text(run_dir, name, text) for name, text in files.items()]


#: Columns that hold ids; Tune's ids are hex ("4611e919", "12345678") and would parse as numbers.
ID_COLUMNS = ("config_id", "trial_id", "trial_ids", "seed_list")


def read_leaderboard(path: str | Path) -> pd.DataFrame:
    """Read a CSV that :func:`write_leaderboard` wrote, ids kept as text.

    Plain ``pd.read_csv`` turns a configuration id such as ``4611e919`` into
    ``inf`` and ``12345678`` into an integer."""
    return pd.read_csv(path, dtype={c: str for c in ID_COLUMNS})


def format_leaderboard(board: Leaderboard) -> str:
    """The printed view, in two blocks that fit a terminal: the ranking with each
    configuration's settings (``±`` the standard deviation over seeds), then accuracy
    per language. Metrics to 2 decimals, settings to 3 significant digits."""
    df = board.configs
    if df.empty:
        return "(no trials)"
    key = ["rank", "config_id"]
    langs = [c for c in LANGUAGE_COLUMNS if c in df]
    shown = df.drop(columns=langs + [c for c in df.columns if c.startswith(("acc_xnli_target", "acc_pawsx_target"))]
                    + ["trial_ids"])
    multi_seed = (df["seeds"] > 1).any()
    for col in SUMMARY_COLUMNS:
        if col in shown and f"{col}_std" in shown:
            if multi_seed:
                shown[col] = [_pm(m, s) for m, s in zip(shown[col], shown[f"{col}_std"])]
            shown = shown.drop(columns=f"{col}_std")
    if not multi_seed:
        shown = shown.drop(columns=["seeds", "seed_list"])
    if not shown["error"].fillna("").astype(bool).any():
        shown = shown.drop(columns="error")
    per_language = df[key + langs].rename(columns=lambda c: c.removeprefix("acc_"))
    notes = []
    if multi_seed:
        notes.append("metrics: mean ± standard deviation over seeds")
    if board.constraint is not None:
        c = board.constraint
        notes.append(f"feasible: {c.metric} >= {c.baseline:g} - {c.delta:g}")
    if board.multi_objective:
        notes.append("pareto: not dominated on " + ", ".join(f"{m} ({o})" for m, o in zip(board.metrics, board.modes)))
    head = ("\n".join(notes) + "\n") if notes else ""
    return f"{head}{_to_text(shown)}\n\nAccuracy (%) per task and language:\n{_to_text(per_language)}"


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f}±{std:.2f}"


def _to_text(df: pd.DataFrame) -> str:
    formatters = {}
    for col in df.columns:
        if not pd.api.types.is_float_dtype(df[col]):
            continue
        if col.startswith(("acc_", "gap", "xnli_", "pawsx_")) or col == "epoch":
            formatters[col] = lambda v: "" if pd.isna(v) else f"{v:.2f}"
        else:
            formatters[col] = lambda v: "" if pd.isna(v) else f"{v:.3g}"
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 80):
        return df.to_string(index=False, formatters=formatters)

