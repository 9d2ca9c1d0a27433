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
