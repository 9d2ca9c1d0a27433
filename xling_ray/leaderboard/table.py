"""The leaderboard: one row per trial, ranked by transfer gap.

Rebuilt from a run folder alone (``ExperimentAnalysis`` reads Tune's own
experiment state and each trial's results), so it works on a finished sweep,
an interrupted one, or one still running. A trial's row is its last report:
the model the recipe produced (or where the scheduler stopped it).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES

SUMMARY_COLUMNS = ["gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "acc_xnli_target", "acc_pawsx_target"]
LANGUAGE_COLUMNS = [f"acc_xnli_{l}" for l in XNLI_LANGUAGES] + [f"acc_pawsx_{l}" for l in PAWSX_LANGUAGES]


class RunNotFoundError(FileNotFoundError):
    pass


def build_leaderboard(run_dir: str | Path) -> pd.DataFrame:
    """Columns: ``rank, trial_id, status, gap, gap_xnli, gap_pawsx, acc_en,
    acc_target, ..., acc_xnli_<lang>..., acc_pawsx_<lang>..., epoch``, then the
    trial's searched settings, then ``error``. Sorted by ``gap`` (ties: higher
    ``acc_target``); trials without a result (failed, pending) come last."""
    from ray.tune import ExperimentAnalysis

    run_dir = Path(run_dir)
    if not any(run_dir.glob("experiment_state-*.json")):
        raise RunNotFoundError(f"{run_dir}: no sweep here (no experiment_state-*.json); pass the folder `xling-ray sweep` printed")
    analysis = ExperimentAnalysis(str(run_dir))
    rows = []
    for trial in analysis.trials:
        result = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": trial.status}
        row.update({k: v for k, v in result.items() if k.startswith(("acc_", "gap"))})
        row["epoch"] = result.get("epoch")
        row.update({k: v for k, v in (trial.config or {}).items()})
        row["error"] = _error_line(trial)
        rows.append(row)
    return rank_trials(pd.DataFrame(rows))


def rank_trials(df: pd.DataFrame, metric: str = "gap") -> pd.DataFrame:
    """Sort by ``metric`` ascending, ties broken by higher ``acc_target``; NaN last."""
    if df.empty:
        return df
    for col in (metric, "acc_target"):
        if col not in df:
            df[col] = float("nan")
    df = df.sort_values([metric, "acc_target"], ascending=[True, False], na_position="last", kind="stable")
    df.insert(0, "rank", range(1, len(df) + 1))
    first = ["rank", "trial_id", "status"] + [c for c in SUMMARY_COLUMNS + LANGUAGE_COLUMNS + ["epoch"] if c in df]
    rest = [c for c in df.columns if c not in first and c != "error"]
    return df[first + rest + (["error"] if "error" in df else [])].reset_index(drop=True)


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


def write_leaderboard(df: pd.DataFrame, run_dir: str | Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    csv, md = run_dir / "leaderboard.csv", run_dir / "leaderboard.md"
    df.to_csv(csv, index=False)
    md.write_text(df.to_markdown(index=False, floatfmt=".2f") + "\n")
    return csv, md


def format_leaderboard(df: pd.DataFrame) -> str:
    """The printed view, in two blocks that fit a terminal: the ranking with each
    trial's settings, then accuracy per language. Metrics to 2 decimals, settings
    to 3 significant digits."""
    if df.empty:
        return "(no trials)"
    key = ["rank", "trial_id"]
    langs = [c for c in LANGUAGE_COLUMNS if c in df]
    ranking = df.drop(columns=langs + [c for c in ("acc_xnli_target", "acc_pawsx_target") if c in df])
    if "error" in ranking and not ranking["error"].fillna("").astype(bool).any():
        ranking = ranking.drop(columns="error")
    per_language = df[key + langs].rename(columns=lambda c: c.removeprefix("acc_"))
    return f"{_to_text(ranking)}\n\nAccuracy (%) per task and language:\n{_to_text(per_language)}"


def _to_text(df: pd.DataFrame) -> str:
    formatters = {}
    for col in df.columns:
        if col.startswith(("acc_", "gap", "xnli_", "pawsx_")) or col == "epoch":
            formatters[col] = lambda v: "" if pd.isna(v) else f"{v:.2f}"
        elif pd.api.types.is_float_dtype(df[col]):
            formatters[col] = lambda v: "" if pd.isna(v) else f"{v:.3g}"
    with pd.option_context("display.max_columns", None, "display.width", 250, "display.max_colwidth", 80):
        return df.to_string(index=False, formatters=formatters)
