"""Behaviour unchanged: each method's reported metrics equal those recorded before methods
became modules of ``xling_ray/methods/`` (same recipe, seed, one thread, tiny model)."""
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
