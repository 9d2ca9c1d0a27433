"""The gap's sampling error and the paired bootstrap (xling_ray.noise), on constructed
predictions whose values are known by hand, and the predictions a trial keeps."""
from __future__ import annotations

import math

import numpy as np
import pytest

from xling_ray.noise import (Predictions, TaskPredictions, binomial_se, combined_standard_error, load_predictions_table,
                             paired_bootstrap, per_id_scores, save_predictions_table, size_for, standard_error,
                             standard_errors)


def task(correct: dict[str, list[int]], ids=None) -> TaskPredictions:
    """A task whose label is 1 everywhere; the model predicts 1 where ``correct`` is 1, else 0."""
    n = len(next(iter(correct.values())))
    ids = np.array([str(i) for i in range(n)]) if ids is None else np.asarray(ids)
    return TaskPredictions(ids, {l: np.asarray(c, dtype=np.int8) for l, c in correct.items()},
                           {l: np.ones(n, dtype=np.int8) for l in correct})


def test_gap_se_of_a_constructed_set_is_the_binomial_value():
    # English right on 60 of 100 ids, both targets always right: d(i) = c_en(i) - 1, so the gap's error is
    # English's binomial error, 100 sqrt(0.6 * 0.4 / 100) = 4.8990 points.
    p = Predictions({"xnli": task({"en": [1] * 60 + [0] * 40, "de": [1] * 100, "fr": [1] * 100})})
    se = standard_errors([p])
    assert se["gap_se"] == pytest.approx(100 * math.sqrt(0.6 * 0.4 / 100))
    assert se["gap_se"] == pytest.approx(4.898979, abs=1e-6)
    assert se["gap_xnli_se"] == se["gap_se"]
    assert se["acc_en_se"] == pytest.approx(4.898979, abs=1e-6)
    assert se["acc_target_se"] == 0.0
    assert binomial_se(100) == pytest.approx(4.898979, abs=1e-6)


def test_gap_se_counts_the_shared_ids_once():
    # English and the one target right on the same 50 of 100 ids: d = 0 everywhere, no error at all,
    # although each accuracy alone has 100 sqrt(.25 / 100) = 5 points.
    right = [1] * 50 + [0] * 50
    se = standard_errors([Predictions({"xnli": task({"en": right, "de": right})})])
    assert se["gap_se"] == 0.0
    assert se["acc_en_se"] == pytest.approx(5.0)
    # The target wrong exactly where English is right: d = +-1, gap se = 100 sqrt(1 / 100) = 10.
    flipped = [0] * 50 + [1] * 50
    assert standard_errors([Predictions({"xnli": task({"en": right, "de": flipped})})])["gap_se"] == pytest.approx(10.0)


def test_headline_se_over_two_tasks_and_over_seeds():
    # Two tasks, each with a gap se of 4.899 (60 % English, targets right): the headline is their mean,
    # se = sqrt(4.899^2 + 4.899^2) / 2 = 4.899 / sqrt(2) = 3.4641.
    t = task({"en": [1] * 60 + [0] * 40, "de": [1] * 100})
    se = standard_errors([Predictions({"xnli": t, "pawsx": t})])
    assert se["gap_se"] == pytest.approx(100 * math.sqrt(0.24 / 100) / math.sqrt(2))
    # Two seeds: the seed-averaged per-id score. Seed 1 right in English on ids 0-59, seed 2 on ids 40-99:
    # the average c_en is 1 on the 20 ids both got right, 0.5 on the other 80; mean 0.6,
    # var = 0.2 * 0.4^2 + 0.8 * 0.1^2 = 0.04, se = 100 sqrt(0.04 / 100) = 2.
    a = Predictions({"xnli": task({"en": [1] * 60 + [0] * 40, "de": [1] * 100})})
    b = Predictions({"xnli": task({"en": [0] * 40 + [1] * 60, "de": [1] * 100})})
    assert standard_errors([a, b])["gap_se"] == pytest.approx(2.0)


def test_bootstrap_by_resampling_agrees_with_the_closed_form():
    rng = np.random.default_rng(1)
    x = 100.0 * rng.integers(0, 2, 400)
    draws = rng.integers(0, len(x), (4000, len(x)))
    assert x[draws].mean(1).std() == pytest.approx(standard_error({"t": x}, {"t": 1.0}), rel=0.05)


def test_combined_error_adds_seed_spread_and_sampling_error_in_quadrature():
    assert combined_standard_error(3.0, 3, 1.0) == pytest.approx(2.0)  # sqrt(9 / 3 + 1)
    assert combined_standard_error(float("nan"), 1, 1.5) == 1.5


def test_evaluation_size_for_one_point():
    assert size_for(1.0) == 2401  # 100^2 * 0.6 * 0.4 = 2400 gives exactly 1 point
    assert binomial_se(2401) < 1.0 <= binomial_se(2400)
    assert round(binomial_se(300), 1) == 2.8 and round(binomial_se(600), 1) == 2.0


def _config(shift: int, n: int, seeds: int = 3, rng_seed: int = 0) -> list[Predictions]:
    """``seeds`` models on ``n`` ids: English right on a random 60 %, then ``shift`` more ids wrong in
    English (each lowers the gap by 100 / n points); the target right on a random 50 %."""
    rng = np.random.default_rng(rng_seed)
    out = []
    for _ in range(seeds):
        en = (rng.random(n) < 0.6).astype(int)
        right = np.flatnonzero(en)[:shift]
        en[right] = 0
        out.append(Predictions({"xnli": task({"en": en, "de": (rng.random(n) < 0.5).astype(int)})}))
    return out


def test_paired_bootstrap_of_a_configuration_against_itself_is_centred_on_0():
    a = _config(0, 300)
    d = paired_bootstrap(a, a, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert d.diff == 0.0 and d.low == 0.0 and d.high == 0.0 and not d.beyond_noise
    # With its seeds in another order (unpaired seeds), the difference is still 0 and its interval holds 0,
    # centred: the replicates' mean is within a tenth of their spread of 0.
    d = paired_bootstrap(a, a[::-1], seeds_a=[0, 1, 2], seeds_b=[2, 1, 0])
    assert d.diff == pytest.approx(0.0, abs=1e-12) and d.low < 0 < d.high and not d.beyond_noise
    assert abs(d.samples.mean()) < 0.1 * d.samples.std()


def test_paired_bootstrap_five_points_on_2000_ids_is_beyond_noise_one_point_on_100_is_not():
    # b loses English on 100 of 2,000 ids that a got right, at every seed: its gap is 5 points lower.
    base = _config(0, 2000)
    lower = [Predictions({"xnli": task({"en": _drop(p.tasks["xnli"].predicted["en"], 100),
                                        "de": p.tasks["xnli"].predicted["de"]})}) for p in base]
    d = paired_bootstrap(base, lower, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert d.diff == pytest.approx(-5.0)
    assert d.beyond_noise and d.high < 0
    # One point on 100 ids: one English id lost. Within noise.
    small = _config(0, 100)
    lower = [Predictions({"xnli": task({"en": _drop(p.tasks["xnli"].predicted["en"], 1),
                                        "de": p.tasks["xnli"].predicted["de"]})}) for p in small]
    d = paired_bootstrap(small, lower, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert d.diff == pytest.approx(-1.0)
    assert not d.beyond_noise and d.low < 0 and d.high >= 0


def _drop(en: np.ndarray, k: int) -> np.ndarray:
    """``en`` with its first ``k`` right answers made wrong."""
    en = en.astype(int).copy()
    en[np.flatnonzero(en)[:k]] = 0
    return en


def test_paired_bootstrap_is_antisymmetric_and_reproducible():
    a, b = _config(0, 500), _config(20, 500, rng_seed=0)
    ab = paired_bootstrap(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    ba = paired_bootstrap(b, a, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert ab.diff == pytest.approx(-20 * 100 / 500) == pytest.approx(-ba.diff)
    assert (ab.low, ab.high) == pytest.approx((-ba.high, -ba.low))
    again = paired_bootstrap(a, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert (again.low, again.high) == (ab.low, ab.high)


def test_paired_bootstrap_aligns_ids():
    # The same predictions listed in another id order: no difference at all.
    p = task({"en": [1, 0, 1, 1], "de": [0, 0, 1, 1]}, ids=["a", "b", "c", "d"])
    q = p.select(["d", "c", "b", "a"])
    d = paired_bootstrap([Predictions({"xnli": p})], [Predictions({"xnli": q})])
    assert d.diff == 0.0 and d.low == d.high == 0.0


def test_per_id_scores_give_the_reported_metrics():
    p = task({"en": [1, 1, 0, 1], "de": [1, 0, 0, 0], "fr": [0, 1, 1, 0]})
    assert per_id_scores(p, "gap").mean() == pytest.approx(75.0 - (25.0 + 50.0) / 2)
    assert per_id_scores(p, "acc_target").mean() == pytest.approx(37.5)
    assert p.accuracy() == {"en": 75.0, "de": 25.0, "fr": 50.0}


def test_predictions_round_trip_through_npz():
    p = Predictions({"xnli": task({"en": [1, 0, 1], "de": [0, 0, 1]}, ids=["7", "8", "9"]),
                     "pawsx": task({"en": [1, 1], "ja": [0, 1]})}, epoch=1.0)
    back = Predictions.from_bytes(p.to_bytes())
    assert back.epoch == 1.0 and set(back.tasks) == {"xnli", "pawsx"}
    assert list(back.tasks["xnli"].ids) == ["7", "8", "9"]
    assert back.tasks["xnli"].predicted["de"].dtype == np.int8
    assert back.tasks["xnli"].accuracy() == p.tasks["xnli"].accuracy()
    table = load_predictions_table(save_predictions_table({"t1": p, "t2": back}))
    assert set(table) == {"t1", "t2"} and table["t2"].tasks["pawsx"].accuracy() == {"en": 100.0, "ja": 50.0}


def test_kept_predictions_reproduce_the_trials_accuracies(tiny_recipe, tmp_path):
    from xling_ray.noise import PREDICTIONS_FILE
    from xling_ray.train import LocalSession, run_recipe

    recipe = tiny_recipe.with_updates({"data.tasks": ["xnli", "pawsx"], "train.epochs": 1})
    last = run_recipe(recipe, LocalSession(checkpoint_root=str(tmp_path)))
    kept = Predictions.from_bytes((tmp_path / "latest" / PREDICTIONS_FILE).read_bytes())
    assert kept.epoch == last["epoch"] == 1.0
    for t, p in kept.tasks.items():
        assert len(p.ids) == 12 and p.predicted["en"].dtype == np.int8
        assert set(p.predicted) == {k.removeprefix(f"acc_{t}_") for k in last
                                    if k.startswith(f"acc_{t}_") and not k.endswith("_target")}
        for lang, acc in p.accuracy().items():
            assert acc == last[f"acc_{t}_{lang}"]  # exactly: the same predictions
    se = standard_errors([kept])
    assert set(se) == {"gap_se", "gap_xnli_se", "gap_pawsx_se", "acc_en_se", "acc_target_se"}
    for k, v in se.items():
        assert last[k] == pytest.approx(v, abs=1e-12)
    # The kept ids are the evaluated ones: the data's English ids drawn by the cap.
    from xling_ray.data import load_eval_sets

    sets = load_eval_sets(recipe.data)
    assert list(kept.tasks["xnli"].ids) == list(sets["xnli"]["en"].ids)
    assert list(kept.tasks["pawsx"].labels["ja"]) == list(sets["pawsx"]["ja"].labels)


def _trials(configs: dict[str, list[Predictions]]) -> "pd.DataFrame":
    """Leaderboard trial rows of constructed configurations (seed i = the i-th predictions), with the
    metrics each trial would report."""
    import pandas as pd

    from xling_ray.metrics import summarize

    rows = []
    for cid, seeds in configs.items():
        for s, p in enumerate(seeds):
            rows.append({"trial_id": f"{cid}{s}", "status": "TERMINATED", "config_id": cid, "seed": s,
                         **summarize({t: tp.accuracy() for t, tp in p.tasks.items()}), **standard_errors([p]),
                         "collapsed": 0.0, "epoch": 1.0, "train.lr": {"a": 1e-4, "b": 2e-4, "c": 3e-4}[cid],
                         "error": ""})
    return pd.DataFrame(rows)


def test_leaderboard_columns_and_notes_say_which_configurations_are_within_noise_of_rank_1():
    from xling_ray.leaderboard.table import Leaderboard, format_leaderboard, group_configs, leaderboard_notes
    from xling_ray.leaderboard.intervals import add_noise

    a = _config(0, 2000)                                   # rank 3: the highest gap
    b = [Predictions({"xnli": task({"en": _drop(p.tasks["xnli"].predicted["en"], 2),
                                    "de": p.tasks["xnli"].predicted["de"]})}) for p in a]     # 0.1 below a
    c = [Predictions({"xnli": task({"en": _drop(p.tasks["xnli"].predicted["en"], 120),
                                    "de": p.tasks["xnli"].predicted["de"]})}) for p in a]     # 6 below a
    configs = {"a": a, "b": b, "c": c}
    trials = _trials(configs)
    predictions = {f"{cid}{s}": p for cid, seeds in configs.items() for s, p in enumerate(seeds)}
    ranked = group_configs(trials)
    board = add_noise(ranked, trials, predictions)
    assert list(board["config_id"]) == ["c", "b", "a"] == list(ranked["config_id"])  # the ranking is untouched
    assert list(board.columns[board.columns.get_loc("gap_std") + 1:][:2]) == ["gap_se", "gap_se_total"]
    for _, row in board.iterrows():
        se = standard_errors(configs[row["config_id"]])["gap_se"]
        assert row["gap_se"] == pytest.approx(se)
        assert row["gap_se"] <= trials.loc[trials["config_id"] == row["config_id"], "gap_se"].mean() + 1e-12
        assert row["gap_se_total"] == pytest.approx(math.sqrt(row["gap_std"] ** 2 / 3 + se**2))
    assert board.loc[0, "gap_vs_1"] == 0.0 and pd_isna(board.loc[0, "gap_vs_1_low"])
    b_row, a_row = board.iloc[1], board.iloc[2]
    assert b_row["gap_vs_1"] == pytest.approx(5.9) and a_row["gap_vs_1"] == pytest.approx(6.0)
    expected = paired_bootstrap(c, b, seeds_a=[0, 1, 2], seeds_b=[0, 1, 2])
    assert (b_row["gap_vs_1_low"], b_row["gap_vs_1_high"]) == pytest.approx((expected.low, expected.high))
    assert not b_row["within_noise_of_1"] and not a_row["within_noise_of_1"]
    notes = leaderboard_notes(Leaderboard(board, trials, predictions=predictions))
    assert notes[-1].startswith("within noise of rank 1 (gap minus rank 1's, 95% paired bootstrap over 2000 xnli "
                                "shared ids and the seeds): none; beyond noise: rank 2 b (+5.90 [")
    # b against a alone: 0.1 points on 2,000 ids is within noise.
    near = add_noise(group_configs(_trials({"a": a, "b": b})), _trials({"a": a, "b": b}), predictions)
    assert near.loc[1, "within_noise_of_1"] and near.loc[1, "gap_vs_1_low"] <= 0 < near.loc[1, "gap_vs_1_high"]
    printed = format_leaderboard(Leaderboard(near, _trials({"a": a, "b": b}), predictions=predictions))
    assert "within noise of rank 1 (" in printed and "rank 2 a (+0.10 [" in printed and "gap_se_total" in printed


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_a_sweep_states_its_evaluation_noise_at_start(tiny_recipe):
    from xling_ray.tune.sweep import evaluation_sizes, noise_line

    # 100 pairs: 100 sqrt(.24 / 100) = 4.90; 2,401 brings it under 1 point.
    assert noise_line({"xnli": 100}).startswith(
        "Noise: at 60 % accuracy the gap's sampling error is about ±4.9 points on xnli's 100 English pairs "
        "(binomial, English alone); 2,401 English pairs would bring it under 1 point.")
    # Two tasks of 300: each ±2.83, the headline (their mean) ±2.83 / sqrt 2 = ±2.0; under 1 point needs
    # 1e4 * .24 / 2 = 1,200 per task, so 1,201.
    two = noise_line({"xnli": 300, "pawsx": 300})
    assert "±2.8 points on xnli's 300 English pairs, ±2.8 on pawsx's 300" in two
    assert "the headline gap, the mean of 2 tasks: ±2.0" in two and "(1,201 the headline's)" in two
    assert "under 1 point already" in noise_line({"xnli": 2500})
    # The sizes are what the trials evaluate: the cap, or what the data holds.
    assert evaluation_sizes(tiny_recipe) == {"xnli": 12, "pawsx": 12}
    assert evaluation_sizes(tiny_recipe.with_updates({"data.eval_max_per_language": None,
                                                      "data.tasks": ["pawsx"]})) == {"pawsx": 2000}


def test_the_gap_figure_draws_each_configurations_error_bar():
    import pandas as pd
    from matplotlib.container import ErrorbarContainer

    from xling_ray.report.figures import gap_vs_target, plt

    df = pd.DataFrame({"acc_target": [50.0, 52.0, 48.0], "gap": [4.0, 6.0, 5.0]})
    fig = gap_vs_target(df, ["#1", "#2", "#3"], [True, True, False], [1.5, float("nan"), 2.0])
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()  # one vertical segment per configuration that has an error
    assert [tuple(np.round(s[:, 1], 6)) for s in segments] == [(2.5, 5.5), (3.0, 7.0)]
    assert [s[0, 0] for s in segments] == [50.0, 48.0]
    plt.close(fig)


def test_a_run_from_before_predictions_were_kept_says_its_error_is_unknown():
    from xling_ray.leaderboard.intervals import add_noise, noise_notes
    from xling_ray.leaderboard.table import group_configs

    trials = _trials({"a": _config(0, 100), "b": _config(5, 100)}).drop(
        columns=["gap_se", "gap_xnli_se", "acc_en_se", "acc_target_se"])
    board = add_noise(group_configs(trials), trials, {})
    assert board["gap_se"].isna().all() and board["gap_vs_1"].isna().all()
    assert noise_notes(board, {}) == ["gap_se: unknown: no trial reported its sampling error or kept its predictions "
                                      "(a run from before they were kept)"]
    # Trials that reported gap_se but whose predictions are gone: the mean of the trials' errors, an upper bound.
    trials = _trials({"a": _config(0, 100), "b": _config(5, 100)})
    board = add_noise(group_configs(trials), trials, {})
    for _, row in board.iterrows():
        assert row["gap_se"] == pytest.approx(trials.loc[trials["config_id"] == row["config_id"], "gap_se"].mean())
    assert "within noise of rank 1: unknown" in noise_notes(board, {})[-1]


def test_evaluation_keeps_every_examples_prediction_in_order_and_two_shards_add_up_to_it():
    import torch

    from tests.test_guard import TokenModel, encoded
    from xling_ray.train.evaluate import count_predictions, evaluate

    model = TokenModel(3)
    predicted = [0, 1, 1, 2, 1, 1, 0, 1, 1]  # lengths vary: evaluation sorts by length, the kept order is the set's
    sets = {"en": encoded(predicted, [1] * 9), "de": encoded([2] * 9, [2] * 8 + [0], "de")}
    result = evaluate(model, sets, 2, 0, torch.device("cpu"))
    assert result.predicted["en"].tolist() == predicted and result.predicted["de"].tolist() == [2] * 9
    assert result.predicted["en"].dtype == np.int8 and result.labels["de"].tolist() == [2] * 8 + [0]
    kept = result.task_predictions([str(i) for i in range(9)])
    assert kept.accuracy() == result.accuracy  # 6/9 and 8/9 right
    # What evaluate all-reduces with two workers: each shard's predictions + 1 where it evaluated, 0 elsewhere.
    shards = [{}, {}]
    for r in (0, 1):
        count_predictions(model, sets, 2, 0, torch.device("cpu"), rank=r, world_size=2, predicted=shards[r])
    for lang in sets:
        assert ((shards[0][lang] > 0) ^ (shards[1][lang] > 0)).all()  # every example on one worker only
        assert (shards[0][lang] + shards[1][lang] - 1).tolist() == result.predicted[lang].tolist()
