"""Extending a finished sweep: ``xling-ray sweep --resume RUN --num-samples N``, through a real
local Ray with the tiny model."""
from __future__ import annotations

import pytest
import yaml

from xling_ray.cli import main
from xling_ray.leaderboard.table import read_leaderboard

pytestmark = pytest.mark.slow  # it starts Ray


def test_an_extended_sweep_asks_the_same_study_and_runs_only_the_new_configurations(tiny_recipe, tmp_path, capsys):
    """`--resume RUN --num-samples 3` on a finished 2-configuration sweep: the third configuration is the
    one a 3-configuration sweep of the same sampler seed proposed (TPE saw the first two and their
    results), and nothing earlier runs again. (The multinode tests extend a sweep on S3.)"""
    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": 1})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "recipe": recipe.model_dump(), "search": {"train.lr": {"loguniform": [1e-4, 1e-2]}},
        "sweep": {"num_samples": 2, "seeds": 1, "seed": 5, "n_startup_trials": 1, "max_concurrent_trials": 1},
    }))
    runs = tmp_path / "runs"
    args = ["--storage", str(runs), "--quiet"]
    assert main(["sweep", str(space), "--name", "whole", "--num-samples", "3", *args]) == 0
    assert main(["sweep", str(space), "--name", "ext", *args]) == 0
    first = read_leaderboard(runs / "ext" / "leaderboard_trials.csv")
    assert main(["sweep", "--resume", str(runs / "ext"), "--num-samples", "3", "--quiet"]) == 0
    capsys.readouterr()

    from xling_ray.tune.search import load_study

    whole = [t.params["train.lr"] for t in load_study(runs / "whole").trials]
    extended = load_study(runs / "ext")
    assert [t.params["train.lr"] for t in extended.trials] == pytest.approx(whole)  # the same proposals, in order
    assert [t.state.name for t in extended.trials] == ["COMPLETE"] * 3
    trials = read_leaderboard(runs / "ext" / "leaderboard_trials.csv")
    assert len(trials) == 3 and (trials["status"] == "TERMINATED").all() and trials["config_id"].nunique() == 3
    kept = trials.set_index("trial_id").loc[list(first["trial_id"]), ["gap", "acc_en"]]
    assert kept.equals(first.set_index("trial_id")[["gap", "acc_en"]])  # not run again
    assert len(read_leaderboard(runs / "ext" / "leaderboard.csv")) == 3
    assert yaml.safe_load((runs / "ext" / "search_space.yaml").read_text())["sweep"]["num_samples"] == 3
    # Resumed again with nothing to add: nothing runs.
    assert main(["sweep", "--resume", str(runs / "ext"), "--quiet"]) == 0
    assert len(read_leaderboard(runs / "ext" / "leaderboard_trials.csv")) == 3
    # Refused in one line, before Ray starts: fewer configurations than the sweep has.
    assert main(["sweep", "--resume", str(runs / "ext"), "--num-samples", "2"]) == 2
    assert "already has 3 configurations" in capsys.readouterr().err
