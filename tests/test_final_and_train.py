"""The final stage on the held-out part and a production training that fails on a worker, through a real
local Ray with the tiny model (apart from tests/test_sweep_lifecycle.py so that two test processes share them)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xling_ray.cli import main
from xling_ray.config import PAWSX_LANGUAGES
from xling_ray.leaderboard.table import Constraint, group_configs, pareto_front, read_leaderboard
from xling_ray.tune.space import SearchSpace, SweepConfig

REPO = Path(__file__).resolve().parents[1]


def test_final_on_the_heldout_part_where_no_test_split_is_at_hand(ray_local, tiny_recipe, tmp_path, capsys, monkeypatch):
    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": 1, "data.heldout": {"pawsx": 100}})
    space = tmp_path / "space.yaml"
    # Nothing searched: the sweep runs the recipe once per seed (a baseline).
    space.write_text(yaml.safe_dump({"recipe": recipe.model_dump(), "search": {}, "sweep": {"num_samples": 4, "seeds": 2}}))
    assert main(["sweep", str(space), "--storage", str(tmp_path), "--name", "h", "--quiet"]) == 0
    board = read_leaderboard(tmp_path / "h" / "leaderboard.csv")
    assert len(board) == 1 and board.loc[0, "seeds"] == 2 and board.loc[0, "seed_list"] == "0 1"
    # --split test where the data has no test split: one line before anything runs, nothing written.
    before = sorted(p.name for p in (tmp_path / "h").iterdir())
    assert main(["final", str(tmp_path / "h"), "--split", "test", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "pawsx/test-en.tsv" in err and "file not found" in err and "--heldout" in err, err
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == before
    assert main(["final", str(tmp_path / "h"), "--heldout", "--top", "1", "--seeds", "3",
                 "--set", "data.eval_max_per_language=10", "--quiet"]) == 0
    jobs = json.loads((tmp_path / "h" / "final-heldout-jobs.json").read_text())
    assert sorted(j["seed"] for j in jobs.values()) == [0, 1, 2]  # --seeds: more than were searched
    job = next(iter(jobs.values()))
    assert job["recipe"]["data"]["eval_part"] == "heldout" and job["recipe"]["data"]["split"] == "validation"
    final = read_leaderboard(tmp_path / "h" / "final_heldout_leaderboard.csv")
    assert len(final) == 1 and final.loc[0, "status"] == "TERMINATED" and final.loc[0, "seeds"] == 3
    # The held-out examples are others than the searched ones.
    from xling_ray.config import RecipeConfig
    from xling_ray.data import load_eval_sets

    searched = load_eval_sets(recipe.data)["pawsx"]["en"].ids
    held = load_eval_sets(RecipeConfig.model_validate(job["recipe"]).data)["pawsx"]["en"].ids
    assert len(held) == 10 and not set(searched) & set(held)

    # A folder that kept only the leaderboards and the search space (as bench/study's results do):
    # `final` runs from the written leaderboard, the same jobs, the same figures (CPU, same seeds).
    import shutil

    kept = tmp_path / "kept"
    kept.mkdir()
    for name in ("leaderboard.csv", "leaderboard_trials.csv", "search_space.yaml"):
        shutil.copy2(tmp_path / "h" / name, kept / name)
    # Logged to MLflow ($MLFLOW_TRACKING_URI): the leaderboards and the space, no report (no trials to draw).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    assert main(["final", str(kept), "--heldout", "--top", "1", "--seeds", "3",
                 "--set", "data.eval_max_per_language=10", "--quiet"]) == 0
    assert "MLflow: run " in capsys.readouterr().out
    assert not (kept / "report.html").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert json.loads((kept / "final-heldout-jobs.json").read_text()) == jobs
    again = read_leaderboard(kept / "final_heldout_leaderboard.csv")
    for col in ("gap", "acc_en", "acc_target", "acc_pawsx_ko"):
        assert again.loc[0, col] == final.loc[0, col], col
    # A folder with neither trials nor a written leaderboard is still "no sweep here".
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy2(kept / "search_space.yaml", bare / "search_space.yaml")
    assert main(["final", str(bare), "--heldout", "--top", "1", "--quiet"]) == 2
    assert "no sweep here" in capsys.readouterr().err


def test_a_production_training_that_fails_on_a_worker_is_one_line_and_exit_1(ray_local, tiny_recipe, tmp_path, capsys):
    from xling_ray.leaderboard.export import ExportedRecipe, write_exported

    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": 1, "train.lr": 1e30})  # inputs fine, loss NaN
    best = write_exported(ExportedRecipe(recipe=recipe, seeds=[0]), tmp_path / "best.yaml")
    assert main(["train", str(best), "--output", str(tmp_path / "model"), "--workers", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    line = err[-1]
    assert line.startswith("xling-ray: error: training failed on a Ray Train worker (NonFiniteLossError: "), line
    # The worker's traceback is printed above it, though Ray's own output is not forwarded.
    assert any("raise NonFiniteLossError(" in l for l in err[:-1]), err
    assert "loss is nan" in line and str(tmp_path / "model" / "ray") in line
