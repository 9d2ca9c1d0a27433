"""The study's statistics (bench/study/run.py): the seed-noise screen and the verdicts."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

_PATH = Path(__file__).resolve().parents[1] / "bench" / "study" / "run.py"
_spec = importlib.util.spec_from_file_location("xling_study", _PATH)
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def _seeds(gap, acc_target) -> pd.DataFrame:
    return pd.DataFrame({"gap": gap, "acc_target": acc_target})


def test_spread_test_is_the_difference_of_means_against_twice_its_standard_error():
    a, b = pd.Series([1.0, 2.0, 3.0]), pd.Series([4.0, 4.0, 5.0])
    diff, se, beyond = study.spread_test(a, b)
    # sample variances 1 and 1/3, three seeds each: se = sqrt(1/3 + 1/9)
    assert diff == pytest.approx(2.0 - 13.0 / 3.0) and se == pytest.approx(math.sqrt(1 / 3 + 1 / 9)) and beyond
    diff, se, beyond = study.spread_test(pd.Series([1.0, 2.0, 3.0]), pd.Series([1.5, 2.5, 3.5]))
    assert diff == pytest.approx(-0.5) and se == pytest.approx(math.sqrt(2 / 3)) and not beyond


def test_a_gap_closed_by_learning_less_is_not_a_win():
    plain = _seeds([4.0, 4.2, 3.8], [60.0, 60.5, 59.5])
    assert study.verdict(_seeds([1.0, 1.2, 0.8], [60.2, 59.8, 60.0]), plain) == "closed"
    # the gap fell because the model stopped learning: target accuracy fell beyond the noise too
    assert study.verdict(_seeds([0.0, 0.1, -0.1], [40.0, 40.5, 39.5]), plain) == "closed by learning less"
    assert study.verdict(_seeds([7.0, 7.2, 6.8], [60.0, 60.5, 59.5]), plain) == "widened"
    assert study.verdict(_seeds([3.0, 5.0, 4.0], [55.0, 65.0, 60.0]), plain) == "within noise"
    # the gap did not move beyond the noise, but target accuracy fell beyond it
    assert study.verdict(_seeds([3.0, 5.0, 4.0], [40.0, 40.5, 39.5]), plain) == "gap within noise, learned less"


def test_a_finalist_is_the_default_only_when_every_searched_setting_equals_the_first_point():
    space = {"sweep": {"points_to_evaluate": [{"train.lr": 1.5e-4, "losses.xite.lda": True,
                                               "losses.xite.layer": 0, "losses.adjustment.word_vector": "mean"}]}}
    # as the leaderboard gives them back: numbers parsed from CSV, booleans as numpy booleans
    row = {"train.lr": 0.00015, "losses.xite.lda": True, "losses.xite.layer": 0.0, "losses.adjustment.word_vector": "mean"}
    assert study.is_default(row, space)
    assert not study.is_default({**row, "train.lr": 6.4e-5}, space)
    assert not study.is_default({**row, "losses.xite.lda": False}, space)
    assert not study.is_default({**row, "losses.adjustment.word_vector": "first"}, space)
    assert not study.is_default({k: v for k, v in row.items() if k != "train.lr"}, space)
    assert not study.is_default(row, {"sweep": {}})


def _write_run(storage: Path, method: str, seeds: dict, search_rows: list[dict], space: dict) -> None:
    from xling_ray.leaderboard.table import LANGUAGE_COLUMNS

    run = storage / method
    run.mkdir(parents=True)
    trials = pd.DataFrame(seeds)
    for col in LANGUAGE_COLUMNS:
        trials[col] = trials["acc_target"]
    trials.to_csv(run / "final_heldout_leaderboard_trials.csv", index=False)
    final = {"config_id": "c0", **trials.mean().to_dict()}
    final.update({f"{c}_std": trials[c].std(ddof=1) for c in study.COLUMNS})
    pd.DataFrame([final]).to_csv(run / "final_heldout_leaderboard.csv", index=False)
    pd.DataFrame(search_rows).to_csv(run / "leaderboard.csv", index=False)
    (run / "search_space.yaml").write_text(yaml.safe_dump(space))


def test_results_page_is_written_from_the_runs_numbers(tmp_path):
    storage = tmp_path / "runs"
    english = {"acc_en": [70.0, 70.5, 69.5], "gap_xnli": [4.0, 4.0, 4.0], "gap_pawsx": [4.0, 4.0, 4.0]}
    per_method = {  # gap and mean target accuracy per seed: one of each verdict
        "plain": ([4.0, 4.2, 3.8], [60.0, 60.5, 59.5]),
        "xlinglearn": ([1.0, 1.2, 0.8], [60.2, 59.8, 60.0]),
        "ding2022": ([0.0, 0.1, -0.1], [40.0, 40.5, 39.5]),
        "xite": ([7.0, 7.2, 6.8], [60.0, 60.5, 59.5]),
        "adjustment": ([3.0, 5.0, 4.0], [55.0, 65.0, 60.0]),
        "continual": ([3.0, 5.0, 4.0], [40.0, 40.5, 39.5]),
    }
    default = {"train.lr": 1.5e-4}
    for method, (gap, target) in per_method.items():
        searched = {} if method == "plain" else {"train.lr": {"loguniform": [1e-5, 3e-4]}}
        rows = [{"config_id": "a1", "gap": 0.5, "acc_en": 71.0, **({"train.lr": 1.5e-4} if searched else {})}]
        if method == "xite":  # its best search configuration is not the default one
            rows[0]["train.lr"] = 6e-5
        _write_run(storage, method, {"gap": gap, "acc_target": target, **english}, rows,
                   {"search": searched, "sweep": {"points_to_evaluate": [default] if searched else []}})
    (storage / "timings.json").write_text(json.dumps({"plain/search": 600.0, "plain/final": 600.0}))
    args = argparse.Namespace(smoke=False, seeds=3, final_eval=300, english_drop=4.0)

    text = study.write_results(storage, args).read_text()

    assert (tmp_path / "RESULTS.md").exists() and (tmp_path / "gaps.png").stat().st_size > 0
    assert (tmp_path / "accuracy.png").exists() and (tmp_path / "gap_vs_target.png").exists()
    assert "its stages took 20 minutes" in text
    assert "| plain | 4.00 ± 0.20 | 4.00 ± 0.00 | 4.00 ± 0.00 | 60.00 ± 0.50 | 70.00 ± 0.50 | 1 |" in text
    # xlinglearn - plain: -3.00, standard error sqrt(0.04/3 + 0.04/3)
    assert f"| xlinglearn | -3.00 (± {math.sqrt(0.08 / 3):.2f}) |" in text
    assert "without losing target accuracy: xlinglearn." in text
    assert "(target accuracy fell beyond seed noise too): ding2022." in text
    assert "Widened the gap beyond seed noise: xite." in text and "Within seed noise: adjustment." in text
    assert "while target accuracy fell beyond it: continual." in text
    assert "| xnli_fr | 60.0 | 60.0 | 40.0 | 60.0 | 60.0 | 40.0 |" in text
    assert "English accuracy 71.0 minus 4 = 67.0" in text
    lines = {line.split("**")[1]: line for line in text.splitlines() if line.startswith("- **")}
    assert "The method's default configuration" in lines["xlinglearn"]
    assert "Not the method's default configuration" in lines["xite"]
