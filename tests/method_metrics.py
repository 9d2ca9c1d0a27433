"""The metrics ``run_recipe`` reports for plain fine-tuning and for each method, on the tiny model.

``tests/test_method_metrics.py`` recomputes them and compares with the values recorded in
``tests/data/method_metrics_before.json`` (last recorded when the methods' draws moved to a
generator per task and rank, ``state["generator"]``, which changed what they draw). To record
them again (only when a change of behaviour is meant):

    OMP_NUM_THREADS=1 .venv/bin/python tests/method_metrics.py --record [CASE ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "data" / "method_metrics_before.json"

#: Reported every run but not a result of the recipe.
TIMES = ("time_total_s", "setup_s", "time_eval_s")

#: Six epochs of batches of 8 at 3e-3: enough for the tiny random model to learn the 48 examples,
#: so that its evaluation predicts more than one class (``collapsed`` 0) and the comparison covers
#: the evaluation's per-language accuracies, not only the losses of a constant predictor.
BASE = {
    "model.freeze_word_embeddings": False,  # the tiny model learns these 48 examples only with them trained
    "data.tasks": ["xnli"], "data.languages": ["en", "de", "zh"], "data.train_size": 48,
    "data.eval_max_per_language": 16, "data.eval_skip_first": {"xnli": 1245, "pawsx": 1000},
    "train.epochs": 6, "train.batch_size": 8, "train.lr": 3e-3, "train.seed": 3,
    "losses.pool.max_per_language": 8,
    "losses.adjustment.align_layer": 1, "losses.adjustment.batch_size": 4, "losses.adjustment.steps": 3,
}

CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "xll_ce": {"losses.xlinglearn.w_ce_perturbed": 1.0},
    "xll_dispersion": {"losses.xlinglearn.w_dispersion": 0.1},
    "xll_attention": {"losses.xlinglearn.w_attention": 0.1},
    "xll_ot": {"losses.xlinglearn.w_ot": 0.1, "losses.xlinglearn.ot_eta": 0.5},
    "ding2022_adversarial": {"losses.ding2022.w_robust": 1.0, "losses.ding2022.w_attention_pull": 0.1},
    "ding2022_centroid": {"losses.ding2022.push": "centroid", "losses.ding2022.w_robust": 1.0},
    "xite": {"losses.xite.ratio": 0.5},
    "xite_layer1_beta": {"losses.xite.ratio": 0.5, "losses.xite.layer": 1, "losses.xite.alpha": 0.4,
                         "losses.xite.lda": False},
    "adjustment_before": {"losses.adjustment.regime": "before"},
    # L_align and L_reg are ~40 and ~8 on the tiny model: at the reference weights they swamp CE and it collapses.
    "adjustment_continual": {"losses.adjustment.regime": "continual", "losses.adjustment.w_align": 0.001,
                             "losses.adjustment.w_reg": 0.01},
}


def tiny_recipe(data_dir: str):
    sys.path.insert(0, str(HERE))
    from conftest import TINY_MODEL

    from xling_ray.config import DataConfig, RecipeConfig, TrainConfig

    return RecipeConfig(model=TINY_MODEL, data=DataConfig(data_dir=data_dir),
                        train=TrainConfig(batch_size=16, eval_batch_size=32, warmup_ratio=0.0))


def case_metrics(base, name: str) -> dict[str, float]:
    """The reported metrics of one case, times left out."""
    import torch

    from xling_ray.train import LocalSession, run_recipe

    torch.set_num_threads(1)
    last = run_recipe(base.with_updates({**BASE, **CASES[name]}), LocalSession())
    return {k: float(v) for k, v in sorted(last.items()) if k not in TIMES}


def main() -> None:
    from conftest import DATA_DIR

    base = tiny_recipe(str(DATA_DIR))
    # ``--record NAME ...``: record those cases again, keep the others as recorded.
    names = [a for a in sys.argv[1:] if a in CASES] or list(CASES)
    out = {name: case_metrics(base, name) for name in names}
    if "--record" in sys.argv:
        RECORDED.parent.mkdir(exist_ok=True)
        kept = json.loads(RECORDED.read_text()) if RECORDED.is_file() and len(names) < len(CASES) else {}
        RECORDED.write_text(json.dumps({**kept, **out}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORDED}")
    else:
        print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
