"""Behaviour unchanged: each method's reported metrics equal those recorded in
``tests/data/method_metrics_before.json`` by ``tests/method_metrics.py --record`` (same recipe,
seed, one thread, tiny model), the evaluation's per-language accuracies included: every
recorded case learned (no collapsed predictions), so a change in evaluation shows too."""
from __future__ import annotations

import json
import math

import pytest

from method_metrics import CASES, RECORDED, case_metrics, tiny_recipe


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, float]]:
    return json.loads(RECORDED.read_text())


@pytest.mark.parametrize("name", list(CASES))
def test_a_method_reports_the_metrics_recorded_before(name, recorded, data_dir):
    got = case_metrics(tiny_recipe(str(data_dir)), name)
    want = recorded[name]
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    off = {k: (got[k], want[k]) for k in want if not math.isclose(got[k], want[k], rel_tol=1e-6, abs_tol=1e-6)}
    assert not off, off


def test_every_recorded_case_learned_so_that_the_evaluation_is_compared(recorded):
    """A collapsed case (one class for every English example) has the majority's accuracy in every
    language whatever the model computes: comparing it would compare the losses alone."""
    assert set(recorded) == set(CASES)
    for name, metrics in recorded.items():
        assert metrics["collapsed"] == 0.0 and metrics["top_class_xnli_en"] < 95.0, name
