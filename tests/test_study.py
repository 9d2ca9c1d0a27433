"""The study's statistics (bench/study/run.py): the seed-noise screen and the verdicts."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xling_ray.noise import Predictions, TaskPredictions

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


def test_a_gap_closed_by_losing_english_is_not_a_win():
    plain = pd.DataFrame({"gap": [7.0, 7.2, 6.8], "acc_target": [54.0, 54.5, 53.5], "acc_en": [61.0, 61.7, 60.3]})
    # XLingLearn's pattern in bench/study: the gap fell 4.5 points, target accuracy held, English fell 5
    lower_en = plain.assign(gap=plain["gap"] - 4.5, acc_en=plain["acc_en"] - 5.0)
    assert study.verdict(lower_en, plain) == "closed by losing English"
    # the same English drop with target accuracy risen beyond the noise: transfer gained, a win
    assert study.verdict(lower_en.assign(acc_target=plain["acc_target"] + 3.0), plain) == "closed"
    # English within its noise: closed
    assert study.verdict(lower_en.assign(acc_en=plain["acc_en"] - 0.2), plain) == "closed"


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


RECIPE = {"model": {"pooling": "auto", "max_length": 128},
          "data": {"tasks": ["xnli", "pawsx"], "train_size": 2000, "eval_max_per_language": 200,
                   "eval_skip_first": {"xnli": 1245, "pawsx": 1000}},
          "train": {"epochs": 1, "lr": 1e-4, "head_lr": 1e-3, "warmup_ratio": 0.1, "batch_size": 16},
          "scaling": {"mixed_precision": "bf16"}}
ARGS = argparse.Namespace(smoke=False, seeds=3, final_eval=300, english_drop=4.0, wide=1.5)
N = 600  # held-out ids per language


def _task(en, target):
    """A task's kept predictions in English and German from 1 (right) or 0 (wrong) per id."""
    ones = np.ones(N, np.int8)
    return TaskPredictions(np.array([str(i) for i in range(N)]),
                           {"en": en.astype(np.int8), "de": target.astype(np.int8)}, {"en": ones, "de": ones})


def _kept(en: list[int], de: list[int]) -> list:
    """Each seed's predictions, right on its first ``en`` English and ``de`` German ids of both tasks."""
    first = lambda k: (np.arange(N) < k).astype(int)  # noqa: E731
    return [Predictions({t: _task(first(e), first(g)) for t in ("xnli", "pawsx")}, 1.0) for e, g in zip(en, de)]


def _final_with_predictions(results: Path, method: str, seeds: list, space: dict,
                            search_rows: list[dict] | None = None) -> None:
    """A run whose final kept its predictions (:func:`_kept`): the trials' figures computed from them, as a
    final writes; its search's leaderboard ``search_rows`` (default one configuration)."""
    from xling_ray.leaderboard.table import LANGUAGE_COLUMNS
    from xling_ray.metrics import summarize
    from xling_ray.noise import save_predictions_table

    run = results / method
    run.mkdir(parents=True)
    rows = []
    for s, p in enumerate(seeds):
        row = {"trial_id": f"{method}{s}", "status": "TERMINATED", "config_id": "c0", "seed": s, "collapsed": 0.0,
               **summarize({t: tp.accuracy() for t, tp in p.tasks.items()})}
        rows.append(row)
    trials = pd.DataFrame(rows)
    for col in LANGUAGE_COLUMNS:  # the per-language table reads every language
        if col not in trials:
            trials[col] = trials["acc_target"]
    trials.to_csv(run / "final_heldout_leaderboard_trials.csv", index=False)
    numeric = trials.drop(columns=["trial_id", "status", "config_id"])
    final = {"config_id": "c0", **numeric.mean().to_dict()}
    final.update({f"{c}_std": trials[c].std(ddof=1) for c in study.columns(["xnli", "pawsx"])})
    pd.DataFrame([final]).to_csv(run / "final_heldout_leaderboard.csv", index=False)
    (run / "final_heldout_leaderboard_predictions.npz").write_bytes(
        save_predictions_table({f"{method}{s}": p for s, p in enumerate(seeds)}))
    pd.DataFrame(search_rows or [{"config_id": "a1", "gap": 0.5, "acc_en": 71.0, "collapsed": False}]).to_csv(
        run / "leaderboard.csv", index=False)
    (run / "search_space.yaml").write_text(yaml.safe_dump(space))

def test_results_page_is_written_from_the_runs_numbers(tmp_path):
    results = tmp_path / "results"
    english = [420, 423, 417]  # 70.0, 70.5, 69.5 % of 600
    per_method = {  # right English and German ids per seed, the same in both tasks: one of each verdict
        "plain": _kept(english, [360] * 3),  # gap 10.0, 10.5, 9.5
        "xlinglearn": _kept(english, [420] * 3),  # German +10: gap -10, target +10
        "ding2022": _kept([300] * 3, [300] * 3),  # English -20, German -10: gap -10, target -10
        "xite": _kept(english, [300] * 3),  # German -10: gap +10
        "adjustment": _kept(english, [360] * 3),  # plain's predictions
        "continual": _kept([e - 60 for e in english], [300] * 3),  # both -10: gap unchanged, target -10
    }
    default = {"losses.xite.ratio": 0.5}
    floor = {"metric": "acc_en", "baseline": 71.0, "delta": 4.0}
    for method, seeds in per_method.items():
        searched = {} if method == "plain" else {"losses.xite.ratio": {"uniform": [0.25, 1.0]}}
        rows = [{"config_id": "a1", "gap": 0.5, "acc_en": 71.0, "collapsed": False,
                 **({"losses.xite.ratio": 0.5} if searched else {})}]
        if method == "xite":  # its best search configuration is not the default one
            rows[0]["losses.xite.ratio"] = 0.8
        sweep = {"points_to_evaluate": [default] if searched else [], **({"constraint": floor} if searched else {})}
        _final_with_predictions(results, method, seeds, {"recipe": RECIPE, "search": searched, "sweep": sweep}, rows)
    (results / "timings.json").write_text(json.dumps({"plain/search": 600.0, "plain/final": 600.0}))

    text = study.write_results(results, ARGS).read_text()

    assert (tmp_path / "RESULTS.md").exists() and (tmp_path / "gaps.png").stat().st_size > 0
    assert (tmp_path / "accuracy.png").exists() and (tmp_path / "gap_vs_target.png").exists()
    assert "the stages took 20 minutes" in text and "Not run yet" not in text
    assert "2,000 English pairs per task for 1 epoch(s), pairs up to 128 tokens, learning rate 0.0001" in text
    assert ("| plain | 10.00 ± 0.50 | 60.00 ± 0.00 | 70.00 ± 0.50 | 10.00 ± 0.50 | 10.00 ± 0.50 | 70.00 ± 0.50 "
            "| 70.00 ± 0.50 | 3 | 0 | 1 |") in text
    assert next(l for l in text.splitlines() if l.startswith("| xlinglearn | -10.00 [")).endswith(
        "| closed | seeds and 1,200 held-out ids (paired bootstrap) |")
    assert "| adjustment | +0.00 [+0.00, +0.00] | +0.00 [+0.00, +0.00] |" in text
    assert "without losing target accuracy: xlinglearn." in text
    assert "(target accuracy fell beyond noise too): ding2022." in text
    assert "(English fell beyond noise, target accuracy did not rise beyond it): none." in text
    assert "Widened the gap beyond noise: xite." in text and "Within noise: adjustment." in text
    assert "while target accuracy fell beyond it: continual." in text
    assert "| xnli_de | 60.0 | 70.0 | 50.0 | 50.0 | 60.0 | 50.0 |" in text
    assert "English accuracy 71.0 minus 4 = 67.0" in text
    lines = {line.split("**")[1]: line for line in text.splitlines() if line.startswith("- **")}
    assert "The method's default configuration" in lines["xlinglearn"]
    assert "Not the method's default configuration" in lines["xite"]
    assert "Wall time: search 10 min for 1 configuration (10.0 a trial); final 10 min for 3 seeds (3.3 a trial)." in lines["plain"]
    # the published references, gap = en - (n mean - en) / (n - 1): MiniLM's XNLI 81.5 - (15 * 71.1 - 81.5) / 14
    assert "| multilingual MiniLM-L12-H384 (Wang et al. 2020) | 81.5 | 71.1 | 11.1 | — | — | — |" in text
    assert "| mBERT (XTREME, Hu et al. 2020) | 80.8 | 65.4 | 16.5 | 94.0 | 81.9 | 14.1 |" in text
    # this study's rows in the same columns: plain's XNLI mean over its 15 languages (English 70, the others 60)
    assert f"| plain (this study) | 70.0 | {(70 + 14 * 60.0) / 15:.1f} | 10.0 |" in text


def test_results_page_lists_the_runs_not_run_yet(tmp_path):
    results = tmp_path / "results"
    _final_with_predictions(results, "plain", _kept([420, 423, 417], [360] * 3),
                            {"recipe": RECIPE, "search": {}, "sweep": {}})
    (results / "xite").mkdir()  # searched, final not finished: not a finished run

    text = study.write_results(results, ARGS).read_text()

    assert "**Not run yet:** xlinglearn, ding2022, xite, adjustment, continual" in text
    assert "the first 1,245 XNLI, 1,000 PAWS-X validation examples are the target-text pool" in text
    assert "| plain | 10.00 ± 0.50 |" in text and "| xite |" not in text and "## Against plain" not in text


def test_one_task_compares_the_headline_numbers_only():
    assert study.columns(["xnli"]) == ["gap", "acc_target", "acc_en"]
    assert study.columns(["xnli", "pawsx"]) == ["gap", "acc_target", "acc_en", "gap_xnli", "gap_pawsx",
                                                "acc_xnli_en", "acc_pawsx_en"]


def test_a_finished_stage_is_kept_and_not_run_again_on_another_machine(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    (runs / "xite").mkdir(parents=True)
    (results / "plain").mkdir(parents=True)
    (results / "timings.json").write_text(json.dumps({"plain/search": 60.0, "plain/final": 300.0}))
    (runs / "timings.json").write_text(json.dumps({"xite/search": 90.0}))  # this machine ran xite only
    for name in ("leaderboard.csv", "search_space.yaml", "optuna.journal"):
        (runs / "xite" / name).write_text("x\n")
    args = argparse.Namespace(results=str(results), storage=str(runs))

    study.keep(runs / "xite", args)

    assert sorted(p.name for p in (results / "xite").iterdir()) == ["leaderboard.csv", "search_space.yaml"]
    assert json.loads((results / "timings.json").read_text()) == {"plain/search": 60.0, "plain/final": 300.0,
                                                                  "xite/search": 90.0}
    # plain's final is in the results folder: its stage is done, though its run folder is not here
    (results / "plain" / "final_heldout_leaderboard_trials.csv").write_text("gap\n1.0\n")
    assert study.done_runs(results) == ["plain"]
    assert study.run_stage("plain", args) == runs / "plain" and not (runs / "plain").exists()


def test_a_finished_search_is_restored_from_the_results_folder_and_not_run_again(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = argparse.Namespace(results=str(results), storage=str(runs))
    (results / "xlinglearn").mkdir(parents=True)
    (results / "xlinglearn" / "leaderboard.csv").write_text("rank,config_id\n1,5e8aa1d5\n")
    assert not study.restore_search("xlinglearn", args)  # a search the results folder does not hold whole
    for name in ("leaderboard.md", "leaderboard_trials.csv", "search_space.yaml"):
        (results / "xlinglearn" / name).write_text(name)

    assert study.restore_search("xlinglearn", args)

    run_dir = runs / "xlinglearn"
    assert sorted(p.name for p in run_dir.iterdir()) == ["leaderboard.csv", "leaderboard.md",
                                                         "leaderboard_trials.csv", "search_space.yaml"]
    assert (run_dir / "search_space.yaml").read_text() == "search_space.yaml"


def test_the_studys_plain_run_is_the_products_plain_baseline(data_dir):
    """Plain fine-tuning in the study is xling_ray.tune.space.plain_point of the space: every
    method off (no term weighs anything), at the study's learning budget and learning rate."""
    from xling_ray.methods.base import active_methods
    from xling_ray.tune.space import load_search_space, plain_point

    args = argparse.Namespace(data_dir=str(data_dir), search_eval=300, smoke=False, samples=8)
    space = study.study_space("plain", args)
    assert space.search == {} and not active_methods(space.recipe.losses)
    shipped = load_search_space(_PATH.parents[2] / "search_spaces" / "xlinglearn.yaml")
    expected = shipped.recipe.with_updates(plain_point(shipped.recipe, shipped.search, shipped.sweep.points_to_evaluate))
    assert space.recipe.losses.methods() == expected.losses.methods()  # the pool follows the study's tasks
    assert (space.recipe.train.lr, space.recipe.data.train_size, space.recipe.data.tasks) == (1.0e-4, 4000, ("xnli",))


def test_results_page_gives_paired_intervals_against_plain_where_the_finals_kept_predictions(tmp_path):
    rng = np.random.default_rng(0)
    plain, lower = [], []
    for _ in range(3):
        x_en, x_de, p_en, p_de = ((rng.random(N) < q).astype(int) for q in (0.7, 0.6, 0.7, 0.6))
        plain.append(Predictions({"xnli": _task(x_en, x_de), "pawsx": _task(p_en, p_de)}, 1.0))
        dropped = x_en.copy()
        dropped[np.flatnonzero(dropped)[:60]] = 0  # XNLI English loses 60 of 600 ids: -10 points, gap -10
        lower.append(Predictions({"xnli": _task(dropped, x_de), "pawsx": _task(p_en, p_de)}, 1.0))
    results = tmp_path / "results"
    floor = {"metric": "acc_en", "baseline": 71.0, "delta": 4.0}
    _final_with_predictions(results, "plain", plain, {"recipe": RECIPE, "search": {}, "sweep": {}})
    _final_with_predictions(results, "xlinglearn", lower, {"recipe": RECIPE, "search": {},
                                                           "sweep": {"constraint": floor}})

    text = study.write_results(results, ARGS).read_text()

    d = study.paired_tests(study.final_predictions(results, "xlinglearn", pd.read_csv(
        results / "xlinglearn" / "final_heldout_leaderboard_trials.csv")), study.final_predictions(
        results, "plain", pd.read_csv(results / "plain" / "final_heldout_leaderboard_trials.csv")), study.columns(
        ["xnli", "pawsx"]))
    # The headline gap and English fall by 5 (the mean of the tasks' -10 and 0), XNLI's gap by 10; targets unchanged.
    assert d["gap"].diff == pytest.approx(-5.0) and d["gap_xnli"].diff == pytest.approx(-10.0)
    assert d["acc_en"].diff == pytest.approx(-5.0) and d["acc_target"].diff == 0.0
    assert d["gap_pawsx"].low == d["gap_pawsx"].high == 0.0 and d["gap"].paired_seeds
    assert d["gap"].high < 0 and d["acc_en"].high < 0 and d["acc_target"].low == d["acc_target"].high == 0.0
    row = next(l for l in text.splitlines() if l.startswith("| xlinglearn | -5.00 ["))
    assert f"| -5.00 [{d['gap'].low:+.2f}, {d['gap'].high:+.2f}] |" in row
    assert row.endswith("| closed by losing English | seeds and 1,200 held-out ids (paired bootstrap) |")
    assert "(English fell beyond noise, target accuracy did not rise beyond it): xlinglearn." in text
    # a final without its predictions has no paired interval: the page is not written, and the error says how
    # to rerun that final
    (results / "xlinglearn" / "final_heldout_leaderboard_predictions.npz").unlink()
    with pytest.raises(SystemExit, match=r"^xlinglearn: its final kept no predictions .* remove the "
                       r"final_heldout_leaderboard\* files from .*xlinglearn .* `python bench/study/run.py "
                       r"--data-dir ../shared/data` again"):
        study.write_results(results, ARGS)
