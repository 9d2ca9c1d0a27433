"""Item 1: the 17-language evaluation against Hugging Face ``Trainer.evaluate``.

    python bench/eval_speed.py --data-dir ../shared/data [--per-language 100] [--max-length 128]

Same model (offline multilingual-e5-small, classifier head initialised with seed 0),
same examples (``--per-language`` pairs of each of XNLI's 15 and PAWS-X's 7 sets,
the same ids in every language), same batch size and threads. Three evaluators:

* **ours**: :func:`xling_ray.train.evaluate.evaluate`'s path (length-sorted batches
  padded to their own longest pair, ``torch.inference_mode``), sets read from the
  tokenisation cache;
* **Trainer, padded**: ``Trainer.evaluate`` over sets padded to ``max_length`` (a plain
  padded loop, ``default_data_collator``);
* **Trainer, dynamic padding**: ``Trainer.evaluate`` with its default
  ``DataCollatorWithPadding`` (pads each batch of the unsorted set to its longest pair).

It times the forward passes, and separately the per-trial tokenisation each needs
(ours: a cache read; the Trainer: tokenising the sets again), and compares every
prediction with the padded Trainer's.
"""
from __future__ import annotations

import tempfile

import numpy as np
import torch

from _common import parser, save, timed, trainer_dataset
from xling_ray.config import ALL_LANGUAGES, DataConfig, ModelConfig
from xling_ray.data import get_benchmark, load_eval_sets
from xling_ray.models import load_model, load_tokenizer
from xling_ray.data.batches import encode
from xling_ray.train.cache import encode_cached
from xling_ray.train.evaluate import predict


class TrainerEvaluator:
    """``Trainer.evaluate`` over sets tokenised as a Trainer user does in every trial:
    padded to ``max_length`` (``padded``) or left to ``DataCollatorWithPadding``."""

    def __init__(self, models, tok, sets, max_length: int, batch_size: int, padded: bool, out: str):
        from transformers import (DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments,
                                  default_data_collator)

        self.datasets, self.tokenise_s = timed(lambda: {
            key: trainer_dataset(tok, d, max_length, "max_length" if padded else False) for key, d in sets.items()})
        self._seen: dict[str, np.ndarray] = {}
        args = TrainingArguments(output_dir=out, per_device_eval_batch_size=batch_size, report_to="none", use_cpu=True,
                                 dataloader_num_workers=0, disable_tqdm=True, log_level="error")
        collator = default_data_collator if padded else DataCollatorWithPadding(tok)
        self.trainers = {task: Trainer(model=m, args=args, compute_metrics=self._metrics, data_collator=collator)
                         for task, m in models.items()}
        for trainer in self.trainers.values():
            trainer.remove_callback(PrinterCallback)  # one metrics line per set otherwise

    def _metrics(self, p):
        self._seen["pred"] = p.predictions.argmax(-1)
        return {"accuracy": float((self._seen["pred"] == p.label_ids).mean() * 100)}

    def __call__(self, key) -> list[int]:
        self.trainers[key[0]].evaluate(eval_dataset=self.datasets[key])
        return self._seen["pred"].tolist()


def tokenisation(tok, sets: list, max_length: int) -> tuple[list, dict]:
    """The sets encoded, and the seconds it takes: filling the cache (the sweep's first trial),
    reading it (every later trial), and tokenising without it."""
    with tempfile.TemporaryDirectory() as cache:
        _, cold = timed(lambda: [encode_cached(tok, d, max_length, cache) for d in sets])
        encoded, warm = timed(lambda: [encode_cached(tok, d, max_length, cache) for d in sets])
    same, plain = timed(lambda: [encode(tok, d, max_length) for d in sets] == encoded)
    assert same
    return encoded, {"cold_cache_s": cold, "warm_cache_s": warm, "no_cache_s": plain}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--per-language", type=int, default=100, help="pairs per language set (of 2,490 / 2,000)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=None, help="keep the first k layers (default: all 12)")
    p.add_argument("--tag", default="", help="save as results/eval_<tag>.json (several scales side by side)")
    p.add_argument("--no-full-tokenisation", dest="full_tokenisation", action="store_false",
                   help="skip timing the tokenisation of the full validation sets")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model_cfg = ModelConfig(max_length=args.max_length, num_layers=args.layers)
    tok = load_tokenizer(model_cfg)
    evals = load_eval_sets(DataConfig(data_dir=args.data_dir, languages=ALL_LANGUAGES,
                                      eval_max_per_language=args.per_language))
    sets = {(task, lang): d for task, per in evals.items() for lang, d in per.items()}
    n_pairs = sum(len(d) for d in sets.values())
    model = {}
    for task in evals:
        torch.manual_seed(0)
        model[task] = load_model(model_cfg, get_benchmark(task).num_labels).eval()

    # Per-trial tokenisation: ours reads the cache (filled here once, as the sweep's first trial does).
    encoded, tokenised = tokenisation(tok, list(sets.values()), args.max_length)
    encoded = dict(zip(sets, encoded))

    with tempfile.TemporaryDirectory() as out:
        evaluators = {
            "ours": lambda key: predict(model[key[0]], encoded[key], args.batch_size, tok.pad_token_id,
                                        torch.device("cpu")),
            "Trainer, padded": TrainerEvaluator(model, tok, sets, args.max_length, args.batch_size, True, out),
            "Trainer, dynamic padding": TrainerEvaluator(model, tok, sets, args.max_length, args.batch_size, False, out),
        }
        tokenise = {"ours": tokenised["warm_cache_s"], **{n: e.tokenise_s for n, e in evaluators.items() if n != "ours"}}
        seconds = dict.fromkeys(evaluators, 0.0)
        preds: dict[str, dict] = {n: {} for n in evaluators}
        for task in evals:  # untimed warm-up: allocators, the Trainer's first-call set-up
            for run in evaluators.values():
                run((task, "en"))
        # Interleaved set by set, so that the load of this shared machine weighs on all alike.
        for key in sets:
            for name, run in evaluators.items():
                preds[name][key], t = timed(lambda: run(key))
                seconds[name] += t
    runs = {n: (tokenise[n], seconds[n], preds[n]) for n in evaluators}
    full = None
    if args.full_tokenisation:  # every validation pair of the 22 sets
        every = [d for per in load_eval_sets(DataConfig(data_dir=args.data_dir, languages=ALL_LANGUAGES)).values()
                 for d in per.values()]
        full = {"pairs": sum(len(d) for d in every), **tokenisation(tok, every, args.max_length)[1]}

    def accuracy(preds) -> dict:
        return {f"{t}_{l}": 100.0 * float(np.mean(np.equal(preds[(t, l)], sets[(t, l)].labels))) for t, l in sets}

    reference = runs["Trainer, padded"][2]
    ref_acc = accuracy(reference)
    rows = []
    for name, (tok_s, eval_s, preds) in runs.items():
        acc = accuracy(preds)
        differ = sum(int(a != b) for k in sets for a, b in zip(preds[k], reference[k]))
        rows.append({"evaluator": name, "tokenise_s": tok_s, "eval_s": eval_s, "pairs": n_pairs,
                     "pairs_per_s": n_pairs / eval_s, "end_to_end_s": tok_s + eval_s,
                     "predictions_differing_from_padded_trainer": differ,
                     "max_abs_accuracy_diff_vs_padded_trainer": max(abs(acc[k] - ref_acc[k]) for k in acc),
                     "mean_accuracy": float(np.mean(list(acc.values()))),
                     "predicted_classes": sorted({int(x) for v in preds.values() for x in v})})
    padded = rows[1]
    for r in rows:
        r["throughput_x_padded_trainer"] = r["pairs_per_s"] / padded["pairs_per_s"]
        r["end_to_end_x_padded_trainer"] = padded["end_to_end_s"] / r["end_to_end_s"]
    lengths = [len(s) for e in encoded.values() for s in e.input_ids]
    result = {"scale": {"layers": args.layers or 12, "per_language": args.per_language, "sets": len(sets), "pairs": n_pairs,
                        "max_length": args.max_length, "batch_size": args.batch_size, "threads": args.threads,
                        "mean_tokens": float(np.mean(lengths))},
              "tokenisation": tokenised,
              "full_tokenisation": full,
              "rows": rows}
    save(f"eval_{args.tag}" if args.tag else "eval", result)
    for r in rows:
        print(r)
    print(result["tokenisation"])


if __name__ == "__main__":
    main()
