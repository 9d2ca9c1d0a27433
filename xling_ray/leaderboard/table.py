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
  seeds all finished first, then those that learned (not ``collapsed``), then
  feasible ones (``feasible``: the constraint's metric mean is at least the
  floor, :func:`resolve_floor`), then by the first objective's mean (ties:
  higher ``acc_target``). With several objectives, ``pareto`` marks the
  finished, feasible configurations that learned and that no other such
  configuration dominates.

``collapsed`` is True when any seed of the configuration collapsed (its
``collapsed`` metric: the English predictions of a task fell on one class,
:data:`xling_ray.metrics.COLLAPSE_THRESHOLD`): one seed that learned nothing
makes the configuration one to distrust, however good its mean gap. Such a
configuration ranks after every configuration that learned, whatever its gap.
Trials of runs from before the metric existed count as not collapsed (unknown).
With ``constraint.baseline: plain``, ``baseline`` marks the plain configuration
the floor is measured on.

``stopped_at``: where early stopping (``sweep.scheduler: asha``,
:class:`~xling_ray.tune.early_stopping.SeedGroupASHA`) stopped the configuration, its
rung in training examples and the mean of the judged metric over its seeds there
(``1000 examples: gap 4.21``); empty when it was not stopped. A stopped configuration's
``status`` is ``STOPPED`` (its seeds are Tune's ``TERMINATED``), its figures are those of
the rung (an evaluation during the epoch scores ``train.eval_subset_per_language``
examples), and it ranks after every configuration that trained to its end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES
from xling_ray.metrics import COLLAPSE_THRESHOLD
from xling_ray.noise import PREDICTIONS_FILE, Predictions, load_predictions_table, save_predictions_table
from xling_ray.leaderboard.intervals import VERSUS_COLUMNS, add_noise, noise_notes
from xling_ray.tune.space import LOSS_SWITCHES, Constraint, SearchSpace, same_settings

#: Result keys that are metrics (a trial's figures), by prefix; the other columns of a trial are settings.
METRIC_PREFIXES = ("acc_", "gap", "diag_", "top_class_", "collapsed", "majority_")
SUMMARY_COLUMNS = ["gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "acc_xnli_target", "acc_pawsx_target"]
LANGUAGE_COLUMNS = [f"acc_xnli_{l}" for l in XNLI_LANGUAGES] + [f"acc_pawsx_{l}" for l in PAWSX_LANGUAGES]
_STATUS_ORDER = ["ERROR", "RUNNING", "PENDING", "PAUSED", "TERMINATED"]  # a configuration is as far as its least finished seed
#: A configuration's status when early stopping stopped it (its seeds are Tune's TERMINATED).
STOPPED = "STOPPED"
#: Columns of a trial that are neither metrics nor settings.
_TRIAL_FIELDS = ("trial_id", "status", "config_id", "seed", "epoch", "error", "stopped_at")


class RunNotFoundError(FileNotFoundError):
    pass


@dataclass
class Leaderboard:
    configs: pd.DataFrame
    trials: pd.DataFrame
    metrics: tuple[str, ...] = ("gap",)
    modes: tuple[str, ...] = ("min",)
    constraint: Constraint | None = None
    #: Each trial's kept predictions (trial id -> :class:`~xling_ray.noise.Predictions`), where it kept them.
    predictions: dict[str, Predictions] = field(default_factory=dict)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


def build_leaderboard(run_dir: str | Path, space: SearchSpace | None = None) -> Leaderboard:
    """Rank the sweep in ``run_dir`` (a local path or a URI Ray's storage reads)."""
    if space is None:
        space = _run_space(run_dir)
    predictions: dict[str, Predictions] = {}
    trials = load_trials(run_dir, space, predictions=predictions)
    s = space.sweep if space else None
    metrics, modes = (s.metrics, s.modes) if s else (("gap",), ("min",))
    constraint = s.constraint if s else None
    baseline = space.baseline_point if space else None
    stopped = stopped_configs(run_dir)
    if not trials.empty:
        by_config = _stopped_by_config(trials, stopped)
        trials["stopped_at"] = [stopped_label(by_config[c]) if c in by_config else "" for c in trials["config_id"]]
        # Tune's snapshot keeps a seed that was paused at the rung as PAUSED after early stopping stopped it
        # (it does not save a paused trial's stop); its run ended there: TERMINATED, as Tune had it.
        trials.loc[trials["config_id"].isin(list(by_config)) & (trials["status"] == "PAUSED"), "status"] = "TERMINATED"
    configs = add_noise(group_configs(trials, metrics, modes, constraint, baseline, stopped), trials, predictions)
    return Leaderboard(configs, trials, metrics, modes, constraint, predictions)


def stopped_configs(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Config id -> where early stopping stopped it, from the run folder
    (:func:`xling_ray.tune.early_stopping.load_stopped`); ``{}`` without early stopping."""
    from xling_ray.tune.early_stopping import load_stopped

    return load_stopped(run_dir)


def _stopped_by_config(trials: pd.DataFrame, stopped: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``stopped`` (keyed as the scheduler keys a configuration: its first seed's trial id) keyed by the
    leaderboard's ``config_id`` of its trials (``trial_ids``; the key itself where it is a trial id or a
    config id of ``trials``)."""
    if not stopped or trials.empty:
        return {}
    config_of = dict(zip(trials["trial_id"], trials["config_id"]))
    ids = set(trials["config_id"])
    out = {}
    for key, entry in stopped.items():
        configs = {config_of[t] for t in entry.get("trial_ids") or [key] if t in config_of}
        for config in configs or ({key} & ids):
            out[config] = entry
    return out


def stopped_label(stopped: dict[str, Any]) -> str:
    """``1000 examples: gap 4.21`` (:func:`xling_ray.tune.early_stopping.stopped_label`)."""
    from xling_ray.tune.early_stopping import stopped_label as label

    return label(stopped)


def _run_space(run_dir) -> SearchSpace | None:
    from xling_ray.config import ConfigError
    from xling_ray.tune.sweep import load_run_space

    try:
        return load_run_space(run_dir)
    except ConfigError:
        return None  # a run from before search spaces were saved: defaults


def load_trials(run_dir: str | Path, space: SearchSpace | None = None, describe=None,
                predictions: dict[str, Predictions] | None = None) -> pd.DataFrame:
    """One row per trial: ``trial_id, status, config_id, seed``, the metrics of its last
    report, ``epoch``, the searched settings, ``error``.

    ``predictions`` (a dict): filled with each trial's kept predictions (trial id ->
    :class:`~xling_ray.noise.Predictions`, :func:`trial_predictions`), where they are of its last report.

    ``describe(config) -> (config_id or None, seed, settings)`` reads a trial's Tune
    config; by default a sweep's: the searched settings and the seed index, with
    trials of equal settings sharing the first one's id."""
    from ray.tune import ExperimentAnalysis

    from xling_ray.tune.storage import resolve_storage

    try:
        analysis = ExperimentAnalysis(resolve_storage(run_dir))
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        raise RunNotFoundError(f"{run_dir}: no sweep here ({err}); pass the folder `xling-ray sweep` printed") from None
    describe = describe or _sweep_trial(space.recipe.train.seed if space else 0)

    def keep(trial, result: dict) -> None:
        if predictions is not None:
            kept = trial_predictions(trial, run_dir)
            if kept is not None and result.get("epoch") is not None and kept.epoch == result["epoch"]:
                predictions[trial.trial_id] = kept

    return _trials_table(analysis.trials, describe, lambda trial: trial.status, _error_line, keep)


def live_trials(trials: list, space: SearchSpace | None = None, status_of=None) -> pd.DataFrame:
    """:func:`load_trials`'s table from Tune's live ``Trial`` objects (what a callback holds
    while the sweep runs). ``status_of(trial)``: its status (default: ``trial.status``; a
    callback told of a trial's end before Tune sets it passes its own)."""
    describe = _sweep_trial(space.recipe.train.seed if space else 0)
    return _trials_table(trials, describe, status_of or (lambda trial: trial.status), lambda trial: "")


def _trials_table(trials, describe, status_of, error_of, keep=None) -> pd.DataFrame:
    """The rows of :func:`load_trials` and :func:`live_trials`; ``keep(trial, last_result)`` is
    called for each trial (the kept predictions)."""
    rows, groups = [], {}
    # Tune lists trials in the order it restored them; sort so ids and seed lists are stable.
    for trial in sorted(trials, key=lambda t: t.trial_id):
        config_id, seed, settings = describe(getattr(trial, "config", None) or {})
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        config_id = config_id or groups.setdefault(key, trial.trial_id)
        result = trial.last_result or {}
        row = {"trial_id": trial.trial_id, "status": status_of(trial), "config_id": config_id, "seed": seed}
        row.update({k: v for k, v in result.items() if k.startswith(METRIC_PREFIXES)})
        row["epoch"] = result.get("epoch")
        row.update(settings)
        row["error"] = error_of(trial)
        rows.append(row)
        if keep is not None:
            keep(trial, result)
    return pd.DataFrame(rows)


def trial_predictions(trial, run_dir: str | Path) -> Predictions | None:
    """The predictions a trial kept in its last checkpoint (``predictions.npz``), read through
    the checkpoint's own filesystem (a local folder, S3, ...); None when it kept none. A trial
    that trains on Ray Train workers reports its checkpoint's path (``checkpoint_path``, on the
    run's storage) instead of a Tune checkpoint."""
    from xling_ray.tune.storage import open_run_dir

    ckpt = trial.checkpoint
    try:
        if ckpt is not None:
            fs, path = ckpt.filesystem, ckpt.path
        elif (trial.last_result or {}).get("checkpoint_path"):
            fs, path = open_run_dir(run_dir)[0], trial.last_result["checkpoint_path"]
        else:
            return None
        with fs.open_input_file(f"{path}/{PREDICTIONS_FILE}") as f:
            return Predictions.from_bytes(f.read())
    except (FileNotFoundError, OSError):
        return None


def _sweep_trial(base_seed: int):
    from xling_ray.tune.search import seed_index

    def describe(config):
        settings, index = seed_index(config)
        return None, settings.get("train.seed", base_seed) + index, settings

    return describe


def group_configs(trials: pd.DataFrame, metrics=("gap",), modes=("min",), constraint: Constraint | None = None,
                  baseline: dict[str, Any] | None = None,
                  stopped: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One ranked row per configuration (see the module docstring). ``baseline``: the
    plain baseline's settings (``SearchSpace.baseline_point``), for ``constraint.baseline: plain``.
    ``stopped``: config id -> where early stopping stopped it (:func:`stopped_configs`), for
    ``stopped_at`` and the status ``STOPPED``."""
    if trials.empty:
        return trials
    stopped = _stopped_by_config(trials, stopped or {})
    metric_cols = [c for c in trials.columns if c.startswith(METRIC_PREFIXES)]
    settings = [c for c in trials.columns if c not in {*_TRIAL_FIELDS, *metric_cols}]
    rows = []
    for config_id, g in trials.groupby("config_id", sort=False):
        g = g.sort_values("seed", kind="stable")
        statuses = set(g["status"])
        status = next(s for s in _STATUS_ORDER + sorted(statuses) if s in statuses)
        if config_id in stopped and statuses <= {"TERMINATED", "PAUSED"}:
            status = STOPPED  # every seed ended at the rung (a paused one in a live sweep is stopped just after)
        row = {"config_id": config_id, "status": status, "seeds": len(g),
               "stopped_at": stopped_label(stopped[config_id]) if config_id in stopped else ""}
        for c in metric_cols:
            if c.startswith("collapsed"):
                continue
            row[c] = g[c].mean()
            if c in SUMMARY_COLUMNS:
                row[f"{c}_std"] = g[c].std(ddof=1) if g[c].notna().sum() > 1 else float("nan")
        for c in (c for c in metric_cols if c.startswith("collapsed_")):
            row[c] = 1.0 if (g[c] == 1.0).any() else (0.0 if g[c].notna().any() else float("nan"))
        row["collapsed"] = bool((g["collapsed"] == 1.0).any()) if "collapsed" in g else False
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
    if baseline is not None:
        df["baseline"] = [same_settings(_present({c: r[c] for c in settings}), _present(baseline))
                          for _, r in df.iterrows()]
    complete = (df["status"] == "TERMINATED") & df[list(metrics)].notna().all(axis=1)
    learned = ~df["collapsed"].astype(bool)
    feasible = pd.Series(True, index=df.index)
    if constraint is not None:
        value = df[constraint.metric] if constraint.metric in df else pd.Series(float("nan"), index=df.index)
        floor, _ = resolve_floor(constraint, df)
        feasible = floor.isna() | (value >= floor)
        df["feasible"] = feasible
    if len(metrics) > 1:
        df["pareto"] = False
        eligible = df.index[complete & learned & feasible]
        front = pareto_front(df.loc[eligible, list(metrics)].to_numpy(float), modes)
        df.loc[eligible[front], "pareto"] = True
    primary, ascending = metrics[0], modes[0] == "min"
    df["_incomplete"], df["_collapsed"], df["_infeasible"] = ~complete, ~learned, ~feasible
    df = df.sort_values(["_incomplete", "_collapsed", "_infeasible", primary, "acc_target"],
                        ascending=[True, True, True, ascending, False], na_position="last", kind="stable")
    df = df.drop(columns=["_incomplete", "_collapsed", "_infeasible"])
    df.insert(0, "rank", range(1, len(df) + 1))
    marks = [c for c in ("feasible", "collapsed", "baseline", "pareto") if c in df]
    first = ["rank", "config_id", "status", "seeds"] + marks + ["stopped_at"]
    first += [c for col in SUMMARY_COLUMNS for c in (col, f"{col}_std") if c in df]
    first += [c for c in LANGUAGE_COLUMNS + ["epoch"] if c in df]
    rest = [c for c in df.columns if c not in first and c not in ("seed_list", "trial_ids", "error")]
    return df[first + rest + ["seed_list", "trial_ids", "error"]].reset_index(drop=True)


def rank_one(configs: pd.DataFrame, metrics=("gap",)) -> pd.Series | None:
    """The leaderboard's rank 1 (:func:`group_configs`' first row) when it is a result: every
    seed finished with the first objective, and no seed collapsed; ``None`` otherwise (nothing
    finished yet, or only collapsed configurations). Where no configuration is feasible,
    rank 1 is an infeasible one (its ``feasible`` False). The live progress line shows this
    row (:class:`xling_ray.tune.progress.SweepProgress`)."""
    if configs.empty:
        return None
    first = configs.iloc[0]
    finished = first["status"] == "TERMINATED" and all(not _missing(first.get(m)) for m in metrics)
    return first if finished and not bool(first.get("collapsed", False)) else None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value))


def _present(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that have a value (a configuration's row is empty where only others have one)."""
    return {k: v for k, v in settings.items() if not _missing(v)}


def resolve_floor(constraint: Constraint, configs: pd.DataFrame) -> tuple[pd.Series, str]:
    """Per configuration of ``configs``, the floor under ``constraint.metric`` (NaN where it
    is not known yet: such a configuration is not judged infeasible), and the note that
    says it (e.g. ``feasible: acc_en >= 51.30 (plain's 53.30 - 2)``).

    * a number: ``baseline - delta`` for every configuration;
    * ``plain``: ``mean - delta`` of the configuration marked ``baseline``, once all its
      seeds finished; until then no floor;
    * ``majority``: each configuration's own ``majority_en + delta`` (the same for every
      configuration of a sweep: it depends on the evaluation labels only); where no trial
      reported ``majority_en``, no floor.
    """
    c, index, nan = constraint, configs.index, float("nan")
    if not c.relative:
        return pd.Series(c.floor, index=index), f"feasible: {c.metric} >= {c.floor:.2f} ({c.baseline:g} - {c.delta:g})"
    if c.baseline == "plain":
        is_base = configs["baseline"].astype(bool) if "baseline" in configs else pd.Series(False, index=index)
        value = configs[c.metric] if c.metric in configs else pd.Series(nan, index=index)
        done = is_base & (configs["status"] == "TERMINATED") & value.notna()
        if not done.any():
            return (pd.Series(nan, index=index),
                    f"feasible: {c.metric} >= plain's mean - {c.delta:g} once the plain baseline has finished "
                    "(until then no configuration is judged infeasible)")
        reference = float(value[done].iloc[0])
        floor = c.floor_from(reference)
        return pd.Series(floor, index=index), f"feasible: {c.metric} >= {floor:.2f} (plain's {reference:.2f} - {c.delta:g})"
    reference = configs["majority_en"] if "majority_en" in configs else pd.Series(nan, index=index)
    floor = reference + c.delta
    known = sorted(set(round(float(v), 2) for v in reference.dropna()))
    if not known:
        note = (f"feasible: {c.metric} >= majority_en + {c.delta:g} once trials report majority_en "
                "(until then no configuration is judged infeasible)")
    elif len(known) == 1:
        note = (f"feasible: {c.metric} >= {known[0] + c.delta:.2f} (majority's {known[0]:.2f} + {c.delta:g}; majority: "
                "the English accuracy of predicting each task's most frequent class)")
    else:
        note = f"feasible: {c.metric} >= each configuration's majority_en + {c.delta:g}"
    return floor, note


def leaderboard_notes(board: "Leaderboard") -> list[str]:
    """What the marks of ``board.configs`` mean, the resolved floor included."""
    configs = board.configs
    notes = []
    if board.constraint is not None and not configs.empty:
        notes.append(resolve_floor(board.constraint, configs)[1])
    notes.append(f"collapsed: a seed predicted one class for >= {COLLAPSE_THRESHOLD:g} % of a task's English examples "
                 "(it learned nothing); ranked after every configuration that learned, whatever its gap")
    if "baseline" in configs:
        notes.append("baseline: plain fine-tuning (every regularizer off), run by the sweep to measure the floor")
    if "stopped_at" in configs and configs["stopped_at"].fillna("").astype(bool).any():
        notes.append("stopped_at: early stopping (sweep.scheduler asha) stopped the configuration, all its seeds, at "
                     "that rung (training examples) on the mean of its seeds' metric there (an evaluation during an "
                     "epoch scores train.eval_subset_per_language examples); its figures are the rung's, and it ranks "
                     "after every configuration that trained to its end")
    if board.multi_objective:
        notes.append("pareto: not dominated on " + ", ".join(f"{m} ({o})" for m, o in zip(board.metrics, board.modes))
                     + ", among the finished, feasible configurations that learned")
    notes += noise_notes(configs, board.predictions)
    return notes


def config_settings(row: pd.Series, space: SearchSpace) -> dict[str, Any]:
    """The settings of a leaderboard row to apply to ``space.recipe``: the searched ones and,
    for the plain baseline, the loss switches it turns off beyond them
    (:data:`~xling_ray.tune.space.LOSS_SWITCHES`, e.g. ``losses.adjustment.regime``)."""
    settings = {k: plain_value(row[k]) for k in space.search}
    settings.update({k: plain_value(row[k]) for k in LOSS_SWITCHES
                     if k not in space.search and k in row.index and not _missing(row[k])})
    return settings


def plain_value(value: Any) -> Any:
    """A numpy scalar from a pandas cell as the Python value (YAML, pydantic and Optuna want those)."""
    return value.item() if isinstance(value, np.generic) else value


def pareto_front(values: np.ndarray, modes) -> np.ndarray:
    """Boolean mask of the rows of ``values`` (n x k) that no other row dominates:
    ``b`` dominates ``a`` when it is at least as good in every objective (``min``:
    lower, ``max``: higher) and better in one.

    Ours, not Optuna's: Optuna 5.0's is private (``optuna.study._multi_objective``), and
    its public ``Study.best_trials`` would need a study built trial by trial from the rows."""
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
    into ``run_dir`` (any storage pyarrow writes), and with kept predictions
    ``<prefix>_predictions.npz`` (every trial's, :func:`xling_ray.noise.save_predictions_table`).
    Returns the paths written."""
    from xling_ray.tune.storage import open_run_dir, write_text

    notes = "".join(f"- {n}\n" for n in leaderboard_notes(board)) + "\n"
    files = {
        f"{prefix}.csv": board.configs.to_csv(index=False),
        f"{prefix}.md": notes + board.configs.to_markdown(index=False, floatfmt=".2f") + "\n" if not board.configs.empty else "(no trials)\n",
        f"{prefix}_trials.csv": board.trials.to_csv(index=False),
    }
    written = [write_text(run_dir, name, text) for name, text in files.items()]
    if board.predictions:
        fs, path = open_run_dir(run_dir)
        with fs.open_output_stream(f"{path}/{prefix}_predictions.npz") as f:
            f.write(save_predictions_table(board.predictions))
        written.append(f"{str(run_dir).rstrip('/')}/{prefix}_predictions.npz")
    return written


#: Columns that hold ids; Tune's ids are hex ("4611e919", "12345678") and would parse as numbers.
ID_COLUMNS = ("config_id", "trial_id", "trial_ids", "seed_list")


def load_leaderboard(run_dir: str | Path, space: SearchSpace | None = None, prefix: str = "leaderboard") -> Leaderboard:
    """The leaderboard :func:`write_leaderboard` wrote into ``run_dir``, read back, ranked as
    written: for a run whose trial folders are gone (a results folder that kept only these
    files, a fresh clone), where :func:`build_leaderboard` has nothing to read."""
    import io

    from xling_ray.tune.storage import read_text

    if space is None:
        space = _run_space(run_dir)
    s = space.sweep if space else None
    try:
        configs, trials = (read_leaderboard(io.StringIO(read_text(run_dir, name)))
                           for name in (f"{prefix}.csv", f"{prefix}_trials.csv"))
    except FileNotFoundError as err:
        raise RunNotFoundError(f"{run_dir}: no {prefix}.csv and {prefix}_trials.csv to read ({err})") from None
    return Leaderboard(configs, trials, *((s.metrics, s.modes, s.constraint) if s else ()),
                       predictions=read_predictions(run_dir, prefix))


def read_predictions(run_dir: str | Path, prefix: str = "leaderboard") -> dict[str, Predictions]:
    """The trials' predictions :func:`write_leaderboard` wrote beside the leaderboard (``{}`` where
    none were kept)."""
    from xling_ray.tune.storage import open_run_dir

    fs, path = open_run_dir(run_dir)
    try:
        with fs.open_input_file(f"{path}/{prefix}_predictions.npz") as f:
            return load_predictions_table(f.read())
    except (FileNotFoundError, OSError):
        return {}


def read_leaderboard(path) -> pd.DataFrame:
    """Read a CSV that :func:`write_leaderboard` wrote (a path, or a text buffer), ids kept as text.

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
    per_task = ("acc_xnli_target", "acc_pawsx_target", "top_class_", "collapsed_")
    if not (board.constraint is not None and board.constraint.baseline == "majority"):
        per_task += ("majority_en",)
    multi_seed = (df["seeds"] > 1).any()
    # The printed view keeps the gap's errors; the other errors and the intervals against rank 1 are in the
    # CSV and the notes.
    errors = [c for c in df.columns if c.endswith("_se") and c != "gap_se"] + list(VERSUS_COLUMNS)
    errors += [] if multi_seed else ["gap_se_total"]
    shown = df.drop(columns=langs + [c for c in df.columns if c.startswith(per_task)] + ["trial_ids"]
                    + [c for c in errors if c in df])
    for col in SUMMARY_COLUMNS:
        if col in shown and f"{col}_std" in shown:
            if multi_seed:
                shown[col] = [_pm(m, s) for m, s in zip(shown[col], shown[f"{col}_std"])]
            shown = shown.drop(columns=f"{col}_std")
    if not multi_seed:
        shown = shown.drop(columns=["seeds", "seed_list"])
    if not shown["error"].fillna("").astype(bool).any():
        shown = shown.drop(columns="error")
    if "stopped_at" in shown and not shown["stopped_at"].fillna("").astype(bool).any():
        shown = shown.drop(columns="stopped_at")  # no configuration was stopped early: the CSV and .md keep it
    per_language = df[key + langs].rename(columns=lambda c: c.removeprefix("acc_"))
    notes = ["metrics: mean ± standard deviation over seeds"] if multi_seed else []
    notes += leaderboard_notes(board)
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

