"""bench/learning.py's goal table scores no collapsed configuration against a goal."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "bench" / "learning.py"
_spec = importlib.util.spec_from_file_location("xling_learning_bench", _PATH)
learning = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learning)


def _rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in text.splitlines() if line.startswith("| ") and "---" not in line
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_a_collapsed_configuration_is_scored_against_no_goal():
    # The 3-seed default: XNLI gap 1.0 ± 0.4 would pass "gap > its sd", but a seed collapsed.
    seeds = {"seeds": 3, "rows": [{"gap_xnli": 1.0, "gap_xnli_sd": 0.4, "acc_xnli_en": 61.0, "acc_pawsx_en": 62.0,
                                   "collapsed": True}]}
    sweep = {"wall_s": 420.0, "rows": [{"train.lr": 1e-4, "acc_xnli_en": 35.0, "acc_pawsx_en": 66.0, "collapsed": True}]}
    rows = _rows(learning.goal_section(sweep, seeds))
    not_scored = ["collapsed (one class for nearly every English example)", "**no**: not scored"]
    for goal in ("XNLI gap > 0 and > its 3-seed sd", "XNLI en, 3 seeds", "PAWS-X en, 3 seeds",
                 "XNLI en >= 60 % (default configuration)", "PAWS-X en >= 60 % (default configuration)"):
        assert rows[goal] == not_scored, goal
    assert rows["rank 1 not collapsed"] == ["False", "**no**"]
    assert rows["whole 3-trial sweep <= 10 min"] == ["7.0 min", "yes"]
    # The same figures from a configuration that learned are scored.
    seeds["rows"][0]["collapsed"] = False
    assert _rows(learning.goal_section(None, seeds))["XNLI gap > 0 and > its 3-seed sd"] == ["1.0 ± 0.4", "yes"]


def test_the_pawsx_paragraph_names_the_levers_at_60_and_sets_the_seed_pair_side_by_side():
    def run(xnli, pawsx):
        return {"points": [{"acc_xnli_en": xnli, "acc_pawsx_en": pawsx}]}

    runs = {"head_lr_bf16": run(54.3, 59.3), "qs_xnli4000": run(57.3, 73.0), "qs_bs8": run(48.7, 56.3),
            "qs_warmup30": run(48.0, 60.0)}
    text = learning.pawsx_by_seed(runs)
    assert "at the last point in 2 of 4 levers: qs_xnli4000 (73.0), qs_warmup30 (60.0)." in text
    assert "yet reached PAWS-X English 73.0 against 59.3" in text
    # Without the pair, only the count.
    assert "yet reached" not in learning.pawsx_by_seed({"qs_bs8": run(48.7, 56.3)})


def test_the_eval_clock_counts_a_batch_of_each_task_a_round_until_its_pairs_are_done():
    import sys

    from xling_ray.config import RecipeConfig

    sys.path.insert(0, str(_PATH.parent))  # bench/eval_clock.py imports bench/_common.py
    spec = importlib.util.spec_from_file_location("xling_eval_clock_bench", _PATH.parent / "eval_clock.py")
    clock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clock)
    recipe = RecipeConfig().with_updates({"data.tasks": ["xnli", "pawsx"], "train.batch_size": 16,
                                          "data.train_size": {"xnli": 100, "pawsx": 40}})
    # PAWS-X: 16, 16, 8, then done; XNLI: 6 rounds of 16 and one of 4.
    assert clock.examples_per_round(recipe) == [32, 32, 24, 16, 16, 16, 4]
    assert clock.mid_epoch_evaluations(clock.examples_per_round(recipe), 50) == 2  # passing 50 and 100; 140 is the end
