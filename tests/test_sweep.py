"""Sweeps through a real local Ray: search spaces, trials, the leaderboard."""
from __future__ import annotations

import re

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from xling_ray.cli import main
from xling_ray.config import ConfigError
from xling_ray.leaderboard import build_leaderboard, read_leaderboard
from xling_ray.leaderboard.table import LANGUAGE_COLUMNS
from xling_ray.metrics import transfer_gap
from xling_ray.tune import load_search_space

REPO = Path(__file__).resolve().parents[1]


def _space_file(tmp_path, tiny_recipe, search, **sweep) -> Path:
    doc = {
        "recipe": tiny_recipe.with_updates({"train.epochs": 1}).model_dump(),
        "search": search,
        "sweep": {"num_samples": 2, "seed": 0, "seeds": 1, **sweep},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_every_shipped_search_space_validates():
    spaces = sorted((REPO / "search_spaces").glob("*.yaml"))
    assert spaces, "search_spaces/ is empty"
    for path in spaces:
        load_search_space(path)


def test_search_space_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe:\n  trian: {lr: 1.0e-4}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: recipe.trian"):
        load_search_space(bad)
    bad.write_text("search:\n  train.lr: {loguniform: [0.0, 1.0]}\n")
    with pytest.raises(ConfigError, match="loguniform: low must be positive"):
        load_search_space(bad)
    bad.write_text("search:\n  train.learning_rate: {uniform: [0.1, 0.2]}\n")
    with pytest.raises(ConfigError, match="search.train.learning_rate"):
        load_search_space(bad)
    bad.write_text("search:\n  train.batch_size: {choice: [16, 0]}\n")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_search_space(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_search_space(tmp_path / "missing.yaml")


def test_two_trial_sweep_writes_a_ranked_17_language_leaderboard(ray_local, tiny_recipe, tmp_path, capsys):
    space = _space_file(tmp_path, tiny_recipe, {"train.lr": {"loguniform": [1e-4, 1e-3]}, "train.batch_size": {"choice": [8, 16]}},
                        max_concurrent_trials=1)
    rc = main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "t"])
    assert rc == 0
    run = tmp_path / "runs" / "t"
    # In a log (not a terminal): no Tune status tables, a line per finished trial, then the final line.
    printed = capsys.readouterr().out
    progress = printed.split("\nLeaderboard of")[0].strip().splitlines()
    assert progress[0].startswith("Guard: ") and "Trial status" not in printed, progress
    # The evaluation's noise, for the space's 12 English pairs per task: 100 sqrt(.24 / 12) = 14.1 points.
    assert progress[1].startswith("Noise: at 60 % accuracy the gap's sampling error is about ±14.1 points on "
                                  "xnli's 12 English pairs, ±14.1 on pawsx's 12"), progress
    assert [re.sub(r"trial \S+ finished in \S+: gap .*", "T", l) for l in progress[2:4]] == [
        "[1/2 done, 0 failed] T", "[2/2 done, 0 failed] T"], progress
    assert progress[4].startswith("sweep 2/2 done | 0 running | 0 failed | best gap "), progress
    assert len(progress) == 5, progress
    board = read_leaderboard(run / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
    assert set(LANGUAGE_COLUMNS) <= set(board.columns)
    assert {"gap", "gap_xnli", "gap_pawsx", "acc_en", "train.lr", "train.batch_size"} <= set(board.columns)
    assert board["train.lr"].nunique() == 2
    for _, row in board.iterrows():
        xnli = {c.removeprefix("acc_xnli_"): row[c] for c in LANGUAGE_COLUMNS if c.startswith("acc_xnli_")}
        pawsx = {c.removeprefix("acc_pawsx_"): row[c] for c in LANGUAGE_COLUMNS if c.startswith("acc_pawsx_")}
        assert row["gap_xnli"] == pytest.approx(transfer_gap(xnli))
        assert row["gap"] == pytest.approx((transfer_gap(xnli) + transfer_gap(pawsx)) / 2)
    assert list(board["rank"]) == [1, 2] and board["gap"].is_monotonic_increasing
    assert (run / "leaderboard.md").read_text().count("\n") >= 4
    assert "pawsx_ko" in printed and "xnli_sw" in printed and "gap_pawsx" in printed
    # The leaderboard is rebuilt from the run folder alone.
    again = build_leaderboard(run)
    assert list(again.configs["config_id"]) == list(board["config_id"])
    # One trial at a time: the second trial ran in the first one's process (reuse_actors).
    assert again.trials["trial_id"].nunique() == 2 and len(_trial_pids(run)) == 1


def _trial_pids(run: Path) -> set[int]:
    import json

    return {json.loads(line)["pid"] for f in run.glob("*/result.json") for line in f.read_text().splitlines()}


def test_a_trial_on_a_two_worker_ray_train_group(ray_local, tiny_recipe, tmp_path):
    """Several workers go through TorchTrainer (DDP on gloo); each evaluates a shard."""
    space = _space_file(
        tmp_path, tiny_recipe.with_updates({"scaling.num_workers": 2, "data.tasks": ["pawsx"]}),
        {"train.lr": {"loguniform": [1e-4, 1e-3]}}, num_samples=1,
    )
    rc = main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "ddp", "--quiet"])
    assert rc == 0
    board = read_leaderboard(tmp_path / "runs" / "ddp" / "leaderboard.csv")
    assert len(board) == 1 and board.loc[0, "status"] == "TERMINATED"
    assert not math.isnan(board.loc[0, "gap_pawsx"]) and board.loc[0, "gap"] == board.loc[0, "gap_pawsx"]
    # Every example was evaluated once across both workers: accuracies and the share of the most
    # predicted class (counts summed over the workers, as the accuracy counts) are multiples of 100/12.
    for col in ("acc_pawsx_ja", "top_class_pawsx_ja", "top_class_pawsx_en"):
        value = board.loc[0, col]
        assert abs(value * 12 / 100 - round(value * 12 / 100)) < 1e-6, col
    assert board.loc[0, "top_class_pawsx_en"] >= 50.0  # two classes: the most predicted has at least half
    assert board.loc[0, "collapsed"] == (board.loc[0, "top_class_pawsx_en"] >= 95.0)
    # Each worker predicted its shard; the kept predictions are every example's, gathered from both (read
    # from the Ray Train checkpoint the trial reported), and give the trial's accuracies exactly.
    rebuilt = build_leaderboard(tmp_path / "runs" / "ddp")
    kept = rebuilt.predictions[board.loc[0, "trial_ids"]].tasks["pawsx"]
    assert len(kept.ids) == 12 and all(set(p.tolist()) <= {0, 1} for p in kept.predicted.values())
    for lang, acc in kept.accuracy().items():
        assert acc == board.loc[0, f"acc_pawsx_{lang}"]


@pytest.mark.parametrize("space_name", ["xlinglearn", "ding2022", "xite", "adjustment", "continual"])
def test_method_spaces_sweep_and_the_leaderboard_carries_every_term_setting(ray_local, tiny_recipe, tmp_path, space_name):
    shipped = load_search_space(REPO / "search_spaces" / f"{space_name}.yaml")
    small = {"model": tiny_recipe.model.model_dump(),
             "data": {**tiny_recipe.data.model_dump(), "eval_skip_first": shipped.recipe.data.eval_skip_first},
             "train.epochs": 1, "train.batch_size": 16, "losses.adjustment.align_layer": 1, "losses.adjustment.steps": 5}
    doc = {
        "recipe": shipped.recipe.with_updates(small).model_dump(),
        "search": {k: v.model_dump(by_alias=True, exclude_none=True) for k, v in shipped.search.items()},
        "sweep": {"num_samples": 2, "seed": 1, "seeds": 1},
    }
    if "losses.xite.layer" in doc["search"]:
        doc["search"]["losses.xite.layer"] = {"choice": [0, 1, 2]}  # the tiny model has 2 layers
    if "losses.pool.max_per_language" in doc["search"]:
        doc["search"]["losses.pool.max_per_language"] = {"choice": [4, 8]}  # the pool's size, not the method, is searched
    path = tmp_path / f"{space_name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs"), "--name", space_name, "--quiet"]) == 0
    board = read_leaderboard(tmp_path / "runs" / space_name / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()
    assert set(shipped.search) <= set(board.columns)
    for key in shipped.search:
        assert board[key].notna().all()
    weights = [k for k in shipped.search if k.split(".")[-1].startswith(("w_", "ratio", "base_rate"))]
    assert weights and (board[weights] > 0).all().all()


def test_a_plain_guarded_sweep_runs_plain_fine_tuning_first_and_floors_english_on_it(ray_local, tiny_recipe, tmp_path,
                                                                                     capsys):
    """adjustment.yaml's guard (``baseline: plain``) on the tiny model: the sweep runs plain fine-tuning
    (adjustment's fixed ``regime: before`` switched off, base_rate 0) first, outside Optuna, then the
    space's point; the leaderboard marks the baseline and floors English at its accuracy - 2."""
    shipped = load_search_space(REPO / "search_spaces" / "adjustment.yaml")
    small = {"model": tiny_recipe.model.model_dump(),
             "data": {**tiny_recipe.data.model_dump(), "eval_skip_first": shipped.recipe.data.eval_skip_first,
                      "tasks": ["pawsx"]},
             "train.epochs": 1, "train.batch_size": 16, "losses.adjustment.align_layer": 1, "losses.adjustment.steps": 4}
    doc = {
        "recipe": shipped.recipe.with_updates(small).model_dump(),
        "search": {k: v.model_dump(by_alias=True, exclude_none=True) for k, v in shipped.search.items()},
        "sweep": {**shipped.sweep.model_dump(mode="json", exclude_none=True), "num_samples": 1, "seeds": 1},
    }
    path = tmp_path / "adjustment.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(path), "--storage", str(tmp_path / "runs"), "--name", "guarded", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Guard: the leaderboard ranks configurations with acc_en below plain fine-tuning's mean - 2" in printed
    run = tmp_path / "runs" / "guarded"
    board = read_leaderboard(run / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "TERMINATED").all()  # num_samples 1, plus the baseline
    base, point = board[board["baseline"]].iloc[0], board[~board["baseline"]].iloc[0]
    assert base["losses.adjustment.regime"] == "off"  # adjustment's off(): its regime; base_rate then does nothing
    assert shipped.recipe.train.lr == pytest.approx(1.0e-4)  # fixed by the space: plain runs at every point's rate
    assert point["losses.adjustment.base_rate"] == 1.0 and pd.isna(point["losses.adjustment.regime"])
    # Tune's trial folders are run_trial_<id>_<n>_...: n counts the trials in the order they were created.
    created = {p.name.split("_")[2]: int(p.name.split("_")[3]) for p in run.glob("run_trial_*") if p.is_dir()}
    assert created[base["trial_ids"]] == 1 and created[point["trial_ids"]] == 2
    floor = base["acc_en"] - 2
    assert bool(point["feasible"]) == (point["acc_en"] >= floor)
    assert f"feasible: acc_en >= {floor:.2f} (plain's {base['acc_en']:.2f} - 2)" in printed
    # Optuna saw the space's point only: the baseline (regime off) is a reference.
    from xling_ray.tune.search import load_study

    study = load_study(run)
    assert [t.params["losses.adjustment.base_rate"] for t in study.trials] == [1.0]
    assert study.trials[0].constraints == {"acc_en": pytest.approx(floor - point["acc_en"]),
                                           "collapsed": float(point["collapsed"])}
    # Exporting the baseline gives plain fine-tuning, the regime the recipe fixed switched off.
    out = tmp_path / "plain.yaml"
    assert main(["export", str(run), "--rank", str(int(base["rank"])), "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["recipe"]["losses"]["adjustment"]["regime"] == "off"


def test_asha_with_one_seed_runs_on_the_clock_of_training_examples(ray_local, tiny_recipe, tmp_path):
    """Plain ASHA (one seed): rungs in training examples, so a two-epoch trial can be stopped at the
    end of its first epoch (48 pairs): a stopped configuration's last report is there, a kept one's at 96."""
    space = _space_file(tmp_path, tiny_recipe.with_updates({"train.epochs": 2, "data.tasks": ["pawsx"]}),
                        {"train.lr": {"loguniform": [1e-4, 1e-3]}}, num_samples=3,
                        scheduler={"type": "asha", "reduction_factor": 3})
    doc = yaml.safe_load(space.read_text())
    doc["recipe"]["train"]["epochs"] = 2  # _space_file sets 1; ASHA needs room to stop early
    space.write_text(yaml.safe_dump(doc))
    assert load_search_space(space).asha_clock() == (48, 96)  # grace: one epoch of 48 pairs; max_t: the trial
    assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "asha", "--quiet"]) == 0
    board = read_leaderboard(tmp_path / "runs" / "asha" / "leaderboard.csv")
    assert len(board) == 3 and set(board["status"]) <= {"TERMINATED", "STOPPED"}
    assert set(board["epoch"]) <= {1.0, 2.0} and (board["epoch"] == 2.0).any()
    stopped = board[board["status"] == "STOPPED"]
    assert (stopped["epoch"] == 1.0).all() and all(str(x).startswith("48 examples: gap ") for x in stopped["stopped_at"])
    assert board.loc[board["status"] == "TERMINATED", "stopped_at"].isna().all()
