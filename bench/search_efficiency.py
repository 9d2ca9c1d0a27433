"""Item 4: ASHA + Optuna against the full grid of a small space.

    python bench/search_efficiency.py --data-dir ../shared/data [--epochs 3] [--train-size 128] [--per-language 20] [--layers 3]

The space: learning rate in ``--lrs`` x batch size in {8, 16}, both tasks, the offline
model cut to ``--layers`` layers (frozen word embeddings, length 64), ``--epochs``
epochs. The grid trains every point for every epoch (xling-ray's sweep with the points
as ``points_to_evaluate``). ASHA + Optuna (TPE, seeded) tries as many configurations
with ASHA stopping poor trials at epochs 1, rf, rf^2, ... Compute is counted in
epochs trained (one epoch = one pass over both tasks' training sets) and in trial
seconds. The figure: the compute ASHA + Optuna spent, trial by trial in the order
they ran, until a trial's last result came within 0.5 gap points of the grid's best.
"""
from __future__ import annotations

import argparse
import itertools
import os
import tempfile

from _common import save
from xling_ray.config import ModelConfig, RecipeConfig


def run(space_dict: dict) -> list[dict]:
    from ray.tune import ExperimentAnalysis

    from xling_ray.tune.space import SearchSpace
    from xling_ray.tune.sweep import run_sweep

    with tempfile.TemporaryDirectory() as storage:
        run_dir = run_sweep(SearchSpace.model_validate(space_dict), storage=storage, name="search", verbose=0)
        trials = sorted(ExperimentAnalysis(str(run_dir)).trials, key=lambda t: t.trial_id)
        rows = []
        for t in trials:
            r = t.last_result or {}
            rows.append({"config": {k: v for k, v in t.config.items() if not k.startswith("__")},
                         "epochs": r.get("epoch"), "seconds": r.get("time_total_s"), "gap": r.get("gap"),
                         "acc_en": r.get("acc_en")})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=128)
    p.add_argument("--per-language", type=int, default=20)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-5, 1e-4, 3e-4])
    p.add_argument("--reduction-factor", type=float, default=3)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=0.5, help="gap points from the grid's best")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    recipe = RecipeConfig.model_validate({
        "model": ModelConfig(freeze_word_embeddings=True, max_length=64, num_layers=args.layers).model_dump(),
        "data": {"data_dir": os.path.abspath(args.data_dir), "train_size": args.train_size,
                 "eval_max_per_language": args.per_language},
        "train": {"epochs": args.epochs, "eval_batch_size": 64, "warmup_ratio": 0.1},
        "scaling": {"num_workers": 1, "cpus_per_worker": args.cpus, "use_gpu": False},
    }).model_dump()
    search = {"train.lr": {"choice": list(args.lrs)}, "train.batch_size": {"choice": [8, 16]}}
    grid = [{"train.lr": lr, "train.batch_size": b} for lr, b in itertools.product(args.lrs, [8, 16])]
    common = {"seeds": 1, "seed": 0, "max_concurrent_trials": 1}
    grid_rows = run({"recipe": recipe, "search": search,
                     "sweep": {**common, "num_samples": len(grid), "sampler": "random", "points_to_evaluate": grid}})
    print("grid", grid_rows, flush=True)
    asha_rows = run({"recipe": recipe, "search": search,
                     "sweep": {**common, "num_samples": len(grid), "sampler": "tpe", "n_startup_trials": 3,
                               "scheduler": {"type": "asha", "grace_period": 1,
                                             "reduction_factor": args.reduction_factor}}})
    print("asha", asha_rows, flush=True)
    grid_best = min(r["gap"] for r in grid_rows)
    grid_epochs = sum(r["epochs"] for r in grid_rows)
    grid_seconds = sum(r["seconds"] for r in grid_rows)
    spent_e = spent_s = 0.0
    reached = None
    for k, r in enumerate(asha_rows):
        spent_e += r["epochs"]
        spent_s += r["seconds"]
        if reached is None and r["gap"] <= grid_best + args.tolerance:
            reached = {"trial": k + 1, "epochs": spent_e, "seconds": spent_s}
    result = {
        "scale": {k: getattr(args, k) for k in ("epochs", "train_size", "per_language", "layers", "lrs",
                                                "reduction_factor", "cpus", "tolerance")},
        "grid": grid_rows, "asha": asha_rows, "grid_best_gap": grid_best,
        "grid_epochs": grid_epochs, "grid_seconds": grid_seconds,
        "asha_epochs": spent_e, "asha_seconds": spent_s, "asha_best_gap": min(r["gap"] for r in asha_rows),
        "reached": reached,
        "reached_share_of_grid_epochs": reached["epochs"] / grid_epochs if reached else None,
        "reached_share_of_grid_seconds": reached["seconds"] / grid_seconds if reached else None,
    }
    save("search", result)
    print({k: v for k, v in result.items() if k not in ("grid", "asha")})


if __name__ == "__main__":
    main()
