"""Item 4: the compute seed-group ASHA saves against FIFO at the quickstart budget.

    python bench/early_stopping.py --data-dir ../shared/data [--tasks xnli] [--sampler-seeds 0 1] [--num-samples 6]
                                   [--seeds 2] [--reduction-factor 2] [--tolerance 0.5] [--storage DIR]
    python bench/early_stopping.py --data-dir ../shared/data --smoke    # the same pipeline on a tiny random model

For each sampler seed, the quickstart space (``search_spaces/quickstart.yaml``, its recipe as shipped
on ``--tasks``: 4,000 English XNLI pairs, one epoch, an evaluation every 1,500 pairs on 30 pairs per
language) runs twice through xling-ray's own sweep (:func:`xling_ray.tune.sweep.run_sweep`): FIFO, and
seed-group ASHA (``sweep.scheduler.type: asha``: rungs at 1,500 and 3,000 of the 4,000 pairs,
``--reduction-factor``), each with ``--num-samples`` configurations of ``--seeds`` seeds and
``sweep.max_concurrent_trials`` = seeds, so that the configurations run one after another in the
order Optuna suggested them. TPE's first ``n_startup_trials`` (10) configurations are random and
seeded, so the two runs of a sampler seed try the same configurations and differ only in what ASHA
stops (beyond 10 configurations TPE's suggestions follow the results, and the runs may part).

XNLI alone by default, because the comparison needs configurations that learn: with PAWS-X too
(``--tasks xnli pawsx``; ``bench/results/early_stopping_xnli_pawsx.json``, FIFO at sampler seed 0),
PAWS-X collapsed to one class at seed 1 in all 6 configurations, so no configuration trained to its
end without a collapsed seed and FIFO had no best to come within reach of.

Compute is counted in training examples (each trial's last ``examples_seen``: a stopped trial's is
its rung) and in trial seconds (the sum of Tune's ``time_this_iter_s`` over a trial's reports: its
training, evaluations and restores, not the time it waited paused). The figure, per sampler seed:
the compute each run spent, configuration by configuration in order, until a configuration that
trained to its end (not stopped, not collapsed, above the floor) had a mean gap within
``--tolerance`` points of FIFO's best (FIFO's rank 1), and ASHA's as a share of FIFO's (the goal's
measure) and of FIFO's whole run.

Resumable: each run is a sweep in ``--storage`` (``--resume``d where it was interrupted; a finished
run recorded in the results file is skipped), and the results file (``bench/results/early_stopping.json``)
and item 4 of ``bench/RESULTS.md`` (through ``bench/run.py``'s writer) are rewritten after every run.
``--smoke`` writes both under ``--storage`` instead, never into ``bench/``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # _common, and run's writer of RESULTS.md (the tests load this file by its path)
from _common import TINY, fmt, parser, save, table, verdict  # noqa: E402

QUICKSTART = BENCH.parent / "search_spaces" / "quickstart.yaml"
RESULTS = BENCH / "results" / "early_stopping.json"
SCHEDULERS = ("fifo", "asha")

#: --smoke: the tests' tiny random model (bench/_common.py TINY), PAWS-X only, 48 pairs, an evaluation every 16
#: (rungs at 16 and 32 of 48).
SMOKE = {
    "recipe.model.random_init": True, "recipe.model.max_length": 48,
    "recipe.data.tasks": ["pawsx"], "recipe.data.eval_max_per_language": 12,
    "recipe.train.batch_size": 16, "recipe.train.eval_batch_size": 32, "recipe.train.head_lr": None,
    "recipe.train.eval_every_examples": 16, "recipe.train.eval_subset_per_language": 12,
    "recipe.scaling.cpus_per_worker": 1, "recipe.scaling.mixed_precision": "no",
    "recipe.train.seed": 1,  # seeds 1 and 2: the tiny model learns a little at some learning rates (seed 0: never)
    "sweep.constraint": None,  # the tiny model never beats the majority class by 2 points: no floor
}


def space_for(args, scheduler: str, sampler_seed: int):
    """The quickstart space for one run (``--smoke``: on the tiny model)."""
    from xling_ray.tune.space import load_search_space

    overrides = {"recipe.data.data_dir": str(Path(args.data_dir).resolve()), "recipe.data.tasks": args.tasks,
                 "sweep.num_samples": args.num_samples,
                 "sweep.seeds": args.seeds, "sweep.seed": sampler_seed, "sweep.max_concurrent_trials": args.seeds,
                 "sweep.scheduler.type": scheduler, "sweep.scheduler.reduction_factor": args.reduction_factor}
    if args.smoke:
        overrides.update({f"recipe.{k}": v for k, v in TINY.items() if k.startswith(("model.", "data."))})
        overrides.update(SMOKE)
    return load_search_space(QUICKSTART, overrides)


def run_one(args, key: str, scheduler: str, sampler_seed: int) -> dict[str, Any]:
    """Run (or resume) one sweep and summarize it (:func:`summarize`)."""
    from ray import tune

    from xling_ray.leaderboard import build_leaderboard, write_leaderboard
    from xling_ray.tune.sweep import load_run_space, run_sweep

    storage = Path(args.storage).resolve()
    run_dir = storage / key
    resume = run_dir.exists() and tune.Tuner.can_restore(str(run_dir))
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)  # killed before Tune saved anything: nothing to resume
    space = load_run_space(run_dir) if resume else space_for(args, scheduler, sampler_seed)
    print(f"{key}: {'resuming' if resume else 'starting'} {run_dir}", flush=True)
    start = time.time()
    run_sweep(space, storage=str(storage), name=key, verbose=0, resume=resume)
    wall = time.time() - start
    board = build_leaderboard(run_dir, space)
    write_leaderboard(board, run_dir)
    return {**summarize(run_dir, board, space), "scheduler": scheduler, "sampler_seed": sampler_seed,
            "run_dir": str(run_dir), "wall_s_last_part": wall, "resumed": resume}


def summarize(run_dir: Path, board, space) -> dict[str, Any]:
    """Each configuration in the order it ran: its settings, status, ``stopped_at``, mean gap and
    English accuracy, and the compute its trials spent (training examples, trial seconds)."""
    from ray.tune import ExperimentAnalysis

    frames = ExperimentAnalysis(str(run_dir)).trial_dataframes
    trials = board.trials

    def first_report(row) -> float:  # the configurations ran one after another: in the order of their first report
        times = [float(frames[t]["timestamp"].min()) for t in str(row["trial_ids"]).split() if t in frames]
        return min(times) if times else float("inf")

    configs = []
    ordered = board.configs.assign(_first=[first_report(r) for _, r in board.configs.iterrows()])
    for _, row in ordered.sort_values(["_first", "config_id"]).iterrows():
        ids = str(row["trial_ids"]).split()
        examples = sum(float(frames[t]["examples_seen"].max()) for t in ids if t in frames and "examples_seen" in frames[t])
        seconds = sum(float(frames[t]["time_this_iter_s"].sum()) for t in ids if t in frames)
        configs.append({
            "config_id": str(row["config_id"]), "rank": int(row["rank"]), "status": str(row["status"]),
            "stopped_at": row.get("stopped_at") or "", "gap": _num(row.get("gap")), "acc_en": _num(row.get("acc_en")),
            "collapsed": bool(row.get("collapsed", False)), "feasible": bool(row.get("feasible", True)),
            "seeds": int(row["seeds"]), "examples": examples, "seconds": seconds,
            "settings": {k: _plain(row[k]) for k in space.search if k in row.index},
        })
    return {"configs": configs, "trials": len(trials)}


def _num(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _eligible(config: dict[str, Any]) -> bool:
    """A result to compare with FIFO's best: trained to its end, learned, above the floor."""
    return config["status"] == "TERMINATED" and not config["collapsed"] and config["feasible"] and config["gap"] is not None


def best(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's rank 1 among configurations that trained to their end, learned, above the floor."""
    return min((c for c in run["configs"] if _eligible(c)), key=lambda c: c["gap"], default=None)


def best_gap(run: dict[str, Any]) -> float | None:
    return None if (b := best(run)) is None else b["gap"]


def reach(run: dict[str, Any], target: float) -> dict[str, Any] | None:
    """Compute spent, configuration by configuration in order, until a configuration that trained to its
    end has a mean gap at or below ``target``; ``None`` when none has."""
    examples = seconds = 0.0
    for k, c in enumerate(run["configs"], 1):
        examples += c["examples"]
        seconds += c["seconds"]
        if _eligible(c) and c["gap"] <= target:
            return {"configurations": k, "examples": examples, "seconds": seconds, "config_id": c["config_id"]}
    return None


def least_share(configurations: int, scale: dict[str, Any]) -> float:
    """The least share of FIFO's compute to reach its best that seed-group ASHA could spend, whatever it
    stops: FIFO's best is its ``configurations``-th, the first configuration always trains to its end
    (ASHA has nothing to judge it against), each one between is stopped at the first rung at best, and
    the best trains to its end. Training examples, each configuration's ``seeds`` seeds."""
    full, first_rung = scale["max_t"] * scale["seeds"], scale["rungs"][0] * scale["seeds"]
    least = full if configurations == 1 else 2 * full + (configurations - 2) * first_rung
    return least / (configurations * full)


def compare(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per sampler seed with both runs: FIFO's best, each run's compute to come within the tolerance of
    it, ASHA's as a share of FIFO's and of FIFO's whole run, the least share any stopping rule could
    reach, whether ASHA's best is FIFO's (the same settings), and the whole runs' compute."""
    out = []
    for seed in result["scale"]["sampler_seeds"]:
        fifo, asha = (result["runs"].get(f"{s}-seed{seed}") for s in SCHEDULERS)
        if not fifo or not asha:
            continue
        target = None if best(fifo) is None else best_gap(fifo) + result["scale"]["tolerance"]
        f, a = (None, None) if target is None else (reach(fifo, target), reach(asha, target))
        total = {name: {"examples": sum(c["examples"] for c in run["configs"]),
                        "seconds": sum(c["seconds"] for c in run["configs"])} for name, run in (("fifo", fifo), ("asha", asha))}
        fifo_best, asha_best = best(fifo), best(asha)
        out.append({"sampler_seed": seed, "fifo_best_gap": best_gap(fifo), "asha_best_gap": best_gap(asha),
                    "same_best": None if fifo_best is None or asha_best is None
                    else fifo_best["settings"] == asha_best["settings"], "fifo": f, "asha": a, "total": total,
                    "examples_share": a["examples"] / f["examples"] if a and f else None,
                    "seconds_share": a["seconds"] / f["seconds"] if a and f else None,
                    "whole_share": a["examples"] / total["fifo"]["examples"] if a else None,
                    "least_share": least_share(f["configurations"], result["scale"]) if f else None,
                    "stopped": sum(1 for c in asha["configs"] if c["status"] == "STOPPED"),
                    "configurations": len(asha["configs"])})
    return out


# ---------------------------------------------------------------- item 4 of RESULTS.md


#: The goal: ASHA comes within the tolerance of FIFO's best at this share of FIFO's compute (training examples) or less.
GOAL_SHARE = 0.40
GOAL = (f"within 0.5 gap points of FIFO's best at <= {100 * GOAL_SHARE:.0f} % of FIFO's training examples, "
        "every sampler seed")


def item_four(result: dict[str, Any] | None) -> tuple[str, str]:
    """Item 4's summary row and section of ``bench/RESULTS.md`` from this script's results (``None``:
    not measured, and the row says how to measure it)."""
    tasks = " + ".join({"xnli": "XNLI", "pawsx": "PAWS-X"}.get(t, t) for t in (result or {}).get("scale", {}).get(
        "tasks", ["xnli"]))
    what = (f"FIFO vs seed-group ASHA at the quickstart budget ({tasks}): compute to come within 0.5 gap points of "
            "FIFO's best, over 2 sampler seeds")
    command = "python bench/early_stopping.py --data-dir ../shared/data"
    if not result or not compare(result):
        row = f"| 4 | {what} | {GOAL} | not measured yet (`{command}`) | n/a |"
        section = "\n".join([
            "## 4. Early stopping (`bench/early_stopping.py`)", "",
            f"Not measured yet. `{command}` runs the quickstart space (its recipe as shipped, on XNLI) with FIFO "
            "and with seed-group ASHA (`sweep.scheduler.type: asha`, a configuration's seeds judged together at rungs "
            "of 1,500 and 3,000 training pairs), 6 configurations of 2 seeds each, at sampler seeds 0 and 1, and "
            "counts the training examples and trial seconds each spends until a configuration that trained to its end "
            "comes within 0.5 gap points of FIFO's best (about 2.5 hours on 2 CPU cores). The earlier item 4, ASHA on the epoch clock against a 6-point grid "
            "(`bench/search_efficiency.py`), stopped no trial (most gaps were tied at 0) and is retired.", ""])
        return row, section
    s = result["scale"]
    rows = compare(result)
    tol = s["tolerance"]
    parts, ok = [], []
    for r in rows:
        if r["examples_share"] is None:
            parts.append(f"seed {r['sampler_seed']}: " + ("ASHA never came within "
                         f"{tol} of FIFO's best {r['fifo_best_gap']:.2f}" if r["fifo_best_gap"] is not None
                         else "no FIFO configuration trained to its end and learned"))
            ok.append(False if r["fifo_best_gap"] is not None else None)
        else:
            parts.append(f"seed {r['sampler_seed']}: {100 * r['examples_share']:.0f} % of FIFO's training examples "
                         f"({100 * r['seconds_share']:.0f} % of its trial seconds; {100 * r['whole_share']:.0f} % of "
                         f"FIFO's whole run's examples), {r['stopped']} of "
                         f"{r['configurations']} configurations stopped")
            ok.append(r["examples_share"] <= GOAL_SHARE)
    same = [r["same_best"] for r in rows if r["same_best"] is not None]
    if same:
        parts.append(f"ASHA's best is FIFO's at {sum(same)} of {len(same)} sampler seed(s)")
    missing = [seed for seed in s["sampler_seeds"] if seed not in [r["sampler_seed"] for r in rows]]
    said = f"partial (sampler seed(s) {missing} not run yet)" if missing else verdict(
        None if None in ok or not ok else all(ok))
    row = f"| 4 | {what} | {GOAL} | {'; '.join(parts)} | {said} |"
    if s["rungs"][0] / s["max_t"] < GOAL_SHARE:  # least_share falls towards first rung / trial length
        k = next(k for k in range(1, 10**6) if least_share(k, s) <= GOAL_SHARE)
        bound = (f"At these rungs it is {100 * GOAL_SHARE:.0f} % or less only where FIFO's best is configuration {k} "
                 "or a later one.")
    else:
        bound = f"At these rungs it is never {100 * GOAL_SHARE:.0f} % or less."
    lines = [f"## 4. Early stopping (`bench/early_stopping.py`)", "", f"    {result['command']}", "",
             f"The quickstart space, {'the tiny random model (--smoke)' if s.get('smoke') else 'its recipe as shipped'}, "
             f"{s['num_samples']} configurations x {s['seeds']} seeds, one configuration at a time; FIFO against "
             f"seed-group ASHA (reduction factor {s['reduction_factor']:g}, rungs at {s['rungs']} training examples of "
             f"{s['max_t']}); sampler seeds {s['sampler_seeds']}. Compute: training examples (each trial's last "
             "`examples_seen`) and trial seconds (Tune's `time_this_iter_s`, summed), configuration by configuration "
             f"in order until one that trained to its end came within {tol} gap points of FIFO's best. The goal is judged on "
             "ASHA's compute to reach it against FIFO's; beside it, ASHA's against FIFO's whole run (every "
             "configuration trained to its end: what a FIFO sweep costs). The least ASHA / FIFO could be: the "
             "first configuration and FIFO's best trained to their end and every one between stopped at the first "
             "rung, the share no stopping rule at these rungs can beat; it nears first rung / trial length only when "
             f"FIFO's best comes late in a long sweep. {bound}", ""]

    def cell(x):
        return "not reached" if not x else f"{x['configurations']}, {x['examples']:.0f}, {x['seconds']:.0f}"

    lines += table(["sampler seed", "FIFO's best gap", "ASHA's best gap", "ASHA's best is FIFO's",
                    "FIFO: configurations, examples, seconds to reach it",
                    "ASHA: the same", "ASHA / FIFO (examples, seconds)", "the least ASHA / FIFO could be",
                    "ASHA / FIFO's whole run (examples)",
                    "whole runs (examples: FIFO, ASHA)",
                    "ASHA stopped"], [
        [r["sampler_seed"], fmt(r["fifo_best_gap"]), fmt(r["asha_best_gap"]),
         "n/a" if r["same_best"] is None else ("yes" if r["same_best"] else "no"), cell(r["fifo"]), cell(r["asha"]),
         "n/a" if r["examples_share"] is None else f"{r['examples_share']:.2f}, {r['seconds_share']:.2f}",
         "n/a" if r["least_share"] is None else f"{r['least_share']:.2f}",
         "n/a" if r["whole_share"] is None else f"{r['whole_share']:.2f}",
         f"{r['total']['fifo']['examples']:.0f}, {r['total']['asha']['examples']:.0f}",
         f"{r['stopped']} of {r['configurations']}"] for r in rows])
    lines += [""] + table(["run", "configuration", "settings", "status", "stopped_at", "gap", "acc_en", "examples",
                           "seconds"], [
        [key, c["config_id"], ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in c["settings"].items()),
         c["status"], c["stopped_at"], fmt(c["gap"]), fmt(c["acc_en"]), f"{c['examples']:.0f}", f"{c['seconds']:.0f}"]
        for key in sorted(result["runs"]) for c in result["runs"][key]["configs"]])
    return row, "\n".join(lines + [""])


# ---------------------------------------------------------------- main


def load_results(path: Path, scale: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return {"scale": scale, "runs": {}}
    saved = json.loads(path.read_text())
    if saved.get("scale") != scale:
        raise SystemExit(f"{path} holds runs of another setting ({saved.get('scale')}); pass --results elsewhere, or "
                         "delete it to start over")
    return saved


def save_results(path: Path, result: dict[str, Any], results_md: Path) -> None:
    """The results file (with the command and the machine), and item 4 of ``results_md`` from it."""
    from run import write_report

    write_report(early=json.loads(save("early_stopping", result, path).read_text()), path=results_md)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sampler-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--num-samples", type=int, default=6, help="configurations per run")
    p.add_argument("--seeds", type=int, default=2, help="seeds per configuration")
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--tolerance", type=float, default=0.5, help="gap points from FIFO's best")
    p.add_argument("--tasks", nargs="+", default=["xnli"], choices=["xnli", "pawsx"],
                   help="the quickstart's tasks to train (default XNLI: the module docstring says why)")
    p.add_argument("--storage", help="where the sweeps' run folders go (default xling_runs/bench-early-stopping-TASKS)")
    p.add_argument("--results", help=f"results file (default {RESULTS.relative_to(BENCH.parent)}; --smoke: in --storage)")
    p.add_argument("--results-md", help="the RESULTS.md to write item 4 into (default bench/RESULTS.md; --smoke: in --storage)")
    p.add_argument("--smoke", action="store_true", help="the tiny random model: minutes, to check the pipeline")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    storage = Path(args.storage or f"xling_runs/bench-early-stopping-{'-'.join(args.tasks)}")
    if args.smoke:
        storage = storage / "smoke"
    args.storage = str(storage)
    results = Path(args.results) if args.results else (
        storage / "early_stopping.json" if args.smoke
        else RESULTS if args.tasks == ["xnli"] else RESULTS.with_name(f"early_stopping_{'_'.join(args.tasks)}.json"))
    results_md = Path(args.results_md) if args.results_md else (storage / "RESULTS-smoke.md" if args.smoke
                                                               else BENCH / "RESULTS.md")
    probe = space_for(args, "asha", args.sampler_seeds[0])
    grace, max_t = probe.asha_clock()
    scale = {"sampler_seeds": list(args.sampler_seeds), "num_samples": args.num_samples, "seeds": args.seeds,
             "reduction_factor": args.reduction_factor, "tolerance": args.tolerance, "smoke": args.smoke,
             "tasks": list(probe.recipe.data.tasks),
             "rungs": probe.sweep.scheduler.milestones(grace, max_t), "max_t": max_t}
    result = load_results(results, scale)
    for seed in args.sampler_seeds:
        for scheduler in SCHEDULERS:
            key = f"{scheduler}-seed{seed}"
            if key in result["runs"]:
                print(f"{key}: done before, skipped", flush=True)
                continue
            result["runs"][key] = run_one(args, key, scheduler, seed)
            save_results(results, result, results_md)
            print(f"{key}: {len(result['runs'][key]['configs'])} configurations; results in {results}", flush=True)
    from run import write_report  # the page again, from the file: its machine and command are the runs' own

    write_report(early=json.loads(results.read_text()), path=results_md)
    print(json.dumps(compare(result), indent=1, default=str))


if __name__ == "__main__":
    main()
