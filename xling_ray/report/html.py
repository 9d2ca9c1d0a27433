"""The sweep report: one self-contained HTML file (figures embedded as PNG data URIs,
inline CSS and script, nothing fetched), readable offline in any browser.

    xling-ray report RUN_DIR -o report.html
"""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

from xling_ray.leaderboard.table import SUMMARY_COLUMNS, leaderboard_notes
from xling_ray.report import figures
from xling_ray.report.run import RunReport, gap_front, heatmap_frame, load_report, trial_label

_TRIAL_METRICS = ["gap", "gap_se", "gap_xnli", "gap_pawsx", "acc_en", "acc_target"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 24px auto; max-width: 1500px;
       padding: 0 16px; color: #1d1d1f; background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .note { color: #666; font-style: italic; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e5e5e5; text-align: right; white-space: nowrap; }
th { background: #f3f4f6; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:hover { background: #e5e7eb; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
td.text, th.text { text-align: left; }
tr.best td { background: #ecfdf3; } tr.ERROR td { color: #b42318; } tr.RUNNING td, tr.PENDING td { color: #777; }
tr.stopped td { color: #8a5a00; }
td.en, th.en { background: #eff6ff; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; }
"""

# Click a header to sort by it (numbers numerically, empty cells last); click again to reverse.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.figuresLoaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.figures = imgs.length;
});
"""


def write_report(run_dir: str, out: str | Path, top: int = 3) -> Path:
    """Render the report of ``run_dir`` (a path or a URI) into the local file ``out``."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(load_report(run_dir, top), top), encoding="utf-8")
    return out


def render_report(report: RunReport, top: int = 3) -> str:
    board, trials = report.board, report.trials
    name = str(report.run_dir).rstrip("/").rsplit("/", 1)[-1]
    counts = trials["status"].value_counts().to_dict() if not trials.empty else {}
    goal = ", ".join(f"{m} ({'lower' if o == 'min' else 'higher'} is better)" for m, o in zip(board.metrics, board.modes))
    parts = [
        f"<h1>Sweep report: {_e(name)}</h1>",
        f"<p class='meta'>{_e(report.run_dir)}<br>{len(trials)} trial(s): "
        + (", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none yet")
        + f". Ranked by {_e(goal)}; transfer gap = English accuracy minus the mean of the other languages "
        f"(per task; headline = mean of XNLI and PAWS-X). Generated {time.strftime('%Y-%m-%d %H:%M')}.</p>",
        *_stopped_note(board.configs),
        "<h2>Leaderboard</h2>",
        "<p class='note'>One row per trial; rank is its configuration's. Click a column to sort.<br>"
        + "<br>".join(_e(n) for n in leaderboard_notes(board)) + "</p>",
        _trials_table(report),
    ]
    if report.multi_seed:
        parts += ["<h2>Configurations: mean &plusmn; standard deviation over seeds</h2>", _configs_table(report)]
    parts += _figures(report, top)
    parts += ["<h2>What the top configurations change</h2>",
              f"<p class='note'>Settings in which a top configuration differs from the baseline: "
              f"{_e(report.baseline_note)}.</p>",
              _table(report.config_diff, "diff", sortable=False) if not report.config_diff.empty
              else "<p class='note'>No finished configuration yet.</p>" if report.board.configs.empty
              else "<p class='note'>The top configurations have the baseline's settings.</p>"]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>xling-ray report: {_e(name)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n<script>{_SCRIPT}</script>\n</body></html>\n")


def _stopped_note(configs: pd.DataFrame) -> list[str]:
    """A line naming the configurations early stopping stopped, each with its rung and value."""
    if configs.empty or "stopped_at" not in configs:
        return []
    stopped = configs[configs["stopped_at"].fillna("").astype(bool)]
    if stopped.empty:
        return []
    listed = "; ".join(f"#{r['rank']} {r['config_id']} at {r['stopped_at']}" for _, r in stopped.iterrows())
    return [f"<p class='meta' id='stopped'>Stopped early (sweep.scheduler asha, all seeds of a configuration at once, "
            f"on their mean at the rung): {len(stopped)} configuration(s): {_e(listed)}.</p>"]


# ---------------------------------------------------------------- tables


def _trials_table(report: RunReport) -> str:
    trials = report.trials
    if trials.empty:
        return "<p class='note'>No trials yet.</p>"
    cols = ["rank", "trial_id", "config_id", "seed", "status"] + [c for c in _TRIAL_METRICS if c in trials]
    cols += [c for c in report.searched if c in trials] + [c for c in ("epoch", "error") if c in trials]
    if "stopped_at" in trials and trials["stopped_at"].fillna("").astype(bool).any():
        cols.insert(cols.index("status") + 1, "stopped_at")  # early stopping stopped its configuration there
    show = trials[cols].copy()
    if "collapsed" in trials:  # 1.0 / 0.0 per trial; shown as the leaderboard's mark
        show.insert(cols.index("status") + 1, "collapsed", trials["collapsed"].eq(1.0))
    if not show.get("error", pd.Series(dtype=str)).fillna("").astype(bool).any():
        show = show.drop(columns="error", errors="ignore")
    if not report.multi_seed:
        show = show.drop(columns=["config_id", "seed"])
    best = trials["rank"] == trials["rank"].min()
    stopped = trials["stopped_at"].fillna("").astype(bool) if "stopped_at" in trials else pd.Series(False, index=trials.index)
    classes = [f"{s}{' best' if b else ''}{' stopped' if x else ''}" for s, b, x in zip(trials["status"], best, stopped)]
    return _table(show, "trials", row_classes=classes)


def _configs_table(report: RunReport) -> str:
    configs = report.board.configs
    cols = ["rank", "config_id", "status", "seeds"] + [c for c in ("feasible", "collapsed", "baseline", "pareto")
                                                       if c in configs]
    if "stopped_at" in configs and configs["stopped_at"].fillna("").astype(bool).any():
        cols.append("stopped_at")
    shown = configs[cols].copy()
    for c in SUMMARY_COLUMNS[:5]:
        if c in configs:
            std = configs.get(f"{c}_std", pd.Series(float("nan"), index=configs.index))
            shown[c] = [_pm(m, s) for m, s in zip(configs[c], std)]
            if c == "gap":
                for e in ("gap_se", "gap_se_total", "gap_vs_1"):
                    if e in configs:
                        shown[e] = configs[e]
    shown = pd.concat([shown, configs[[c for c in report.searched if c in configs]]], axis=1)
    return _table(shown, "configs")


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return _f2(mean) if pd.isna(std) else f"{_f2(mean)} ± {_f2(std)}"


def _table(df: pd.DataFrame, table_id: str, sortable: bool = True, row_classes: list[str] | None = None) -> str:
    head = "".join(f"<th class='{_col_class(c, df[c])}'>{_e(c)}</th>" for c in df.columns)
    rows = []
    for i, (_, row) in enumerate(df.iterrows()):
        cells = "".join(f"<td class='{_col_class(c, df[c])}' data-v='{_e(_sort_key(v))}'>{_e(_fmt(c, v))}</td>"
                        for c, v in row.items())
        cls = f" class='{_e(row_classes[i])}'" if row_classes else ""
        rows.append(f"<tr{cls}>{cells}</tr>")
    kind = "sortable" if sortable else ""
    return (f"<div class='scroll'><table id='{table_id}' class='{kind}'><thead><tr>{head}</tr></thead>"
            f"<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>")


def _col_class(col: str, values: pd.Series) -> str:
    if col == "acc_en":
        return "en"
    return "" if pd.api.types.is_numeric_dtype(values) else "text"


def _fmt(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if col.startswith(("acc_", "gap")) or col == "epoch":
            return _f2(v)
        return f"{v:.3g}"
    return str(v)


def _f2(v: float) -> str:
    """Two decimals, without the "-0.00" of a gap that is zero up to rounding."""
    text = f"{v:.2f}"
    return "0.00" if text == "-0.00" else text


def _sort_key(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return repr(float(v))
    return str(v)


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


# ---------------------------------------------------------------- figures


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _figures(report: RunReport, top: int) -> list[str]:
    trials, configs = report.trials, report.board.configs
    out = ["<h2>Accuracy per trial and language</h2>"]
    heat = heatmap_frame(trials) if not trials.empty else pd.DataFrame()
    if heat.notna().to_numpy().any():
        labels = [trial_label(r, report.multi_seed) for _, r in trials.iterrows()]
        out.append(_img(figures.to_png(figures.accuracy_heatmap(trials, list(heat.columns), labels)),
                        "accuracy heatmap"))
    else:
        out.append("<p class='note'>No trial has reported accuracies yet.</p>")

    out.append("<h2>Transfer gap against mean target-language accuracy</h2>")
    ok = configs[["gap", "acc_target"]].notna().all(axis=1) if {"gap", "acc_target"} <= set(configs) else pd.Series(dtype=bool)
    if ok.any():
        shown = configs[ok]
        error = shown["gap_se_total"] if "gap_se_total" in shown else None
        out.append("<p class='note'>One point per configuration (mean over seeds); the star marks the Pareto front "
                   "of a lower gap and a higher target accuracy: no other configuration is better at both. "
                   "Collapsed configurations (they learned nothing: a gap near 0) are never on it."
                   + (" The bars are ± the gap's standard error (gap_se_total: seed spread and the sampling error of "
                      "the evaluated examples combined); configurations whose bars overlap much are not told apart "
                      "by this evaluation." if error is not None and error.notna().any() else "") + "</p>")
        out.append(_img(figures.to_png(figures.gap_vs_target(shown, [f"#{r}" for r in shown["rank"]],
                                                             gap_front(shown).tolist(), error)),
                        "gap against target accuracy"))
    else:
        out.append("<p class='note'>No configuration with both a gap and a target accuracy yet.</p>")

    out.append("<h2>Hyperparameter importances</h2>")
    if report.importances:
        out.append(f"<p class='note'>optuna.importance: {_e(report.importance_note)}.</p>")
        out.append(_img(figures.to_png(figures.importance_bars(report.importances)), "hyperparameter importances"))
    else:
        out.append(f"<p class='note'>Not available: {_e(report.importance_note)}.</p>")

    out.append(f"<h2>Learning curves of the top {top} configurations</h2>")
    if report.curves:
        out.append("<p class='note'>Every evaluation the trials reported (Tune's results), against the training "
                   "examples seen (summed over tasks). Open circles: evaluations during an epoch on "
                   "train.eval_subset_per_language examples per language (cheaper and noisier: another sample "
                   "of fewer examples); filled: every example.</p>")
        out.append(_img(figures.to_png(figures.learning_curves(report.curves)), "learning curves"))
    else:
        out.append("<p class='note'>No reported evaluations yet.</p>")
    return out
