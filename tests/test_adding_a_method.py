"""A method added from outside the package: tests/toy_method.py registers its settings, one
term and one preparation step; a recipe names the module (``methods:``) and every process
that reads the recipe, Ray trial workers included, imports it first."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from xling_ray.config import ConfigError, recipe_from_dict

REPO = Path(__file__).resolve().parents[1]
TOY = "tests.toy_method"
SKIP = {"xnli": 1245, "pawsx": 1000}


@pytest.fixture
def importable(monkeypatch):
    """``tests.toy_method`` importable here and in Ray workers (they start in the driver's folder);
    registered for this test only: registration is process-wide, and the toy's section in every
    recipe dumped afterwards would reach processes that never import it."""
    import sys

    from xling_ray.methods import unregister

    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(REPO)
    yield
    unregister("toy")
    sys.modules.pop(TOY, None)  # imported again (and so registered again) by the next test that names it


@pytest.fixture
def toy_recipe(tiny_recipe, importable):
    raw = tiny_recipe.model_dump()
    raw["methods"] = [TOY]
    return recipe_from_dict(raw).with_updates({
        "data.tasks": ["xnli"], "data.languages": ["en", "de", "zh"], "data.eval_skip_first": SKIP,
        "train.epochs": 1, "losses.pool.max_per_language": 8, "losses.toy.weight": 0.5})


def test_the_toy_method_is_typed_settings_a_term_and_a_preparation(toy_recipe):
    from xling_ray.methods import registered_methods
    from xling_ray.train import LocalSession, run_recipe

    assert toy_recipe.losses.toy.weight == 0.5 and toy_recipe.methods == (TOY,)
    assert "toy" in [m.key for m in registered_methods()]
    with pytest.raises(ConfigError, match=r"losses\.toy\.weight: Input should be greater than or equal to 0"):
        toy_recipe.with_updates({"losses.toy.weight": -1.0})
    with pytest.raises(ConfigError, match=r"losses\.toy\.wieght: Extra inputs are not permitted"):
        toy_recipe.with_updates({"losses.toy.wieght": 1.0})
    last = run_recipe(toy_recipe, LocalSession())
    assert last["loss_xnli_toy"] > 0
    # Off at weight 0: no term, no preparation.
    assert "loss_xnli_toy" not in run_recipe(toy_recipe.with_updates({"losses.toy.weight": 0.0}), LocalSession())


def test_unregistering_the_toy_takes_its_section_out_of_recipes(toy_recipe, tiny_recipe):
    from xling_ray.methods import registered_methods, unregister

    assert "toy" in toy_recipe.model_validate(toy_recipe.model_dump()).model_dump()["losses"]
    unregister("toy")
    assert "toy" not in [m.key for m in registered_methods()]
    assert "toy" not in tiny_recipe.model_validate({**tiny_recipe.model_dump(), "losses": {}}).model_dump()["losses"]
    with pytest.raises(ConfigError, match=r"losses\.toy: Extra inputs are not permitted"):
        recipe_from_dict({**tiny_recipe.model_dump(), "losses": {"toy": {"weight": 1.0}}})


def test_a_recipe_without_the_module_refuses_the_toy_section(tiny_recipe, importable):
    with pytest.raises(ConfigError, match="methods: cannot import 'tests.no_such_method'"):
        recipe_from_dict({**tiny_recipe.model_dump(), "methods": ["tests.no_such_method"]})


@pytest.mark.slow  # starts Ray
def test_a_sweep_runs_the_toy_method_from_a_yaml_search_space(toy_recipe, tmp_path):
    import ray

    from xling_ray.cli import main
    from xling_ray.leaderboard import read_leaderboard

    doc = {"recipe": toy_recipe.model_dump(mode="json"), "search": {"losses.toy.weight": {"uniform": [0.1, 1.0]}},
           "sweep": {"num_samples": 2, "seed": 0, "seeds": 1, "max_concurrent_trials": 1}}
    space = tmp_path / "toy.yaml"
    space.write_text(yaml.safe_dump(doc))
    assert yaml.safe_load(space.read_text())["recipe"]["methods"] == [TOY]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "toy", "--quiet"]) == 0
    finally:
        ray.shutdown()
    board = read_leaderboard(tmp_path / "runs" / "toy" / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
    assert (board["losses.toy.weight"] > 0).all()
    # Each trial's worker imported the toy and computed its term.
    results = [json.loads(line) for p in (tmp_path / "runs" / "toy").rglob("result.json") for line in p.read_text().splitlines()]
    assert len(results) >= 2 and all(r["loss_xnli_toy"] > 0 for r in results)
