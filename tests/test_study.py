"""The study's statistics (bench/study/run.py): the seed-noise screen and the verdicts."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

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
