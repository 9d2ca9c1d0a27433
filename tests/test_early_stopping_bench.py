"""bench/early_stopping.py's figure: the compute each run spends, configuration by configuration in
order, until a configuration that trained to its end comes within the tolerance of FIFO's best."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
_spec = importlib.util.spec_from_file_location("xling_early_stopping_bench", BENCH / "early_stopping.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _config(config_id, gap, status="TERMINATED", examples=8000, seconds=480.0, collapsed=False, stopped_at=""):
    return {"config_id": config_id, "rank": 1, "status": status, "stopped_at": stopped_at, "gap": gap, "acc_en": 55.0,
            "collapsed": collapsed, "feasible": True, "seeds": 2, "examples": examples, "seconds": seconds,
            "settings": {"train.lr": {"a": 1e-4, "b": 2e-4, "z": 5e-4, "c": 3e-5}[config_id]}}


def _result() -> dict:
    """Sampler seed 0: FIFO's best is c (3.0); ASHA trains a, the first, to its end (it has nothing to
    judge it against), stops b and z at their first rung (1,000 pairs x 2 seeds) and reaches c's 3.2,
    within 0.5, after 8,000 + 2,000 + 2,000 + 8,000 examples against FIFO's 32,000. A collapsed
    configuration's gap near 0 is no result to reach."""
    fifo = [_config("a", 5.0), _config("b", 6.0), _config("z", 0.1, collapsed=True), _config("c", 3.0)]
    asha = [_config("a", 5.0),
            _config("b", 6.5, "STOPPED", 2000, 100.0, stopped_at="1000 examples: gap 6.50"),
            _config("z", 0.1, "STOPPED", 2000, 100.0, collapsed=True), _config("c", 3.2)]
    return {"command": "python bench/early_stopping.py", "runs": {"fifo-seed0": {"configs": fifo},
                                                                  "asha-seed0": {"configs": asha}},
            "scale": {"sampler_seeds": [0, 1], "num_samples": 4, "seeds": 2, "reduction_factor": 2.0,
                      "tolerance": 0.5, "smoke": False, "rungs": [1000, 2000], "max_t": 4000}}


def test_compute_to_come_within_the_tolerance_of_fifos_best():
    [row] = bench.compare(_result())  # sampler seed 1 has not run: compared where both runs are
    assert row["fifo_best_gap"] == 3.0
    assert row["fifo"] == {"configurations": 4, "examples": 32000.0, "seconds": 1920.0, "config_id": "c"}
    assert row["asha"] == {"configurations": 4, "examples": 20000.0, "seconds": 1160.0, "config_id": "c"}
    assert row["examples_share"] == 20000 / 32000 and row["stopped"] == 2
    # the least ASHA could spend: a and c (the first and the best) to their end, b and z at the first rung
    assert row["least_share"] == (8000 + 2000 + 2000 + 8000) / 32000
    assert row["whole_share"] == 20000 / 32000  # c is FIFO's last configuration: reaching it is its whole run
    assert row["total"] == {"fifo": {"examples": 32000, "seconds": 1920.0}, "asha": {"examples": 20000, "seconds": 1160.0}}
    assert row["asha_best_gap"] == 3.2 and row["same_best"] is True  # the same settings, c, are each run's best


def test_the_goal_is_40_percent_of_fifos_examples_at_every_sampler_seed():
    result = _result()
    result["scale"]["sampler_seeds"] = [0]
    row, _ = bench.item_four(result)
    assert row.endswith("| **missed** |")  # 62 % > 40 %
    configs = result["runs"]["asha-seed0"]["configs"]  # the verdict alone: 2,000 x 3 + 4,000 = 10,000 of 32,000: 31 %
    configs[0]["examples"], configs[-1]["examples"] = 2000, 4000
    row, _ = bench.item_four(result)
    assert "seed 0: 31 % of FIFO's training examples" in row and "ASHA's best is FIFO's at 1 of 1" in row
    assert row.endswith("| met |")


def test_item_four_says_what_was_measured_and_what_was_not():
    row, section = bench.item_four(_result())
    assert row.startswith("| 4 | FIFO vs seed-group ASHA") and "seed 0: 62 % of FIFO's training examples" in row
    assert row.endswith("| partial (sampler seed(s) [1] not run yet) |")
    # (16,000 + 2,000 (k - 2)) / 8,000 k <= 0.4 from the 10th configuration on
    assert "40 % or less only where FIFO's best is configuration 10 or a later one." in section
    assert "| asha-seed0 | b | train.lr=0.0002 | STOPPED | 1000 examples: gap 6.50 |" in section
    assert "| 0 | 3.00 | 3.20 | yes | 4, 32000, 1920 | 4, 20000, 1160 | 0.62, 0.60 | 0.62 | 0.62 |" in section
    row, section = bench.item_four(None)
    assert "not measured yet" in row and row.endswith("| n/a |") and section.startswith("## 4. Early stopping")
