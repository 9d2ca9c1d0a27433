"""The metrics ``run_recipe`` reports for plain fine-tuning and for each method, on the tiny model.

``tests/test_method_metrics.py`` recomputes them and compares with the values recorded in
``tests/data/method_metrics_before.json`` (recorded before methods became modules of
``xling_ray/methods/``). To record them again (only when a change of behaviour is meant):

    OMP_NUM_THREADS=1 .venv/bin/python tests/method_metrics.py --record
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

BASE = {
    "data.tasks": ["xnli"], "data.languages": ["en", "de", "zh"], "data.train_size": 48,
    "data.eval_max_per_language": 8, "data.eval_skip_first": {"xnli": 1245, "pawsx": 1000},
    "train.epochs": 1, "train.batch_size": 16, "train.lr": 3e-3, "train.seed": 3,
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
    "adjustment_continual": {"losses.adjustment.regime": "continual"},
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
    out = {name: case_metrics(base, name) for name in CASES}
    if "--record" in sys.argv:
        RECORDED.parent.mkdir(exist_ok=True)
        RECORDED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {RECORDED}")
    else:
        print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
