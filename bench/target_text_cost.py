"""Cost of the methods that use target-language text: pools, matching, LDA, alignment, step overhead.

    python bench/target_text_cost.py --data-dir ../shared/data [--per-language 100]

With the offline model (frozen word embeddings, length 64), for the 16 target languages
(XNLI's 14 and PAWS-X's ja, ko): building the pools from the validation sets' unevaluated
part, encoding them and the English training set, nearest-English matching, the language
LDA, word alignment of the parallel pairs, and the step time of XITE and of continual
adjustment against a plain step.
"""
from __future__ import annotations

import torch

from _common import median_step_seconds, parser, step_batches, table, timed
from xling_ray.config import ALL_LANGUAGES, DataConfig, ModelConfig, RecipeConfig
from xling_ray.data import get_benchmark, load_eval_sets, load_train_set
from xling_ray.data.batches import encode
from xling_ray.methods.adjustment import align_corpus
from xling_ray.methods.adjustment.prepare import prepare_adjustment
from xling_ray.methods.target_text import parallel_pairs, target_pairs
from xling_ray.methods.xite.blocks import LanguageLDA, match_to_english
from xling_ray.methods.xite.prepare import prepare_xite
from xling_ray.models import load_model, load_tokenizer
from xling_ray.models.encode import encode_texts
from xling_ray.tune.space import off_settings


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--per-language", type=int, default=100, help="pool pairs per target language")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    recipe = RecipeConfig(
        model=ModelConfig(freeze_word_embeddings=True, max_length=64),
        data=DataConfig(data_dir=args.data_dir, languages=ALL_LANGUAGES, train_size=1000, eval_max_per_language=100,
                        eval_skip_first={"xnli": 1245, "pawsx": 1000}),
    ).with_updates({"losses.pool.max_per_language": args.per_language, "losses.xite.ratio": 0.5,
                    "losses.adjustment.regime": "continual", "losses.adjustment.batch_size": 16})
    tok = load_tokenizer(recipe.model)
    evals = load_eval_sets(recipe.data)
    rows = []
    pools, t = timed(lambda: {task: target_pairs(recipe, task, evals) for task in ("xnli", "pawsx")})
    langs = sorted({l for ps in pools.values() for l in ps})
    n_pairs = sum(len(d) for ps in pools.values() for d in ps.values())
    rows.append((f"XITE pools: {len(langs)} languages, {n_pairs} pairs (with leakage filter and guard)", t))
    model = load_model(recipe.model, get_benchmark("xnli").num_labels)
    train_data = load_train_set(recipe.data, "xnli")
    targets = pools["xnli"]
    a = [x for d in targets.values() for x in d.text_a]
    b = [x for d in targets.values() for x in d.text_b]
    tgt, t = timed(lambda: encode_texts(model, tok, a, 64, 64, texts_b=b))
    rows.append((f"encode XNLI target pairs ({len(a)})", t))
    src, t = timed(lambda: encode_texts(model, tok, list(train_data.text_a), 64, 64, texts_b=list(train_data.text_b)))
    rows.append((f"encode English training pairs ({len(train_data)})", t))
    _, t = timed(lambda: match_to_english(tgt, src, torch.tensor(train_data.labels), k=3))
    rows.append(("nearest-English matching (k=3)", t))
    langs_of = [l for l, d in targets.items() for _ in range(len(d))] + ["en"] * len(train_data)
    _, t = timed(lambda: LanguageLDA().fit(torch.cat([tgt, src]), langs_of))
    rows.append((f"language LDA fit ({len(targets) + 1} classes)", t))
    pairs, t = timed(lambda: parallel_pairs(recipe, "xnli", evals))
    rows.append((f"adjustment pairs for XNLI ({len(pairs)})", t))
    _, t = timed(lambda: align_corpus(model, tok, pairs, layer=8, max_length=64))
    rows.append((f"word alignment of {len(pairs)} pairs (mutual argmax, layer 8)", t))

    train = encode(tok, train_data, 64)
    state = {"train_token_ids": [], "special_ids": sorted(tok.all_special_ids), "tokenizer": tok,
             "xite": prepare_xite(model, tok, train_data, train, targets, recipe.losses.xite, 64, tok.pad_token_id),
             "adjustment": prepare_adjustment(model, tok, pairs[:200], recipe.losses.adjustment, 64)}
    off = off_settings()  # what switches each method off: all of it is the product's plain fine-tuning
    xite_off, adjustment_off = ({k: off[k]} for k in ("losses.xite.ratio", "losses.adjustment.regime"))
    variants = {"plain": recipe.with_updates(off).losses,
                "XITE (ratio 0.5)": recipe.with_updates(adjustment_off).losses,
                "continual adjustment (16 pairs)": recipe.with_updates(xite_off).losses}
    batches = step_batches(train, 16, args.steps + 1, tok.pad_token_id)
    step_rows = [(name, median_step_seconds(model, batches, losses, state)) for name, losses in variants.items()]
    print(f"offline model, frozen word embeddings, length 64, torch threads {torch.get_num_threads()}")
    print("\n".join(table(["preparation (once per task and trial)", "seconds"], [[name, f"{t:.1f}"] for name, t in rows])))
    plain = step_rows[0][1]
    print("\n" + "\n".join(table(["training step, batch 16", "seconds", "x plain"],
                                  [[name, f"{t:.2f}", f"{t / plain:.2f}"] for name, t in step_rows])))


if __name__ == "__main__":
    main()
