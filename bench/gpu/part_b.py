"""Part b: learning at the full budget. Plain fine-tuning (the product's plain baseline,
``SearchSpace.baseline_point``) and each method's default configuration (the first
``points_to_evaluate`` of ``search_spaces/*.yaml``), every space at ``--budget full``
(``search_spaces/budgets/full.yaml``: XTREME's protocol), 3 seeds each, several runs at once on
the GPU, evaluated on the held-out validation examples (``data.heldout``: bench/study's protocol,
pools left out)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from common import REPO, TINY, Context, Workers, load_space, measured, write_json

#: Relative step cost of each method's default configuration against plain fine-tuning (bench/README.md,
#: CPU): only used to decide whether a run can still finish inside part b's budget before one has.
STEP_COST = {"plain": 1.0, "xlinglearn": 2.0, "ding2022": 2.7, "xite": 1.8, "adjustment": 1.2, "continual": 2.3}


def study_module():
    """bench/study/run.py as a module: its methods and its evaluation protocol (``PROTOCOL``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("xling_study", REPO / "bench" / "study" / "run.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    return study


def full_train(ctx: Context) -> bool:
    return bool((ctx.manifest or {}).get("train_full"))


def b_runs(ctx: Context) -> list[tuple[str, str, Any]]:
    """(name, method, recipe) of part b in priority order: plain's seeds, then each method's.
    Every space at ``--budget full``; plain is the product's plain baseline of xlinglearn.yaml
    (``SearchSpace.baseline_point``: every regularizer off); a method, its space's first point."""
    study = study_module()
    prof = ctx.profile
    base = load_space("xlinglearn", "full")
    configs = {"plain": (base.recipe, base.baseline_point)}
    for method in study.METHODS:
        space = load_space(method, "full")
        configs[method] = (space.recipe, dict(space.sweep.points_to_evaluate[0]))
    # Without the whole training sets in the bundle (prepare.py --full-train), every run trains on what it holds.
    protocol = {**study.PROTOCOL, "data.eval_part": "heldout", "data.train_full": full_train(ctx),
                "train.eval_batch_size": prof.b_eval_batch, **({"train.epochs": 1} if ctx.dry else {})}
    runs = []
    for method, (recipe, point) in configs.items():
        for i in range(prof.b_seeds):
            r = recipe.with_updates(point).with_updates({**protocol, "train.seed": recipe.train.seed + i})
            r = r.with_updates(ctx.recipe_updates())
            if ctx.dry:
                r = r.with_updates({k: v for k, v in TINY.items() if k.startswith("losses.") and (
                    k != "losses.pool.max_per_language" or r.losses.pool.max_per_language is not None)})
            runs.append((f"{method}-s{i}", method, r))
    return runs


def b_processes(ctx: Context) -> tuple[int, str]:
    """How many runs part b puts on the GPU at once: ``--b-procs``, else from part a's packing
    (this run's): 8 when 4 packed trials ran at least 2.5 times the sequential trials per hour,
    4 at 1.5 times, else 2; without part a, the profile's default."""
    prof = ctx.profile
    if ctx.args.b_procs:
        return ctx.args.b_procs, "--b-procs"
    path = ctx.out / "part_a.json"
    try:
        a = json.loads(path.read_text())
        speedup = a["packed"]["trials_per_hour"] / a["sequential"]["trials_per_hour"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return prof.b_procs, "default (no packing figure from part a)"
    if prof.dry:
        return prof.b_procs, f"dry run (part a's packing: {speedup:.2f}x)"
    n = 8 if speedup >= 2.5 else 4 if speedup >= 1.5 else 2
    return n, f"part a: {prof.a_procs} packed trials ran {speedup:.2f}x the sequential trials per hour"


def part_b(ctx: Context, budget: float) -> dict[str, Any]:
    prof = ctx.profile
    runs = b_runs(ctx)
    if ctx.args.b_runs:
        wanted = set(ctx.args.b_runs.split(","))
        unknown = wanted - {n for n, _, _ in runs}
        if unknown:
            raise SystemExit(f"--b-runs: unknown run(s) {sorted(unknown)}; known: {[n for n, _, _ in runs]}")
        runs = [r for r in runs if r[0] in wanted]
    procs, why = b_processes(ctx)
    start = time.time()
    deadline = start + budget
    result: dict[str, Any] = {
        "part": "b", "status": "running", "budget_s": round(budget), "processes": procs, "processes_why": why,
        "protocol": {"budget": "search_spaces/budgets/full.yaml (XTREME's protocol)",
                     "train": ("48 pairs per task, 1 epoch (dry run)" if ctx.dry else
                               "the whole English training sets (MultiNLI 392,702, PAWS-X 49,401)" if full_train(ctx)
                               else "the offline copy's English training pairs (MultiNLI 15,001, PAWS 8,000), NOT the "
                                    "whole sets: the bundle was prepared without --full-train"),
                     "recipe": {k: v for k, v in runs[0][2].train.model_dump().items()
                                if k in ("lr", "batch_size", "epochs", "warmup_ratio", "weight_decay")} if runs else {},
                     "max_length": runs[0][2].model.max_length if runs else None, "seeds": prof.b_seeds,
                     "evaluation": "data.eval_part heldout: the validation examples bench/study sets aside "
                                   "(data.heldout), after the pools' first examples (data.eval_skip_first)",
                     "plain": "SearchSpace.baseline_point (xling_ray.tune.space.plain_point) of search_spaces/xlinglearn.yaml",
                     "methods": "each search space's recipe at the full budget with its first points_to_evaluate"},
        "runs": [], "not_run": [],
    }
    out = ctx.out / "part_b.json"
    write_json(out, result)
    ctx.log(f"part b: {len(runs)} runs, {procs} at a time ({why}), {budget:.0f} s")
    pending = list(runs)
    workers = Workers(ctx)
    durations: dict[str, list[float]] = {}
    threads = max(1, (os.cpu_count() or 2) // procs)

    def estimate(method: str) -> float:
        if durations.get(method):
            return sum(durations[method]) / len(durations[method])
        if durations.get("plain"):
            return STEP_COST[method] * sum(durations["plain"]) / len(durations["plain"])
        return 0.0

    def collect(finished) -> None:
        for proc, name, (method, rec_path, launched) in finished:
            row = json.loads(Path(rec_path).read_text()) if Path(rec_path).is_file() else {"name": name, "method": method}
            if row.get("status") not in ("ok", "error"):  # killed at the budget, or crashed: what it reported so far
                row.update(status="killed" if proc.returncode in (-9, -15) else "crashed", exit_code=proc.returncode,
                           seconds=round(time.time() - launched, 1))
            if row.get("status") == "ok":
                durations.setdefault(method, []).append(row["seconds"])
            result["runs"].append(row)
            ctx.log(f"part b: {row.get('name', name)} {row.get('status')} in {row.get('seconds')} s"
                    + (f", gap {row['metrics'].get('gap'):.2f}, acc_en {row['metrics'].get('acc_en'):.1f}"
                       if row.get("status") == "ok" else ""))
        write_json(out, result)

    while pending or workers.running:
        collect(workers.reap())
        now = time.time()
        if now > deadline:
            collect(workers.kill_all("part b's budget is spent"))
            break
        while pending and len(workers.running) < procs:
            fitting = [r for r in pending if now + estimate(r[1]) < deadline]
            if not fitting:
                break
            name, method, recipe = fitting[0]
            pending.remove(fitting[0])
            rec = ctx.work / "b" / f"{name}.json"
            rec.parent.mkdir(parents=True, exist_ok=True)
            rec.unlink(missing_ok=True)
            workers.start("run", {"name": name, "method": method, "recipe": recipe.model_dump(mode="json"),
                                  "device": prof.device, "threads": threads, "out": str(rec)},
                          f"b-{name}", tag=(method, rec, time.time()))
        if pending and not workers.running:
            break  # nothing left fits in the budget
        time.sleep(0.5)
    result["not_run"] = [n for n, _, _ in pending]
    result["status"] = "done" if not pending and all(r.get("status") == "ok" for r in result["runs"]) else "partial"
    result["wall_s"] = round(time.time() - start, 1)
    write_json(out, result)
    return result


def worker_run(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    from xling_ray.config import RecipeConfig
    from xling_ray.train import LocalSession, run_recipe

    recipe = RecipeConfig.model_validate(spec["recipe"])
    row: dict[str, Any] = {"name": spec["name"], "method": spec["method"], "seed": recipe.train.seed,
                           "settings": {"train.lr": recipe.train.lr, "train.batch_size": recipe.train.batch_size,
                                        "losses": recipe.losses.model_dump(mode="json")},
                           "recipe": spec["recipe"]}
    t0 = time.time()

    class Reporting(LocalSession):
        """Writes each evaluation as it comes, so that a run killed at the budget keeps its epoch-1 figures."""

        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            partial = dict(row, status="running", seconds=round(time.time() - t0, 1),
                           metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            Path(spec["out"]).write_text(json.dumps(partial, default=str))

    with measured(row, device):
        metrics = run_recipe(recipe, Reporting(device=spec["device"]))
        row.update(status="ok", metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    Path(spec["out"]).write_text(json.dumps(row, default=str))
