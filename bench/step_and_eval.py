"""Time one training step and one 17-language evaluation with the offline model.

    python bench/step_and_eval.py --data-dir ../shared/data [--batch-size 16] [--max-length 128]

Prints a table of median times over a few repeats, for the settings that matter
most for speed: full fine-tuning, frozen word embeddings, the quickstart's
setting (frozen, length 64) and a 6-layer cut of it. Numbers depend on the machine; compare ratios.
"""
from __future__ import annotations

from _common import eval_seconds, machine, median_step_seconds, parser, step_batches
from xling_ray.config import ALL_LANGUAGES, DataConfig, LossConfig, ModelConfig
from xling_ray.data import get_benchmark, load_eval_sets, load_train_set
from xling_ray.data.batches import encode
from xling_ray.models import load_model, load_tokenizer


def time_step(model_cfg: ModelConfig, data_cfg: DataConfig, batch_size: int, repeats: int) -> float:
    tok = load_tokenizer(model_cfg)
    data = encode(tok, load_train_set(data_cfg, "xnli"), model_cfg.max_length)
    model = load_model(model_cfg, num_labels=get_benchmark("xnli").num_labels)
    return median_step_seconds(model, step_batches(data, batch_size, repeats + 1, tok.pad_token_id), LossConfig())


def time_eval(model_cfg: ModelConfig, data_cfg: DataConfig, batch_size: int) -> tuple[float, int]:
    tok = load_tokenizer(model_cfg)
    sets = load_eval_sets(data_cfg)
    total = 0.0
    n = 0
    for task, per_lang in sets.items():
        model = load_model(model_cfg, num_labels=get_benchmark(task).num_labels)
        enc = {lang: encode(tok, d, model_cfg.max_length) for lang, d in per_lang.items()}
        n += sum(len(e) for e in enc.values())
        total += eval_seconds(model, enc, batch_size, tok.pad_token_id)
    return total, n


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eval-per-language", type=int, default=200, help="evaluation pairs per language (of 2,490 / 2,000)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    args = p.parse_args()
    data = DataConfig(data_dir=args.data_dir, languages=ALL_LANGUAGES, train_size=1000,
                      eval_max_per_language=args.eval_per_language)
    settings = {
        "full fine-tuning": ModelConfig(max_length=args.max_length),
        "frozen word embeddings": ModelConfig(max_length=args.max_length, freeze_word_embeddings=True),
        "quickstart (frozen, length 64)": ModelConfig(freeze_word_embeddings=True, max_length=64),
        "6 layers, frozen, length 64": ModelConfig(num_layers=6, freeze_word_embeddings=True, max_length=64),
    }
    m = machine()
    print(f"machine: {m['cpu']}, torch threads {m['torch_threads']}, torch {m['torch']}")
    print(f"| setting | train step, batch {args.batch_size} (s) | 17-language eval (s) | eval pairs | eval pairs/s |")
    print("|---|---|---|---|---|")
    for name, m in settings.items():
        step = time_step(m, data, args.batch_size, args.repeats)
        ev, n = time_eval(m, data, args.eval_batch_size)
        print(f"| {name} | {step:.2f} | {ev:.1f} | {n} | {n / ev:.0f} |", flush=True)


if __name__ == "__main__":
    main()
