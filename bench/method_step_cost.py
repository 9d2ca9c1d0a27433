"""Step time of each regularization method against plain fine-tuning, offline model.

    python bench/method_step_cost.py --data-dir ../shared/data [--batch-size 16] [--steps 4]

For each method the fair baseline is a step with the same encoder passes and
nothing else: XLingLearn runs two (clean + perturbed), so its baseline is
cross-entropy on both views; Ding et al.'s adversarial push runs K ascent
passes and the pushed pass, so its baseline is the same push with plain CE
on the pushed view (gamma 0, no attention pull). The column "beyond passes"
is what the method's own terms cost on top: the goal is at most 10 %.

Attention dropout is off in every case: the methods' attention terms switch it
off (see ``model_config_for``), and on a CPU it is a visible share of a step,
so leaving it on in the baselines alone would flatter the methods.
"""
from __future__ import annotations


import torch

from _common import median_step_seconds, parser, save, step_batches, table
from xling_ray.config import DataConfig, LossConfig, ModelConfig, RecipeConfig
from xling_ray.data import get_benchmark, load_train_set
from xling_ray.data.batches import encode
from xling_ray.models import load_model, load_tokenizer
from xling_ray.train.loop import model_config_for

XLL_ALL = {"w_ce_perturbed": 1.0, "w_dispersion": 0.1, "w_attention": 0.1, "w_ot": 0.1, "ot_eps": 0.05}
DING_ALL = {"w_robust": 1.0, "gamma": 0.1, "w_attention_pull": 0.1, "steps": 1}
CASES = {
    # name: (losses, baseline name)
    "plain CE (1 pass)": ({}, None),
    "CE on both views (2 passes)": ({"xlinglearn": {"w_ce_perturbed": 1.0}}, None),
    "XLingLearn, all terms": ({"xlinglearn": XLL_ALL}, "CE on both views (2 passes)"),
    "push + CE on pushed view (K=1: 3 passes)": ({"ding2022": {"w_robust": 1.0, "gamma": 0.0, "steps": 1}}, None),
    "Ding 2022, all terms (K=1)": ({"ding2022": DING_ALL}, "push + CE on pushed view (K=1: 3 passes)"),
}


def time_case(model_cfg: ModelConfig, losses: LossConfig, data, tok, batch_size: int, steps: int) -> float:
    torch.manual_seed(0)
    recipe = RecipeConfig(model=model_cfg, losses=losses)
    model = load_model(model_config_for(recipe), num_labels=get_benchmark("xnli").num_labels)
    state = {"train_token_ids": sorted({i for s in data.input_ids for i in s}),
             "special_ids": sorted(tok.all_special_ids), "tokenizer": tok}
    return median_step_seconds(model, step_batches(data, batch_size, steps + 1, tok.pad_token_id), losses, state)


def measure(data_dir: str, batch_size: int = 16, steps: int = 4, layers: int | None = None,
            max_length: int = 128) -> dict:
    """Median step seconds per case, its ratio to plain CE and to the case's baseline."""
    model_cfg = ModelConfig(freeze_word_embeddings=True, max_length=max_length, num_layers=layers,
                            config_overrides={"attention_probs_dropout_prob": 0.0})
    tok = load_tokenizer(model_cfg)
    data = encode(tok, load_train_set(DataConfig(data_dir=data_dir, train_size=batch_size * (steps + 1)), "xnli"),
                  model_cfg.max_length)
    rows, seconds = [], {}
    for name, (losses, baseline) in CASES.items():
        seconds[name] = time_case(model_cfg, LossConfig.model_validate(losses), data, tok, batch_size, steps)
        rows.append({"step": name, "seconds": seconds[name], "x_plain": seconds[name] / seconds["plain CE (1 pass)"],
                     "baseline": baseline, "x_baseline": seconds[name] / seconds[baseline] if baseline else None})
        print(rows[-1], flush=True)
    return {"scale": {"batch_size": batch_size, "steps": steps, "layers": layers or 12, "max_length": max_length,
                      "torch_threads": torch.get_num_threads()}, "rows": rows}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--layers", type=int, default=None, help="keep the first k layers (default: all 12)")
    p.add_argument("--max-length", type=int, default=128)
    args = p.parse_args()
    result = measure(args.data_dir, args.batch_size, args.steps, args.layers, args.max_length)
    save("methods", result)
    print(f"offline model, frozen word embeddings, no attention dropout, layers {args.layers or 12}, max length {args.max_length}, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}, median of {args.steps} steps")
    print("\n".join(table(["step", "time (s)", "x plain CE", "beyond its encoder passes"], [
        [r["step"], f"{r['seconds']:.2f}", f"{r['x_plain']:.2f}",
         f"{100 * (r['x_baseline'] - 1):+.1f} %" if r["baseline"] else "(baseline)"] for r in result["rows"]])))


if __name__ == "__main__":
    main()
