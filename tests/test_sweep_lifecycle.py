"""Sweeps users can trust: objectives and Pareto front, seeds, failures, resume after
SIGKILL, export -> train, and final retraining on the test split. Through a real
local Ray, with the tiny model."""
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


# ---------------------------------------------------------------- pure parts


def _brute_force_front(points: np.ndarray, modes) -> list[int]:
    sign = np.array([1 if m == "min" else -1 for m in modes])
    front = []
    for i, a in enumerate(points * sign):
        dominated = any((b <= a).all() and (b < a).any() for j, b in enumerate(points * sign) if j != i)
        if not dominated:
            front.append(i)
    return front


def test_pareto_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(50):
        points = rng.integers(0, 5, size=(rng.integers(1, 12), 2)).astype(float)  # small ints: ties happen
        modes = [["min", "max"], ["min", "min"], ["max", "max"]][rng.integers(0, 3)]
        assert list(np.flatnonzero(pareto_front(points, modes))) == _brute_force_front(points, modes)


def test_pareto_front_by_hand():
    # (gap, acc_target): lower gap, higher accuracy. (1, 50) and (3, 60) trade off; (2, 40) is dominated by (1, 50).
    points = np.array([[1.0, 50.0], [3.0, 60.0], [2.0, 40.0]])
    assert list(pareto_front(points, ["min", "max"])) == [True, True, False]


def test_seed_groups_give_mean_and_sample_std_and_rank_on_the_mean():
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "status": ["TERMINATED"] * 4 + ["ERROR"],
        "config_id": ["a", "a", "c", "c", "e"],
        "seed": [0, 1, 1, 0, 0],  # Tune may list a configuration's trials in any order
        "gap": [4.0, 2.0, 5.0, 1.0, float("nan")],
        "acc_en": [60.0, 62.0, 50.0, 70.0, float("nan")],
        "acc_target": [56.0, 60.0, 48.0, 66.0, float("nan")],
        "epoch": [1.0] * 4 + [float("nan")],
        "train.lr": [1e-4, 1e-4, 3e-4, 3e-4, 1e30],
        "error": [""] * 4 + ["NonFiniteLossError: task pawsx: loss is nan"],
    })
    configs = group_configs(trials)
    # a and c tie on the mean gap (3.0); a's mean target accuracy (58) beats c's (57); e failed.
    assert list(configs["config_id"]) == ["a", "c", "e"]
    a = configs.set_index("config_id").loc["a"]
    assert a["gap"] == pytest.approx(3.0) and a["gap_std"] == pytest.approx(math.sqrt(2.0))  # sample std of (4, 2)
    assert a["acc_en"] == pytest.approx(61.0) and a["seeds"] == 2 and a["seed_list"] == "0 1"
    c = configs.set_index("config_id").loc["c"]
    assert c["acc_target"] == pytest.approx(57.0) and c["acc_target_std"] == pytest.approx(math.sqrt(162.0))
    assert c["seed_list"] == "0 1" and c["trial_ids"] == "d c"  # listed in seed order
    e = configs.set_index("config_id").loc["e"]
    assert e["status"] == "ERROR" and "loss is nan" in e["error"] and e["rank"] == 3


def test_leaderboard_csv_keeps_tune_hex_ids_as_text(tmp_path):
    from xling_ray.leaderboard import write_leaderboard
    from xling_ray.leaderboard.table import Leaderboard

    ids = ["4611e919", "12345678"]  # Tune's searcher ids: a float (inf) and an integer to plain read_csv
    trials = pd.DataFrame({"trial_id": ids, "status": ["TERMINATED"] * 2, "config_id": ids, "seed": [0, 0],
                           "gap": [1.0, 2.0], "acc_en": [50.0, 50.0], "acc_target": [49.0, 48.0], "epoch": [1.0, 1.0],
                           "train.lr": [1e-4, 2e-4], "error": ["", ""]})
    write_leaderboard(Leaderboard(group_configs(trials), trials), tmp_path)
    assert list(read_leaderboard(tmp_path / "leaderboard.csv")["config_id"]) == ids
    assert list(read_leaderboard(tmp_path / "leaderboard_trials.csv")["trial_id"]) == ids
    if int(pd.__version__.split(".")[0]) >= 3:  # pandas 2 reads the column as text by itself
        assert math.isinf(pd.read_csv(tmp_path / "leaderboard.csv")["config_id"][0])  # what read_leaderboard avoids


def test_ties_on_the_mean_go_to_higher_target_accuracy_and_the_constraint_ranks_infeasible_last():
    trials = pd.DataFrame({
        "trial_id": ["a", "b", "c"], "status": ["TERMINATED"] * 3, "config_id": ["a", "b", "c"], "seed": [0, 0, 0],
        "gap": [1.0, 2.0, 2.0], "acc_en": [40.0, 70.0, 71.0], "acc_target": [39.0, 68.0, 69.0],
        "epoch": [1.0] * 3, "train.lr": [1e-4, 2e-4, 3e-4], "error": [""] * 3,
    })
    configs = group_configs(trials, ("gap",), ("min",), Constraint(metric="acc_en", baseline=70.0, delta=1.0))
    # a has the lowest gap but English fell below 70 - 1: it ranks after every feasible configuration.
    assert list(configs["config_id"]) == ["c", "b", "a"]
    assert list(configs["feasible"]) == [True, True, False]


def test_sweep_config_checks_objectives_and_seeds():
    assert SweepConfig(metric=["gap", "acc_target"], mode=["min", "max"]).multi_objective
    with pytest.raises(ValueError, match="sweep.metric has 2 name"):
        SweepConfig(metric=["gap", "acc_target"], mode=["min"])
    # ASHA judges a configuration's seeds together (tests/test_seed_asha.py): several seeds are welcome,
    # as long as every seed of a configuration can run while the others wait at a rung.
    assert SweepConfig(seeds=3, scheduler={"type": "asha"}).scheduler.type == "asha"
    with pytest.raises(ValueError, match="max_concurrent_trials .2. is below sweep.seeds .3."):
        SweepConfig(seeds=3, max_concurrent_trials=2, scheduler={"type": "asha"})
    with pytest.raises(ValueError, match=r"points_to_evaluate\[0\].*train.epochs"):
        SearchSpace(search={"train.lr": {"loguniform": [1e-5, 1e-3]}}, sweep={"points_to_evaluate": [{"train.epochs": 2}]})
    assert SweepConfig().seeds == 3  # the default for a real sweep is more than one seed


def test_seed_groups_tell_optuna_the_mean_and_fail_a_configuration_with_a_failed_seed():
    from ray.tune.search import Searcher

    from xling_ray.tune.search import SeedGroups

    class Recording(Searcher):
        def __init__(self):
            super().__init__(metric=["gap", "acc_target"], mode=["min", "max"])
            self.told, self.n = [], 0

        def suggest(self, trial_id):
            self.n += 1
            return {"train.lr": self.n}

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.told.append((trial_id, result, error))

    inner = Recording()
    groups = SeedGroups(inner, seeds=2, metrics=["gap", "acc_target", "acc_en"])
    configs = [groups.suggest(t) for t in ("t1", "t2", "t3", "t4")]
    assert configs == [{"train.lr": 1, "__trial_index__": 0}, {"train.lr": 1, "__trial_index__": 1},
                       {"train.lr": 2, "__trial_index__": 0}, {"train.lr": 2, "__trial_index__": 1}]
    groups.on_trial_complete("t1", {"gap": 2.0, "acc_target": 50.0, "acc_en": 60.0})
    assert inner.told == []  # waits for every seed
    groups.on_trial_complete("t2", {"gap": 4.0, "acc_target": 54.0, "acc_en": 70.0})
    assert inner.told == [("t1", {"gap": 3.0, "acc_target": 52.0, "acc_en": 65.0}, False)]
    groups.on_trial_complete("t3", {"gap": 1.0, "acc_target": 50.0, "acc_en": 60.0})
    groups.on_trial_complete("t4", None, error=True)
    assert inner.told[-1] == ("t3", None, True)


# ---------------------------------------------------------------- through Ray


@pytest.fixture(scope="module")
def data_with_test(tmp_path_factory, data_dir) -> Path:
    """The shared data, plus ``pawsx/test-{lang}.tsv`` made from the validation files (an exact
    copy: retraining a configuration on this "test" split must reproduce its validation figures)."""
    root = tmp_path_factory.mktemp("data")
    (root / "train").symlink_to(data_dir / "train")
    (root / "README.md").symlink_to(data_dir / "README.md")
    (root / "pawsx").mkdir()
    for lang in PAWSX_LANGUAGES:
        src = data_dir / "pawsx" / f"validation-{lang}.tsv"
        (root / "pawsx" / f"validation-{lang}.tsv").symlink_to(src)
        (root / "pawsx" / f"test-{lang}.tsv").write_bytes(src.read_bytes())
    return root


BASELINE_EN = 50.0


@pytest.fixture(scope="module")
def moo_run(ray_local, tiny_recipe, data_with_test, tmp_path_factory) -> Path:
    """Three configurations x two seeds, two objectives, an English floor, and a first
    configuration whose learning rate makes the loss NaN."""
    tmp = tmp_path_factory.mktemp("moo")
    recipe = tiny_recipe.with_updates({"data.data_dir": str(data_with_test), "data.tasks": ["pawsx"], "train.epochs": 1})
    doc = {
        "recipe": recipe.model_dump(),
        "search": {"train.lr": {"loguniform": [1e-4, 2e-3]}},
        "sweep": {"num_samples": 3, "seeds": 2, "seed": 0, "metric": ["gap", "acc_target"], "mode": ["min", "max"],
                  "constraint": {"metric": "acc_en", "baseline": BASELINE_EN, "delta": 0.0},
                  "points_to_evaluate": [{"train.lr": 1.0e30}]},
    }
    space = tmp / "space.yaml"
    space.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(space), "--storage", str(tmp / "runs"), "--name", "moo", "--quiet"]) == 0
    return tmp / "runs" / "moo"


def test_a_nan_configuration_is_marked_failed_and_the_others_finish(moo_run):
    trials = read_leaderboard(moo_run / "leaderboard_trials.csv")
    assert len(trials) == 6
    nan_trials = trials[trials["train.lr"] > 1]
    assert len(nan_trials) == 2 and (nan_trials["status"] == "ERROR").all()
    assert nan_trials["error"].str.contains("loss is nan").all()
    assert (trials[trials["train.lr"] < 1]["status"] == "TERMINATED").all()
    configs = read_leaderboard(moo_run / "leaderboard.csv")
    failed = configs[configs["train.lr"] > 1].iloc[0]
    assert failed["status"] == "ERROR" and failed["rank"] == 3 and "loss is nan" in failed["error"]


def test_seed_groups_aggregate_the_trials_of_each_configuration(moo_run):
    trials = read_leaderboard(moo_run / "leaderboard_trials.csv")
    configs = read_leaderboard(moo_run / "leaderboard.csv")
    assert len(configs) == 3 and configs["train.lr"].nunique() == 3
    for _, row in configs.iterrows():
        mine = trials[trials["config_id"] == row["config_id"]]
        assert sorted(mine["seed"]) == [0, 1] and row["seed_list"] == "0 1"
        assert mine["train.lr"].nunique() == 1
        if row["status"] == "TERMINATED":
            for col in ("gap", "acc_en", "acc_target", "acc_pawsx_ko"):
                assert row[col] == pytest.approx(mine[col].mean())
            assert row["gap_std"] == pytest.approx(np.std(mine["gap"], ddof=1), nan_ok=True)


def test_final_takes_configurations_below_the_constraint_only_when_asked(moo_run):
    from xling_ray.leaderboard.final import final_jobs

    configs = read_leaderboard(moo_run / "leaderboard.csv")
    done = configs[configs["status"] == "TERMINATED"]
    every = final_jobs(moo_run, top=len(configs), split="test", feasible_only=False)
    assert {j["config_id"] for j in every.values()} == set(done["config_id"])
    feasible = final_jobs(moo_run, top=len(configs), split="test")
    assert {j["config_id"] for j in feasible.values()} == set(done.loc[done["feasible"].astype(bool), "config_id"])


def test_final_jobs_from_the_written_leaderboard_equal_those_from_the_trials(moo_run, tmp_path):
    import shutil

    from xling_ray.leaderboard.final import final_jobs
    from xling_ray.leaderboard.table import load_leaderboard

    # a copy of the run that kept only its written leaderboard and search space (a results folder)
    for name in ("leaderboard.csv", "leaderboard_trials.csv", "search_space.yaml"):
        shutil.copy2(moo_run / name, tmp_path / name)
    written = load_leaderboard(tmp_path)
    assert written.metrics == ("gap", "acc_target") and written.constraint.baseline == BASELINE_EN
    for top, feasible_only in ((1, True), (3, False)):
        assert final_jobs(tmp_path, top, "test", seeds=3, feasible_only=feasible_only, board=written) == \
            final_jobs(moo_run, top, "test", seeds=3, feasible_only=feasible_only)
    with pytest.raises(FileNotFoundError, match="leaderboard.csv"):
        load_leaderboard(tmp_path / "nothing")


def test_the_leaderboard_marks_the_pareto_front_of_the_feasible_configurations(moo_run):
    configs = read_leaderboard(moo_run / "leaderboard.csv")
    assert list(configs["feasible"]) == [bool(v >= BASELINE_EN) for v in configs["acc_en"].fillna(-1)]
    # The front is over the finished, feasible configurations that learned (a collapsed one is never on it).
    eligible = configs[(configs["status"] == "TERMINATED") & configs["feasible"] & ~configs["collapsed"]]
    expected = set(eligible.iloc[_brute_force_front(eligible[["gap", "acc_target"]].to_numpy(), ["min", "max"])]["config_id"])
    assert set(configs[configs["pareto"]]["config_id"]) == expected
    # Optuna was told each configuration's mean over its seeds, and its constraint value.
    from optuna.trial import TrialState

    from xling_ray.tune.search import load_study

    study = load_study(moo_run)
    assert len(study.trials) == 3
    assert sum(t.state == TrialState.FAIL for t in study.trials) == 1
    done = {round(t.params["train.lr"], 12): t for t in study.trials if t.state == TrialState.COMPLETE}
    for _, row in configs[configs["status"] == "TERMINATED"].iterrows():
        t = done[round(row["train.lr"], 12)]
        assert t.values == pytest.approx([row["gap"], row["acc_target"]])
        # The floor's slack, and whether it collapsed (infeasible whatever the floor when it did).
        assert t.constraints == {"acc_en": pytest.approx(BASELINE_EN - row["acc_en"]),
                                 "collapsed": float(row["collapsed"])}


def test_at_most_one_checkpoint_per_trial(moo_run):
    for trial_dir in (p for p in moo_run.iterdir() if p.is_dir() and p.name.startswith("run_trial")):
        assert len(list(trial_dir.glob("checkpoint_*"))) <= 1, trial_dir


def test_the_kept_predictions_give_the_leaderboard_its_error_bars(moo_run, capsys):
    from xling_ray.leaderboard import build_leaderboard, format_leaderboard
    from xling_ray.leaderboard.table import load_leaderboard
    from xling_ray.noise import paired_bootstrap, standard_errors

    board = build_leaderboard(moo_run)
    trials = board.trials.set_index("trial_id")
    done = trials[trials["status"] == "TERMINATED"]
    assert set(board.predictions) == set(done.index)  # every finished trial kept its predictions; failed ones none
    for trial_id, kept in board.predictions.items():
        row = done.loc[trial_id]
        for lang, acc in kept.tasks["pawsx"].accuracy().items():
            assert acc == row[f"acc_pawsx_{lang}"]  # exactly: the trial's own accuracies
        assert standard_errors([kept])["gap_se"] == pytest.approx(row["gap_se"], abs=1e-12)
        assert len(kept.tasks["pawsx"].ids) == 12
    configs = board.configs
    ok = configs[configs["status"] == "TERMINATED"]
    for _, row in ok.iterrows():
        seeds = [board.predictions[t] for t in done.index[done["config_id"] == row["config_id"]]]
        assert row["gap_se"] == pytest.approx(standard_errors(seeds)["gap_se"])
        assert row["gap_se_total"] == pytest.approx(math.sqrt(row["gap_std"] ** 2 / 2 + row["gap_se"] ** 2))
    first, second = ok.iloc[0], ok.iloc[1]
    assert first["rank"] == 1 and first["gap_vs_1"] == 0.0
    d = paired_bootstrap([board.predictions[t] for t in first["trial_ids"].split()],
                         [board.predictions[t] for t in second["trial_ids"].split()], seeds_a=[0, 1], seeds_b=[0, 1])
    assert second["gap_vs_1"] == pytest.approx(second["gap"] - first["gap"])
    assert (second["gap_vs_1_low"], second["gap_vs_1_high"]) == pytest.approx((d.low, d.high))
    assert second["within_noise_of_1"] == (not d.beyond_noise)
    printed = format_leaderboard(board)
    assert "within noise of rank 1 (gap minus rank 1's, 95% paired bootstrap over 12 pawsx shared ids" in printed
    assert "gap_se_total" in printed
    # The sweep wrote the predictions beside its leaderboard: read back, the same intervals.
    written = load_leaderboard(moo_run)
    assert set(written.predictions) == set(board.predictions)
    assert "within noise of rank 1 (" in (moo_run / "leaderboard.md").read_text()


def test_export_then_train_reproduces_the_trial_on_cpu(moo_run, tmp_path, capsys):
    out = tmp_path / "best.yaml"
    assert main(["export", str(moo_run), "--rank", "1", "-o", str(out)]) == 0
    exported = yaml.safe_load(out.read_text())
    board = read_leaderboard(moo_run / "leaderboard.csv")
    best = board.iloc[0]
    assert exported["recipe"]["train"]["lr"] == pytest.approx(best["train.lr"])
    assert exported["seeds"] == [0, 1] and exported["recipe"]["train"]["seed"] == 0
    assert exported["source"]["config_id"] == best["config_id"] and exported["source"]["rank"] == 1
    assert exported["source"]["metrics"]["gap"] == pytest.approx(best["gap"])
    assert {"torch", "transformers", "ray", "optuna", "pot", "python", "xling_ray"} <= set(exported["versions"])
    assert exported["recipe"]["model"]["config_overrides"]["hidden_size"] == 64  # the whole recipe, not the searched part

    model_dir = tmp_path / "model"
    assert main(["train", str(out), "--output", str(model_dir)]) == 0
    metrics = json.loads((model_dir / "metrics.json").read_text())
    trial = next(t for t in exported["source"]["trials"] if t["seed"] == 0)
    for key, value in trial["metrics"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir / "pawsx")
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "pawsx")
    assert model.config.num_labels == 2 and tokenizer("Hallo Welt")["input_ids"]
    assert yaml.safe_load((model_dir / "recipe.yaml").read_text())["recipe"]["train"]["lr"] == pytest.approx(best["train.lr"])


def test_final_retrains_the_top_configurations_with_their_seeds_on_the_test_split(moo_run):
    assert main(["final", str(moo_run), "--top", "2", "--split", "test", "--quiet"]) == 0
    final = read_leaderboard(moo_run / "final_test_leaderboard.csv")
    sweep = read_leaderboard(moo_run / "leaderboard.csv")
    top = sweep[(sweep["status"] == "TERMINATED") & sweep["feasible"]].head(2)
    assert set(final["config_id"]) == set(top["config_id"]) and (final["status"] == "TERMINATED").all()
    jobs = json.loads((moo_run / "final-test-jobs.json").read_text())
    assert len(jobs) == 2 * len(top) and {j["recipe"]["data"]["split"] for j in jobs.values()} == {"test"}
    # The test files are copies of validation: the same recipe and seed must give the same figures.
    trials = read_leaderboard(moo_run / "final_test_leaderboard_trials.csv")
    sweep_trials = read_leaderboard(moo_run / "leaderboard_trials.csv")
    for _, t in trials.iterrows():
        s = sweep_trials[(sweep_trials["config_id"] == t["config_id"]) & (sweep_trials["seed"] == t["seed"])].iloc[0]
        for col in ("acc_en", "acc_pawsx_ja", "gap", "gap_se"):
            assert t[col] == pytest.approx(s[col], abs=1e-9)
    # The final's leaderboard gives intervals: its error bars and its configurations against rank 1, from the
    # predictions each final trial kept (the same as the sweep's: the test files are copies).
    assert {"gap_se", "gap_se_total", "gap_vs_1", "gap_vs_1_low", "gap_vs_1_high"} <= set(final.columns)
    assert final.loc[0, "gap_vs_1"] == 0.0 and final["gap_vs_1_low"].iloc[1:].notna().all()
    assert "within noise of rank 1 (" in (moo_run / "final_test_leaderboard.md").read_text()
    from xling_ray.leaderboard.table import read_predictions

    kept, searched = read_predictions(moo_run, "final_test_leaderboard"), read_predictions(moo_run)
    by_seed = {(r["config_id"], r["seed"]): r["trial_id"] for _, r in sweep_trials.iterrows()}
    for _, t in trials.iterrows():
        mine, theirs = kept[t["trial_id"]].tasks["pawsx"], searched[by_seed[(t["config_id"], t["seed"])]].tasks["pawsx"]
        assert all((mine.predicted[l] == theirs.predicted[l]).all() for l in mine.predicted)


def test_export_refuses_a_failed_rank(moo_run, capsys):
    assert main(["export", str(moo_run), "--rank", "3", "-o", "x.yaml"]) == 2
    assert "ERROR" in capsys.readouterr().err


# ---------------------------------------------------------------- resume after SIGKILL


def _result_lines(trial_dir: Path) -> list[dict]:
    f = trial_dir / "result.json"
    return [json.loads(l) for l in f.read_text().splitlines() if l.strip()] if f.exists() else []


def test_a_sweep_killed_mid_trial_resumes_without_losing_or_repeating_trials(tiny_recipe, tmp_path):
    epochs, n = 3, 2  # the first finishes, the second is killed after a checkpoint
    recipe = tiny_recipe.with_updates({"data.tasks": ["pawsx"], "train.epochs": epochs, "data.train_size": 96})
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "recipe": recipe.model_dump(), "search": {"train.lr": {"loguniform": [1e-4, 1e-3]}},
        "sweep": {"num_samples": n, "seeds": 1, "seed": 3, "max_concurrent_trials": 1},
    }))
    run = tmp_path / "runs" / "killed"
    mlruns = f"file:{tmp_path / 'mlruns'}"
    cmd = [sys.executable, "-m", "xling_ray.cli", "sweep", str(space), "--storage", str(tmp_path / "runs"),
           "--name", "killed", "--quiet", "--mlflow", mlruns]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_in = None
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            trial_dirs = [p for p in run.glob("run_trial*") if p.is_dir()] if run.exists() else []
            lines = {p: _result_lines(p) for p in trial_dirs}
            finished = [p for p, l in lines.items() if len(l) == epochs]
            partial = [p for p, l in lines.items() if 0 < len(l) < epochs and list(p.glob("checkpoint_*"))]
            if finished and partial:
                killed_in = partial[0]
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, without a chance to clean up
        proc.wait()
    assert killed_in is not None, "the sweep never had a finished and a half-done trial at once"
    before = {p.name: len(_result_lines(p)) for p in run.glob("run_trial*")}
    time.sleep(1)

    assert main(["sweep", "--resume", str(run), "--quiet"]) == 0
    configs = read_leaderboard(run / "leaderboard.csv")
    assert len(configs) == n and (configs["status"] == "TERMINATED").all()
    assert configs["train.lr"].nunique() == n  # none repeated
    # The interrupted trial went on from its checkpoint: epoch 1 was reported once.
    epochs_seen = [r["epoch"] for r in _result_lines(killed_in)]
    assert epochs_seen.count(1.0) == 1 and epochs_seen[-1] == epochs
    # Finished trials were not run again.
    for name, count in before.items():
        if count == epochs:
            assert len(_result_lines(run / name)) == epochs, name
    from optuna.trial import TrialState

    from xling_ray.tune.search import load_study

    study = load_study(run)
    assert len(study.trials) == n and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert sorted(round(t.params["train.lr"], 12) for t in study.trials) == sorted(round(v, 12) for v in configs["train.lr"])
    # The study's journal (what optuna-dashboard opens) went on too: every configuration told once.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = optuna.load_study(study_name="killed", storage=JournalStorage(JournalFileBackend(str(run / "optuna.journal"))))
    complete = [t for t in journal.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n and not [t for t in journal.trials if t.state == TrialState.RUNNING]
    assert sorted(t.values[0] for t in complete) == pytest.approx(sorted(t.values[0] for t in study.trials))
    # MLflow: the same parent run went on; one run per trial, each report logged once.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlruns)
    runs = client.search_runs([client.get_experiment_by_name("xling-ray").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == n and len({r.data.tags["trial_id"] for r in children}) == n
    for r in children:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "epoch")]
        assert sorted(steps) == list(range(1, epochs + 1)), (r.data.tags["trial_id"], steps)
        assert r.info.status == "FINISHED"


def test_a_second_sweep_into_an_existing_run_folder_is_refused(tiny_recipe, tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({"recipe": tiny_recipe.model_dump(), "sweep": {"num_samples": 1, "seeds": 1}}))
    assert main(["sweep", str(space), "--storage", str(tmp_path / "runs"), "--name", "x", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path / "runs" / "nothing"), "--quiet"]) == 2


