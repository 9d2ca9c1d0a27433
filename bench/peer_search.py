"""Item 3: xling-ray's sweep against ``Trainer.hyperparameter_search(backend="ray")``.

    python bench/peer_search.py --data-dir ../shared/data [--trials 3] [--train-size 200] [--per-language 30] [--layers 4]

The same search space (the quickstart's: learning rate log-uniform in [2e-5, 2e-4],
warm-up ratio uniform in [0, 0.2], batch size 8 or 16), the same budget (trials, one
epoch, English training pairs, the offline model cut to ``--layers`` layers with frozen
word embeddings, length 64), the same 15 XNLI evaluation sets (the same ids), the same
objective (XNLI's transfer gap, minimised), one trial at a time with ``--cpus`` CPUs each.
XNLI only: a Trainer fine-tunes one model, so one task keeps the two sides equal.

The peer is what a transformers user writes: a ``model_init``, tokenised datasets, a
``compute_metrics`` computing the gap over the concatenated language sets, and
``hyperparameter_search`` with Ray Tune (Optuna's TPE, seeded, as the sweep's searcher).
Wall time covers each side's whole run: Ray's start, every trial, Ray's shutdown.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from ray import cloudpickle

from _common import abba, parser, save, small_recipe, sweep_trials, trainer_dataset
from xling_ray.config import XNLI_LANGUAGES

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial processes cannot import bench/


def run_ours(recipe, trials: int) -> dict:
    wall, results = sweep_trials({
        "recipe": recipe.model_dump(),
        "search": {"train.lr": {"loguniform": [2e-5, 2e-4]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]},
                   "train.batch_size": {"choice": [8, 16]}},
        "sweep": {"num_samples": trials, "seeds": 1, "seed": 0, "max_concurrent_trials": 1},
    })
    best = min(results, key=lambda r: r["gap"])
    return {"wall_s": wall, "best_gap": best["gap"], "best_acc_en": best["acc_en"], "best_config": best["config"],
            "gaps": [r["gap"] for r in results]}


def run_peer(recipe, trials: int, cpus: int) -> dict:
    import ray
    from datasets import concatenate_datasets
    from optuna.samplers import TPESampler
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from xling_ray.data import load_eval_sets, load_train_set
    from xling_ray.metrics import transfer_gap
    from xling_ray.models import load_model, load_tokenizer

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        tok = load_tokenizer(recipe.model)
        train = trainer_dataset(tok, load_train_set(recipe.data, "xnli"), recipe.model.max_length)
        evals = load_eval_sets(recipe.data)["xnli"]
        languages = np.array([lang for lang, d in evals.items() for _ in range(len(d))])
        eval_ds = concatenate_datasets([trainer_dataset(tok, d, recipe.model.max_length) for d in evals.values()])
        model_cfg = recipe.model

        def model_init(trial=None):
            return load_model(model_cfg, num_labels=3)

        def compute_metrics(p):
            correct = p.predictions.argmax(-1) == p.label_ids
            acc = {lang: 100.0 * correct[languages == lang].mean() for lang in evals}
            return {"acc_en": acc["en"], "gap": transfer_gap(acc)}

        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(output_dir=out, num_train_epochs=1, per_device_eval_batch_size=64,
                                     weight_decay=0.01, max_grad_norm=1.0, eval_strategy="no", save_strategy="no",
                                     report_to="none", use_cpu=True, disable_tqdm=True, seed=0, log_level="error",
                                     optim="adamw_torch")
            trainer = Trainer(args=args, model_init=model_init, train_dataset=train, eval_dataset=eval_ds,
                              data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
            best = trainer.hyperparameter_search(
                hp_space=lambda _: {"learning_rate": tune.loguniform(2e-5, 2e-4),
                                    "warmup_steps": tune.uniform(0.0, 0.2),
                                    "per_device_train_batch_size": tune.choice([8, 16])},
                compute_objective=lambda m: m["eval_gap"], n_trials=trials, direction="minimize", backend="ray",
                resources_per_trial={"cpu": cpus}, max_concurrent_trials=1,
                search_alg=OptunaSearch(metric="objective", mode="min", sampler=TPESampler(seed=0)),
                storage_path=out, verbose=0,
            )
            gaps = [t.last_result.get("objective") for t in best.run_summary.trials]
            acc_en = next(t.last_result.get("eval_acc_en") for t in best.run_summary.trials if t.trial_id == best.run_id)
    finally:
        ray.shutdown()
    return {"wall_s": time.perf_counter() - t0, "best_gap": best.objective, "best_acc_en": acc_en,
            "best_config": best.hyperparameters, "gaps": gaps}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--train-size", type=int, default=200)
    p.add_argument("--per-language", type=int, default=30)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2, help="searches per side, in ABBA order")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    recipe = small_recipe(args, data={"tasks": ["xnli"], "languages": list(XNLI_LANGUAGES)})
    result = {"scale": {k: getattr(args, k) for k in ("trials", "train_size", "per_language", "layers", "cpus", "repeats")}}
    sides = {"xling_ray": lambda: run_ours(recipe, args.trials), "peer": lambda: run_peer(recipe, args.trials, args.cpus)}
    abba(sides, args.repeats, result)
    for side in sides:
        runs = result[f"{side}_runs"]
        result[side] = {**min(runs, key=lambda x: x["best_gap"]), "wall_s": sum(x["wall_s"] for x in runs) / len(runs)}
    save("peer", result)


if __name__ == "__main__":
    main()
