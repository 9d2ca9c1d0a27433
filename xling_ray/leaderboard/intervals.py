"""Error bars on the leaderboard: each configuration's sampling error, seed spread and
sampling error combined, and each configuration's gap against rank 1's with a paired
bootstrap interval (:mod:`xling_ray.noise`).

Columns added to the configurations (after ranking; the ranking itself is untouched):

* ``gap_se`` (and ``gap_<task>_se``, ``acc_en_se``, ``acc_target_se``): the sampling error
  of the configuration's mean over its seeds, from the seed-averaged per-id scores of its
  kept predictions (:func:`xling_ray.noise.standard_errors`). Where a seed kept no
  predictions, the mean of its trials' reported errors: an upper bound, since the error of
  a mean is at most the mean of the errors.
* ``gap_se_total``: the standard error of the mean gap, seed spread and sampling error
  combined, ``sqrt(gap_std^2 / seeds + gap_se^2)``
  (:func:`xling_ray.noise.combined_standard_error`).
* ``gap_vs_1``, ``gap_vs_1_low``, ``gap_vs_1_high``: the configuration's gap minus rank
  1's, and its 95 % paired-bootstrap interval over the ids both evaluated and their seeds
  (:func:`xling_ray.noise.paired_bootstrap`); ``within_noise_of_1``: the interval holds 0.
  Empty where either kept no predictions or has not finished.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from xling_ray.noise import (BOOTSTRAP_RESAMPLES, CONFIDENCE, Difference, Predictions, combined_standard_error,
                             paired_bootstrap, standard_errors)

NOISE_COLUMNS = ("gap_se", "gap_se_total")
VERSUS_COLUMNS = ("gap_vs_1", "gap_vs_1_low", "gap_vs_1_high", "within_noise_of_1")


def config_predictions(row: pd.Series, trials: pd.DataFrame, predictions: Mapping[str, Predictions]
                       ) -> tuple[list[Predictions], list[int]] | None:
    """The kept predictions of a configuration's seeds, in seed order, and the seeds; None
    unless every seed kept its own."""
    ids = str(row.get("trial_ids", "") or "").split()
    if not ids or any(t not in predictions for t in ids):
        return None
    seeds = trials.set_index("trial_id").loc[ids, "seed"].astype(int).tolist()
    order = np.argsort(seeds, kind="stable")
    return [predictions[ids[i]] for i in order], [seeds[i] for i in order]


def add_noise(configs: pd.DataFrame, trials: pd.DataFrame, predictions: Mapping[str, Predictions],
              resamples: int = BOOTSTRAP_RESAMPLES) -> pd.DataFrame:
    """``configs`` (ranked, :func:`~xling_ray.leaderboard.table.group_configs`) with the columns
    of the module docstring, ``gap_se`` and ``gap_se_total`` placed after ``gap_std``."""
    if configs.empty or "gap" not in configs:
        return configs
    df = configs.copy()
    kept = {i: config_predictions(r, trials, predictions) for i, r in df.iterrows()}
    if "gap_se" not in df:
        df["gap_se"] = float("nan")
    for i, k in kept.items():
        if k is not None:
            for key, value in standard_errors(k[0]).items():
                df.loc[i, key] = value
    se = df["gap_se"].astype(float)
    std = df["gap_std"] if "gap_std" in df else pd.Series(float("nan"), index=df.index)
    df["gap_se_total"] = [combined_standard_error(float(sd), int(n), float(s)) if pd.notna(s) else float("nan")
                          for sd, n, s in zip(std, df["seeds"], se)]
    for c in VERSUS_COLUMNS:
        df[c] = float("nan") if c != "within_noise_of_1" else None
    first, top = df.index[0], kept[df.index[0]]
    if top is not None and df.loc[first, "status"] == "TERMINATED":
        df.loc[first, "gap_vs_1"] = 0.0
        for i in df.index[1:]:
            if kept[i] is None or df.loc[i, "status"] != "TERMINATED":
                continue
            d = versus(top, kept[i], resamples)
            df.loc[i, ["gap_vs_1", "gap_vs_1_low", "gap_vs_1_high"]] = [d.diff, d.low, d.high]
            df.loc[i, "within_noise_of_1"] = not d.beyond_noise
    cols = [c for c in df.columns if c not in NOISE_COLUMNS]
    at = cols.index("gap_std") + 1 if "gap_std" in cols else cols.index("gap") + 1
    return df[cols[:at] + list(NOISE_COLUMNS) + cols[at:]]


def versus(top: tuple[list[Predictions], list[int]], other: tuple[list[Predictions], list[int]],
           resamples: int = BOOTSTRAP_RESAMPLES) -> Difference:
    """``gap(other) - gap(top)`` by the paired bootstrap over shared ids and seeds."""
    return paired_bootstrap(top[0], other[0], "gap", top[1], other[1], resamples=resamples)


def noise_notes(configs: pd.DataFrame, predictions: Mapping[str, Predictions]) -> list[str]:
    """The leaderboard's notes on noise: what ``gap_se`` and ``gap_se_total`` are, and which
    configurations are within noise of rank 1 (and which beyond), with their intervals."""
    if configs.empty or "gap_se" not in configs:
        return []
    if configs["gap_se"].isna().all():
        return ["gap_se: unknown: no trial reported its sampling error or kept its predictions (a run from before "
                "they were kept)"]
    notes = ["gap_se: the gap's sampling error (standard error over the evaluated ids, English and targets "
             "resampled together); gap_se_total: the standard error of the mean gap over seeds, seed spread "
             "(gap_std) and sampling error combined, sqrt(gap_std^2/seeds + gap_se^2)"]
    if "gap_vs_1" not in configs or pd.isna(configs["gap_vs_1"].iloc[0]):
        if len(configs) > 1:
            notes.append("within noise of rank 1: unknown (rank 1 kept no predictions or has not finished)")
        return notes
    compared = configs[configs["gap_vs_1_low"].notna()]
    if compared.empty:
        return notes
    top = str(configs["trial_ids"].iloc[0]).split()
    ids = " + ".join(f"{len(p.ids)} {t}" for t, p in predictions[top[0]].tasks.items()) if top[0] in predictions else "the"
    level = f"{CONFIDENCE:.0%}"

    def listed(rows: pd.DataFrame) -> str:
        return ", ".join(f"rank {r['rank']} {r['config_id']} ({r['gap_vs_1']:+.2f} [{r['gap_vs_1_low']:+.2f}, "
                         f"{r['gap_vs_1_high']:+.2f}])" for _, r in rows.iterrows()) or "none"

    within = compared[compared["within_noise_of_1"].astype(bool)]
    beyond = compared[~compared["within_noise_of_1"].astype(bool)]
    notes.append(f"within noise of rank 1 (gap minus rank 1's, {level} paired bootstrap over {ids} shared ids and "
                 f"the seeds): {listed(within)}; beyond noise: {listed(beyond)}")
    return notes
