"""Matplotlib figures of the sweep report and of the diagnostics.

Every function takes tables (pandas) and returns a ``Figure``; :func:`to_png` turns
one into bytes for a file or for embedding in HTML. The Agg backend is used, so no
display is needed.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from xling_ray.train.diagnostics import METRIC_TITLES, METRICS  # noqa: E402


TASK_NAMES = {"xnli": "XNLI", "pawsx": "PAWS-X"}


def _at_least(ax, values, span: float = 1.0) -> None:
    """Show at least ``span`` (points of accuracy or gap) on the y axis, without an offset:
    equal values (a trial that learned nothing) would otherwise be drawn at 1e-15 scale."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    ax.yaxis.get_major_formatter().set_useOffset(False)
    if len(v) and np.ptp(v) < span:
        mid = (v.max() + v.min()) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# ---------------------------------------------------------------- diagnostics


def diagnostics_figure(table: pd.DataFrame) -> Figure:
    """One panel per metric, a bar per language and model (pretrained beside fine-tuned)."""
    models = list(dict.fromkeys(table["model"]))
    keys = list(dict.fromkeys(zip(table["task"], table["language"])))
    first_task = keys[0][0]
    labels = [lang if task == first_task else f"{lang}\n{task}" for task, lang in keys]
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(max(8, 0.55 * len(keys) * max(1, len(models))), 3.0 * len(METRICS)),
                             squeeze=False)
    width = 0.8 / len(models)
    x = np.arange(len(keys))
    for ax, metric in zip(axes[:, 0], METRICS):
        for i, name in enumerate(models):
            rows = table[table["model"] == name].set_index(["task", "language"])
            values = [rows[metric].get(k, np.nan) for k in keys]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=name)
        if metric.startswith("retrieval"):
            ax.set_ylim(0, 100)
        ax.set_title(METRIC_TITLES[metric], fontsize=10)
        ax.set_xticks(x, labels, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- sweep report


def accuracy_heatmap(trials: pd.DataFrame, columns: Sequence[str], row_labels: Sequence[str]) -> Figure:
    """Accuracy (%) per trial (rows) and task/language (columns, grouped by task), each
    cell annotated with its value. ``columns`` are leaderboard columns ``acc_<task>_<lang>``."""
    values = trials[list(columns)].to_numpy(float)
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(columns) + 2), max(2.5, 0.42 * len(trials) + 1.5)))
    im = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(columns)), [c.removeprefix("acc_").split("_", 1)[1] for c in columns], fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    # Task groups: a separator and the task's name above its languages.
    tasks = [c.removeprefix("acc_").split("_", 1)[0] for c in columns]
    starts = [i for i, t in enumerate(tasks) if i == 0 or tasks[i - 1] != t]
    for s, e in zip(starts, starts[1:] + [len(tasks)]):
        if s:
            ax.axvline(s - 0.5, color="white", lw=3)
        ax.text((s + e - 1) / 2, -0.7, TASK_NAMES.get(tasks[s], tasks[s]), ha="center", va="bottom", fontsize=9, fontweight="bold")
    mid = np.nanmean(values) if np.isfinite(values).any() else 0
    for (r, c), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=7, color="black" if v > mid else "white")
    fig.colorbar(im, ax=ax, label="accuracy (%)", fraction=0.03)
    ax.set_ylim(len(trials) - 0.5, -1.2)
    fig.tight_layout()
    return fig


def gap_vs_target(df: pd.DataFrame, labels: Sequence[str], pareto: Sequence[bool],
                  gap_error: Sequence[float] | None = None) -> Figure:
    """Transfer gap (lower is better) against mean target-language accuracy (higher is
    better); the Pareto front of the two (lower gap, higher accuracy) joined by a line.
    ``gap_error``: a vertical bar of ± that many points on each gap (its standard error)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    x, y = df["acc_target"].to_numpy(float), df["gap"].to_numpy(float)
    front = np.asarray(pareto, bool)
    if gap_error is not None:
        err = np.asarray(gap_error, float)
        has = np.isfinite(err) & np.isfinite(x) & np.isfinite(y)
        if has.any():
            ax.errorbar(x[has], y[has], yerr=err[has], fmt="none", ecolor="tab:gray", elinewidth=1, capsize=3,
                        label="± standard error of the gap", zorder=1)
    ax.scatter(x[~front], y[~front], c="tab:gray", label="trial")
    ax.scatter(x[front], y[front], c="tab:red", marker="*", s=160, label="Pareto front", zorder=3)
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], c="tab:red", lw=1, zorder=2)
    for xi, yi, label in zip(x, y, labels):
        if np.isfinite(xi) and np.isfinite(yi):
            ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    _at_least(ax, y)
    ax.xaxis.get_major_formatter().set_useOffset(False)
    ax.set_xlabel("mean target-language accuracy (%)  →  better")
    ax.set_ylabel("transfer gap (points)  ↓  better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importance_bars(importances: dict[str, float]) -> Figure:
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, max(1.8, 0.45 * len(names) + 1)))
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance for the transfer gap (fANOVA, sums to 1)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def learning_curves(curves: dict[str, pd.DataFrame], metrics: Sequence[str] = ("gap", "acc_en", "acc_target")) -> Figure:
    """One panel per metric, one line per trial, against the training examples seen (``examples_seen``;
    the 1-based fractional epoch for runs from before that clock). Evaluations on the subset scored
    during an epoch (``eval_full`` 0) are open circles, full evaluations filled."""
    def x_of(df: pd.DataFrame) -> str:
        return "examples_seen" if "examples_seen" in df and df["examples_seen"].notna().all() else "epoch"

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        shown = [df for df in curves.values() if metric in df and "epoch" in df]
        for label, df in curves.items():
            if metric in df and "epoch" in df:
                x = x_of(df)
                (line,) = ax.plot(df[x], df[metric], marker="o", label=label)
                if "eval_full" in df:
                    sub = df[df["eval_full"].fillna(1).eq(0)]
                    ax.plot(sub[x], sub[metric], linestyle="none", marker="o", markerfacecolor="white",
                            markeredgecolor=line.get_color())
        _at_least(ax, np.concatenate([df[metric].to_numpy(float) for df in shown]) if shown else [])
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("training examples seen" if shown and all(x_of(df) == "examples_seen" for df in shown) else "epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig
