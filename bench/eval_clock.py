"""What evaluating during the epoch adds to the quickstart: one evaluation of its 22 language sets
against one on its mid-epoch subset, with its model and settings.

    python bench/eval_clock.py --data-dir ../shared/data [--space search_spaces/quickstart.yaml] [--repeats 2]

The quickstart evaluates every ``train.eval_every_examples`` training examples (summed over tasks) on
``train.eval_subset_per_language`` examples per language, and on all of them at the epoch's end.
This times both evaluations (the offline model, the space's ``max_length``, batch size, threads and
bf16 setting; the model untrained, which does not change the cost) and counts the evaluations an
epoch makes, to give the seconds the clock adds to a trial and to the sweep. Writes
``bench/results/eval_clock.json``.
"""
from __future__ import annotations

import contextlib

import torch

from _common import eval_seconds, parser, save
from xling_ray.data import get_benchmark, load_eval_sets
from xling_ray.data.batches import encode, epoch_batches, with_prefix
from xling_ray.models import load_model, load_tokenizer
from xling_ray.train.loop import eval_subset
from xling_ray.tune import load_search_space


def mid_epoch_evaluations(examples_per_round: list[int], every: int) -> int:
    """Evaluations during one epoch (the end of the epoch not counted): rounds whose examples pass a multiple of ``every``."""
    seen, count = 0, 0
    for r, n in enumerate(examples_per_round):
        before, seen = seen, seen + n
        if seen // every > before // every and r < len(examples_per_round) - 1:
            count += 1
    return count


def examples_per_round(recipe) -> list[int]:
    """Training examples of each round of an epoch, summed over tasks, from the loop's plan of each task
    (:func:`~xling_ray.data.batches.epoch_batches`): a batch of each task a round until its pairs are done."""
    plans = [epoch_batches(recipe.data.train_size_of(t), recipe.train.batch_size, 0, 0) for t in recipe.data.tasks]
    return [sum(len(plan[r]) for plan in plans if r < len(plan)) for r in range(max(map(len, plans)))]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--space", default="search_spaces/quickstart.yaml")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    space = load_search_space(args.space, {"recipe.data.data_dir": args.data_dir})
    recipe = space.recipe
    torch.set_num_threads(int(recipe.scaling.cpus_per_worker))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if recipe.scaling.mixed_precision == "bf16" else contextlib.nullcontext()
    tok = load_tokenizer(recipe.model)
    sets = load_eval_sets(recipe.data)
    full_s = subset_s = 0.0
    pairs_full = pairs_subset = 0
    for task, per_lang in sets.items():
        model = load_model(recipe.model, num_labels=get_benchmark(task).num_labels)
        enc = {lang: encode(tok, with_prefix(d, recipe.model.text_prefix), recipe.model.max_length) for lang, d in per_lang.items()}
        quick = eval_subset(enc, recipe.train.eval_subset_per_language, recipe.data.seed) or enc
        pairs_full += sum(len(e) for e in enc.values())
        pairs_subset += sum(len(e) for e in quick.values())
        best = [min(eval_seconds(model, s, recipe.train.eval_batch_size, tok.pad_token_id, autocast=autocast)
                    for _ in range(args.repeats)) for s in (enc, quick)]  # the full sets, then the subset
        full_s, subset_s = full_s + best[0], subset_s + best[1]
    per_round = examples_per_round(recipe)
    every = recipe.train.eval_every_examples
    mids = mid_epoch_evaluations(per_round, every) * recipe.train.epochs if every else 0
    trials = space.sweep.num_samples * space.sweep.seeds
    result = {
        "space": args.space, "eval_every_examples": every,
        "eval_subset_per_language": recipe.train.eval_subset_per_language,
        "examples_per_epoch": sum(per_round), "mid_epoch_evaluations_per_trial": mids,
        "full_eval_s": round(full_s, 2), "full_eval_pairs": pairs_full,
        "subset_eval_s": round(subset_s, 2), "subset_eval_pairs": pairs_subset,
        "added_per_trial_s": round(mids * subset_s, 1), "trials": trials,
        "added_per_sweep_min": round(mids * subset_s * trials / 60, 2),
    }
    for k, v in result.items():
        print(f"{k}: {v}")
    print(f"written: {save('eval_clock', result)}")


if __name__ == "__main__":
    main()
