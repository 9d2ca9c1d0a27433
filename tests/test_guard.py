"""The leaderboard's guard against models that learned nothing: prediction concentration
and the collapse flag, the collapsed-last ranking, and the English floor measured by the
sweep itself (``baseline: plain`` or ``majority``). Pure parts, no Ray cluster."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from xling_ray.leaderboard.table import Leaderboard, format_leaderboard, group_configs, read_leaderboard, resolve_floor
from xling_ray.metrics import COLLAPSE_THRESHOLD, is_collapsed, summarize, top_share
from xling_ray.data.batches import EncodedSet
from xling_ray.train.evaluate import Evaluation, count_predictions, evaluate, summarize_evaluations
from xling_ray.tune.space import Constraint, SearchSpace, loss_off_value, plain_point

from tests.conftest import recording_searcher

# ---------------------------------------------------------------- prediction concentration


class TokenModel(torch.nn.Module):
    """Predicts, for each example, the class written in its second token id (``[CLS], k, ...``)."""

    def __init__(self, classes: int):
        super().__init__()
        self.config = SimpleNamespace(num_labels=classes)
        self.classes = classes

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=torch.nn.functional.one_hot(input_ids[:, 1], self.classes).float())


def encoded(predicted: list[int], labels: list[int], lang: str = "en") -> EncodedSet:
    """A set whose examples the :class:`TokenModel` predicts as ``predicted`` (lengths vary, so
    evaluation's length sorting reorders them)."""
    ids = tuple((101, p) + (7,) * (i % 4) for i, p in enumerate(predicted))
    return EncodedSet("xnli", lang, ids, tuple(labels))


def test_top_share_and_the_collapse_threshold():
    assert top_share([2, 6, 2]) == pytest.approx(60.0)
    assert top_share([0, 10, 0]) == 100.0
    assert math.isnan(top_share([0, 0]))
    assert COLLAPSE_THRESHOLD == 95.0
    assert is_collapsed(100.0) and is_collapsed(95.0)       # the boundary counts as collapsed
    assert not is_collapsed(94.99) and not is_collapsed(60.0)


def test_evaluation_counts_the_most_predicted_class_and_the_majority_label():
    model = TokenModel(3)
    sets = {
        # 10 English examples, all predicted class 2; labels 4 x 0, 3 x 1, 3 x 2.
        "en": encoded([2] * 10, [0] * 4 + [1] * 3 + [2] * 3),
        # 10 German examples, 6 predicted 0 and 4 predicted 1, all labelled 0.
        "de": encoded([0] * 6 + [1] * 4, [0] * 10, "de"),
    }
    result = evaluate(model, sets, 3, 0, torch.device("cpu"))
    assert result.accuracy == {"en": pytest.approx(30.0), "de": pytest.approx(60.0)}
    assert result.top_class == {"en": pytest.approx(100.0), "de": pytest.approx(60.0)}
    assert result.majority == {"en": pytest.approx(40.0), "de": pytest.approx(100.0)}


def test_two_workers_counts_add_up_to_one_workers():
    """What ``evaluate`` all-reduces: each worker's shard counts (correct, examples, predictions
    per class) summed are the whole set's counts, so the top-class share is the whole set's."""
    model = TokenModel(3)
    sets = {"en": encoded([0, 1, 1, 2, 1, 1, 0, 1, 1], [1] * 9)}
    one = count_predictions(model, sets, 2, 0, torch.device("cpu"))
    shards = [count_predictions(model, sets, 2, 0, torch.device("cpu"), rank=r, world_size=2) for r in (0, 1)]
    assert shards[0][0, 1] == 5 and shards[1][0, 1] == 4  # every example once
    torch.testing.assert_close(shards[0] + shards[1], one)
    assert one[0].tolist() == [6, 9, 2, 6, 1]  # correct, examples, predictions of class 0, 1, 2
    result = Evaluation.from_counts(sets, shards[0] + shards[1])
    assert result.top_class["en"] == pytest.approx(600 / 9) and result.accuracy["en"] == pytest.approx(600 / 9)


def test_the_classes_come_from_the_wrapped_models_config_when_the_labels_miss_one():
    class View(torch.nn.Module):  # a wrapper without a config of its own (as DDP's module, a view's model)
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            return self.model(**batch)

    counts = count_predictions(View(TokenModel(3)), {"en": encoded([2, 2], [0, 1])}, 4, 0, torch.device("cpu"))
    assert counts[0].tolist() == [0, 2, 0, 0, 2]  # class 2 counted though no label is 2


@pytest.mark.parametrize("same, collapsed", [(20, 1.0), (19, 1.0), (18, 0.0), (12, 0.0)])
def test_collapse_flag_from_predictions(same, collapsed):
    """20 English examples: 20 or 19 of one class (100 %, 95 %: at the threshold) collapsed;
    18 (90 %) or 12 (60/40) did not."""
    model = TokenModel(2)
    evaluations = {
        "xnli": evaluate(model, {"en": encoded([1] * same + [0] * (20 - same), [0, 1] * 10)}, 8, 0, torch.device("cpu")),
    }
    metrics = summarize_evaluations(evaluations)
    assert metrics["top_class_xnli_en"] == pytest.approx(100.0 * same / 20)
    assert metrics["collapsed_xnli"] == collapsed and metrics["collapsed"] == collapsed
    assert metrics["majority_en"] == pytest.approx(50.0)  # labels 10/10


def test_summarize_flags_any_collapsed_task_and_averages_the_majority_over_tasks():
    accuracy = {"xnli": {"en": 33.3, "de": 33.3}, "pawsx": {"en": 70.0, "ja": 60.0}}
    top = {"xnli": {"en": 100.0, "de": 100.0}, "pawsx": {"en": 60.0, "ja": 55.0}}
    majority = {"xnli": {"en": 33.3, "de": 33.3}, "pawsx": {"en": 56.9, "ja": 56.9}}
    s = summarize(accuracy, top_class=top, majority=majority)
    assert s["top_class_xnli_de"] == 100.0 and s["top_class_pawsx_ja"] == 55.0
    assert s["collapsed_xnli"] == 1.0 and s["collapsed_pawsx"] == 0.0 and s["collapsed"] == 1.0
    assert s["majority_en"] == pytest.approx((33.3 + 56.9) / 2)
    assert "collapsed" not in summarize(accuracy)  # accuracies alone: no flag, as in runs before the metric


# ---------------------------------------------------------------- the leaderboard


def trials_frame(rows: list[dict]) -> pd.DataFrame:
    """Trials as ``load_trials`` gives them; each row: config_id, seed, settings and metrics."""
    out = []
    for i, r in enumerate(rows):
        out.append({"trial_id": f"t{i}", "status": r.pop("status", "TERMINATED"), "config_id": r.pop("config_id"),
                    "seed": r.pop("seed", 0), **r, "epoch": 1.0, "error": ""})
    return pd.DataFrame(out)


def test_a_collapsed_configuration_with_gap_0_ranks_after_one_that_learned_with_gap_5():
    trials = trials_frame([
        {"config_id": "dead", "gap": 0.0, "acc_en": 33.3, "acc_target": 33.3, "collapsed": 1.0, "train.lr": 3e-4},
        {"config_id": "learns", "gap": 5.0, "acc_en": 70.0, "acc_target": 65.0, "collapsed": 0.0, "train.lr": 1e-4},
    ])
    configs = group_configs(trials)
    assert list(configs["config_id"]) == ["learns", "dead"]
    assert list(configs["collapsed"]) == [False, True]
    # Without the flag (a run from before the metric) the lowest gap wins: collapse is unknown.
    old = group_configs(trials.drop(columns="collapsed"))
    assert list(old["config_id"]) == ["dead", "learns"] and not old["collapsed"].any()


def test_one_collapsed_seed_flags_the_configuration_and_it_ranks_after_an_infeasible_one_that_learned():
    trials = trials_frame([
        # half dead: one seed learned, the other collapsed; mean gap 1, feasible English.
        {"config_id": "half", "seed": 0, "gap": 2.0, "acc_en": 70.0, "acc_target": 68.0, "collapsed": 0.0,
         "collapsed_xnli": 0.0, "train.lr": 3e-4},
        {"config_id": "half", "seed": 1, "gap": 0.0, "acc_en": 66.0, "acc_target": 66.0, "collapsed": 1.0,
         "collapsed_xnli": 1.0, "train.lr": 3e-4},
        {"config_id": "good", "gap": 5.0, "acc_en": 70.0, "acc_target": 65.0, "collapsed": 0.0, "collapsed_xnli": 0.0,
         "train.lr": 1e-4},
        {"config_id": "low_en", "gap": 3.0, "acc_en": 50.0, "acc_target": 47.0, "collapsed": 0.0, "collapsed_xnli": 0.0,
         "train.lr": 2e-4},
    ])
    configs = group_configs(trials, constraint=Constraint(metric="acc_en", baseline=60.0, delta=1.0))
    # Order: not collapsed, then feasible, then gap.
    assert list(configs["config_id"]) == ["good", "low_en", "half"]
    half = configs.set_index("config_id").loc["half"]
    assert half["collapsed"] and half["collapsed_xnli"] == 1.0 and half["feasible"] and half["gap"] == pytest.approx(1.0)
    # The mark sits next to feasible.
    columns = list(configs.columns)
    assert columns[columns.index("feasible") + 1] == "collapsed"


BASE = {"train.lr": 1e-4, "losses.xlinglearn.w_ot": 0.0}  # the plain point of a tiny space


def plain_trials(below: float = 51.2, above: float = 51.4, baseline_status: str = "TERMINATED") -> pd.DataFrame:
    """The plain baseline with 2 seeds (acc_en 53.0 and 53.6: mean 53.3) and two configurations
    around its floor 53.3 - 2 = 51.3."""
    return trials_frame([
        {"config_id": "plain", "seed": 0, "status": baseline_status, "gap": 3.0, "acc_en": 53.0, "acc_target": 50.0,
         **BASE},
        {"config_id": "plain", "seed": 1, "status": baseline_status, "gap": 3.0, "acc_en": 53.6, "acc_target": 50.0,
         **BASE},
        {"config_id": "below", "gap": 1.0, "acc_en": below, "acc_target": 50.0, "train.lr": 2e-4,
         "losses.xlinglearn.w_ot": 0.5},
        {"config_id": "above", "gap": 2.0, "acc_en": above, "acc_target": 49.0, "train.lr": 2e-4,
         "losses.xlinglearn.w_ot": 0.1},
    ])


def test_the_plain_floor_resolves_from_the_baseline_configurations_trials():
    plain = Constraint(metric="acc_en", baseline="plain", delta=2)
    configs = group_configs(plain_trials(), constraint=plain, baseline=BASE)
    by = configs.set_index("config_id")
    assert by.loc["plain", "baseline"] and not by.loc["below", "baseline"] and not by.loc["above", "baseline"]
    # floor = mean(53.0, 53.6) - 2 = 51.3: 51.2 is just below it, 51.4 just above.
    assert not by.loc["below", "feasible"] and by.loc["above", "feasible"] and by.loc["plain", "feasible"]
    assert list(configs["config_id"]) == ["above", "plain", "below"]  # below has the lowest gap, and ranks last
    floor, note = resolve_floor(plain, configs)
    assert floor.tolist() == pytest.approx([51.3] * 3)
    assert note == "feasible: acc_en >= 51.30 (plain's 53.30 - 2)"


def test_no_configuration_is_infeasible_while_the_plain_baseline_runs():
    plain = Constraint(metric="acc_en", baseline="plain", delta=2)
    configs = group_configs(plain_trials(baseline_status="RUNNING"), constraint=plain, baseline=BASE)
    assert configs["feasible"].all()
    assert "once the plain baseline has finished" in resolve_floor(plain, configs)[1]


def test_the_majority_floor_is_majority_en_plus_delta():
    majority = Constraint(metric="acc_en", baseline="majority", delta=2)
    trials = trials_frame([  # majority_en 33.33 (XNLI's balanced classes): the floor is 35.33
        {"config_id": "a", "gap": 0.5, "acc_en": 35.0, "acc_target": 34.0, "majority_en": 100 / 3, "train.lr": 1e-4},
        {"config_id": "b", "gap": 4.0, "acc_en": 36.0, "acc_target": 32.0, "majority_en": 100 / 3, "train.lr": 2e-4},
    ])
    configs = group_configs(trials, constraint=majority)
    assert list(configs["config_id"]) == ["b", "a"] and list(configs["feasible"]) == [True, False]
    floor, note = resolve_floor(majority, configs)
    assert floor.tolist() == pytest.approx([100 / 3 + 2] * 2)
    assert note.startswith("feasible: acc_en >= 35.33 (majority's 33.33 + 2")
    # A run whose trials report no majority_en: no floor yet, nothing infeasible.
    assert group_configs(trials.drop(columns="majority_en"), constraint=majority)["feasible"].all()


def test_leaderboard_files_carry_the_marks_and_the_notes(tmp_path, capsys):
    from xling_ray.leaderboard import write_leaderboard

    plain = Constraint(metric="acc_en", baseline="plain", delta=2)
    trials = plain_trials()
    trials["collapsed"] = [0.0, 0.0, 0.0, 1.0]
    board = Leaderboard(group_configs(trials, constraint=plain, baseline=BASE), trials, constraint=plain)
    write_leaderboard(board, tmp_path)
    csv = read_leaderboard(tmp_path / "leaderboard.csv")
    assert list(csv.columns[4:7]) == ["feasible", "collapsed", "baseline"]
    assert list(csv["config_id"]) == ["plain", "below", "above"]  # above collapsed: last, though feasible
    md = (tmp_path / "leaderboard.md").read_text()
    assert "- feasible: acc_en >= 51.30 (plain's 53.30 - 2)" in md
    assert "- collapsed: a seed predicted one class for >= 95 % of a task's English examples" in md
    assert "- baseline: plain fine-tuning" in md
    printed = format_leaderboard(board)
    assert "feasible: acc_en >= 51.30" in printed and "collapsed: " in printed


def test_export_takes_the_ranked_table_and_the_plain_baseline_keeps_its_switches(tmp_path):
    """``export --rank 1`` is the leaderboard's first row (not the lowest gap), and the plain
    baseline of a space whose recipe fixes a regularizer on exports with it switched off."""
    from xling_ray.leaderboard.export import export_config
    from xling_ray.tune.sweep import save_space

    space = SearchSpace.model_validate({
        "recipe": {"losses": {"adjustment": {"regime": "before"}}},
        "search": {"train.lr": {"loguniform": [1e-5, 1e-3]}, "losses.adjustment.base_rate": {"loguniform": [0.1, 10]}},
        "sweep": {"seeds": 1, "constraint": {"metric": "acc_en", "baseline": "plain", "delta": 2}},
    })
    point = space.baseline_point
    # base_rate does nothing once the regime is off (adjustment's off() is the regime alone): the middle of its range.
    assert point == {"train.lr": 1e-4, "losses.adjustment.base_rate": 1.0, "losses.adjustment.regime": "off"}
    save_space(space, str(tmp_path))
    trials = trials_frame([
        {"config_id": "plain", "gap": 4.0, "acc_en": 60.0, "acc_target": 55.0, "collapsed": 0.0, **point},
        {"config_id": "dead", "gap": 0.0, "acc_en": 33.0, "acc_target": 33.0, "collapsed": 1.0, "train.lr": 1e-3,
         "losses.adjustment.base_rate": 1.0},
    ])
    c = space.sweep.constraint
    board = Leaderboard(group_configs(trials, constraint=c, baseline=point), trials, constraint=c)
    exported = export_config(tmp_path, rank=1, board=board)
    assert exported.source.config_id == "plain"
    assert exported.recipe.losses.adjustment.regime == "off" and not exported.recipe.losses.adjustment.active
    assert export_config(tmp_path, rank=2, board=board).recipe.losses.adjustment.regime == "before"


def test_the_reports_pareto_front_leaves_collapsed_configurations_out():
    from xling_ray.report.run import gap_front

    configs = pd.DataFrame({"gap": [0.0, 3.0, 5.0], "acc_target": [33.0, 60.0, 55.0], "collapsed": [True, False, False]})
    assert gap_front(configs).tolist() == [False, True, False]


# ---------------------------------------------------------------- the plain baseline and the search


def test_loss_off_values():
    assert loss_off_value("losses.xlinglearn.w_ot") == 0.0
    assert loss_off_value("losses.ding2022.w_attention_pull") == 0.0
    assert loss_off_value("losses.xite.ratio") == 0.0
    assert loss_off_value("losses.adjustment.regime") == "off"
    assert loss_off_value("losses.label_smoothing") == 0.0
    # adjustment's weights do nothing without a regime: its off() is the regime alone.
    for other in ("losses.xlinglearn.p_sub", "losses.xite.lam", "losses.pool.max_per_language", "train.lr",
                  "losses.adjustment.w_align", "losses.adjustment.base_rate"):
        assert loss_off_value(other) is None


SEARCH = {"train.lr": {"loguniform": [1e-5, 1e-3]}, "train.batch_size": {"choice": [16, 8]},
          "losses.xlinglearn.w_ot": {"loguniform": [1e-3, 1.0]}, "losses.xlinglearn.p_sub": {"uniform": [0.05, 0.4]}}
PLAIN = {"metric": "acc_en", "baseline": "plain", "delta": 2}


def test_the_plain_point_is_prepended_with_loss_weights_at_0():
    first = {"train.lr": 1.5e-4, "losses.xlinglearn.w_ot": 0.1, "losses.xlinglearn.p_sub": 0.15}
    space = SearchSpace.model_validate({"search": SEARCH, "sweep": {"constraint": PLAIN, "points_to_evaluate": [first]}})
    # Weights at 0; other settings from the first point, and where it has none, the first choice.
    plain = {"train.lr": 1.5e-4, "train.batch_size": 16, "losses.xlinglearn.w_ot": 0.0, "losses.xlinglearn.p_sub": 0.15}
    assert space.runs_baseline_first and space.first_points() == (plain, first)
    # Without points: the middle of each range (lr: on the log scale, sqrt(1e-5 * 1e-3)).
    bare = SearchSpace.model_validate({"search": SEARCH, "sweep": {"constraint": PLAIN}})
    assert bare.first_points() == ({"train.lr": pytest.approx(1e-4), "train.batch_size": 16,
                                    "losses.xlinglearn.w_ot": 0.0, "losses.xlinglearn.p_sub": pytest.approx(0.225)},)
    # Not with a numeric or no constraint.
    assert SearchSpace.model_validate({"search": SEARCH, "sweep": {"points_to_evaluate": [first]}}).first_points() == (first,)


def test_an_identical_point_is_not_added_again():
    search = {"train.lr": {"loguniform": [1e-5, 1e-3]}, "losses.xite.ratio": {"uniform": [0.0, 1.0]}}
    point = {"train.lr": 1e-4, "losses.xite.ratio": 0.0}
    space = SearchSpace.model_validate({"search": search, "sweep": {"constraint": PLAIN, "points_to_evaluate": [point]}})
    assert space.baseline_point == point and not space.runs_baseline_first and space.first_points() == (point,)


def test_plain_switches_off_what_the_recipe_fixes_on():
    from xling_ray.config import RecipeConfig

    recipe = RecipeConfig().with_updates({"losses.adjustment.regime": "continual", "losses.xlinglearn.w_ot": 0.3})
    search = SearchSpace.model_validate({"search": {"losses.adjustment.w_reg": {"loguniform": [0.1, 10]}}}).search
    assert plain_point(recipe, search) == {"losses.adjustment.w_reg": 1.0, "losses.xlinglearn.w_ot": 0.0,
                                           "losses.adjustment.regime": "off"}


def test_constraint_settings_are_checked_with_clear_errors():
    with pytest.raises(ValueError, match="'plain' .* or 'majority'.*got 'median'"):
        Constraint(metric="acc_en", baseline="median")
    with pytest.raises(ValueError, match="majority .* needs metric acc_en"):
        Constraint(metric="acc_target", baseline="majority")
    assert Constraint(baseline="80").floor == 79.0  # a number given as text (--set) is a number
    assert Constraint(baseline="plain", delta=2).floor is None
    assert Constraint(baseline="majority", delta=2).floor_from(33.3) == pytest.approx(35.3)  # plus: beat it
    assert Constraint(baseline="plain", delta=2).floor_from(53.3) == pytest.approx(51.3)     # minus: stay near it
    # Nothing searched and a recipe that is not plain: no plain configuration would run.
    with pytest.raises(ValueError, match="nothing is searched"):
        SearchSpace.model_validate({"recipe": {"losses": {"xite": {"ratio": 0.5}}}, "sweep": {"constraint": PLAIN}})
    SearchSpace.model_validate({"sweep": {"constraint": PLAIN}})  # the recipe itself is plain: it is the baseline


def test_the_sweep_runs_the_baseline_first_outside_optuna_and_then_knows_the_floor():
    """Two seeds: the first two trials are the plain baseline, never told to Optuna (its weight 0
    is outside the log range); once it finished, Optuna's constraint uses its mean - delta."""
    from optuna.trial import TrialState

    from xling_ray.tune.search import make_search_alg, num_trials

    first = {"train.lr": 1.5e-4, "train.batch_size": 8, "losses.xlinglearn.w_ot": 0.1, "losses.xlinglearn.p_sub": 0.15}
    space = SearchSpace.model_validate({"search": SEARCH, "sweep": {"seeds": 2, "num_samples": 3, "constraint": PLAIN,
                                                                    "points_to_evaluate": [first]}})
    assert num_trials(space) == (3 + 1) * 2
    alg = make_search_alg(space)
    alg.set_search_properties(None, None, space.param_space())
    configs = [alg.suggest(f"t{i}") for i in range(4)]
    plain = space.baseline_point
    assert configs[:2] == [{**plain, "__trial_index__": 0}, {**plain, "__trial_index__": 1}]
    assert {k: configs[2][k] for k in first} == pytest.approx(first) and configs[3]["__trial_index__"] == 1
    inner = alg.searcher
    assert inner.floor_for({"acc_en": 50.0}) is None  # unknown before the baseline finished
    alg.on_trial_complete("t0", {"gap": 3.0, "acc_en": 53.0})
    alg.on_trial_complete("t1", {"gap": 3.0, "acc_en": 53.6})
    assert inner.floor_for({}) == pytest.approx(51.3)
    alg.on_trial_complete("t2", {"gap": 1.0, "acc_en": 51.0})
    alg.on_trial_complete("t3", {"gap": 1.0, "acc_en": 51.2})
    trials = inner._ot_study.trials
    assert len(trials) == 1 and trials[0].state == TrialState.COMPLETE  # the baseline is not in the study
    assert trials[0].constraints == {"acc_en": pytest.approx(51.3 - 51.1)}  # positive: infeasible


def test_optuna_gets_the_majority_floor_from_the_result_and_feasible_before_the_plain_floor_is_known():
    from xling_ray.tune.search import ConstrainedOptunaSearch

    majority = ConstrainedOptunaSearch(constraint=Constraint(baseline="majority", delta=2))
    assert majority.floor_for({"acc_en": 40.0, "majority_en": 45.0}) == pytest.approx(47.0)
    assert majority.floor_for({"acc_en": 40.0}) is None
    number = ConstrainedOptunaSearch(constraint=Constraint(baseline=80.0, delta=1))
    assert number.floor_for({}) == pytest.approx(79.0)


def test_a_searcher_pickled_before_relative_floors_still_resumes():
    """A sweep started by an earlier version resumes with its searchers' old state: no plain
    baseline to serve, and the old numeric floor ``(metric, floor)`` still told to Optuna."""
    from xling_ray.tune.search import ConstrainedOptunaSearch, SeedGroups

    old = ConstrainedOptunaSearch()
    del old.__dict__["_guard"], old.__dict__["_plain_reference"]
    old._constraint = ("acc_en", 70.0)
    assert old.floor_for({"acc_en": 60.0}) == pytest.approx(70.0)

    groups = SeedGroups(recording_searcher(), seeds=1, metrics=["gap"])
    for name in ("_baseline", "_baseline_metric", "_serve_baseline", "_served"):
        del groups.__dict__[name]
    assert groups.suggest("t0") == {"train.lr": 1e-4, "__trial_index__": 0}
    groups.on_trial_complete("t0", {"gap": 2.0})
    assert groups.searcher.told == [("t0", {"gap": 2.0}, False)]


# ---------------------------------------------------------------- the shipped spaces and the opt-out


def test_every_shipped_space_has_a_guard():
    from pathlib import Path

    from xling_ray.tune import load_search_space

    spaces = Path(__file__).resolve().parents[1] / "search_spaces"
    for name in ("xlinglearn", "ding2022", "xite", "adjustment", "continual"):
        space = load_search_space(spaces / f"{name}.yaml")
        assert space.sweep.constraint == Constraint(metric="acc_en", baseline="plain", delta=2), name
        assert space.runs_baseline_first, name
        point = space.first_points()[0]
        assert all(v == loss_off_value(k) for k, v in point.items() if loss_off_value(k) is not None), name
    assert load_search_space(spaces / "adjustment.yaml").baseline_point["losses.adjustment.regime"] == "off"
    quick = load_search_space(spaces / "quickstart.yaml")
    assert quick.sweep.constraint == Constraint(metric="acc_en", baseline="majority", delta=2)
    assert not quick.runs_baseline_first


def test_a_space_without_a_guard_is_accepted_and_the_sweep_says_so(tmp_path, monkeypatch, capsys):
    from xling_ray.tune import sweep

    space = SearchSpace.model_validate({"search": SEARCH, "sweep": {"constraint": None}})
    assert space.sweep.constraint is None

    class Stop(Exception):
        pass

    def no_ray(*args, **kwargs):
        raise Stop  # the start-up lines are printed before Ray starts

    monkeypatch.setattr(sweep, "ray_runtime", no_ray)
    monkeypatch.setattr(sweep, "check_space", lambda space: None)  # the default recipe reads the hub
    with pytest.raises(Stop):
        sweep.run_sweep(space, storage=str(tmp_path), name="unguarded")
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["Guard: no sweep.constraint: the leaderboard will only rank collapsed models (one class for >= 95 % "
                   "of a task's English examples) last, not guard against an English drop."]
    guarded = SearchSpace.model_validate({"search": SEARCH, "sweep": {"constraint": PLAIN}})
    assert sweep.guard_line(guarded) == (
        "Guard: the leaderboard ranks configurations with acc_en below plain fine-tuning's mean - 2 (plain fine-tuning "
        "runs first, one configuration more than num_samples) after the others, and collapsed models last.")


def test_the_method_spaces_fix_the_learning_rate_so_plain_and_every_configuration_share_it():
    """Plain runs at one learning rate; a method space that searched ``train.lr`` would compare each
    configuration with plain at another rate (the floor and the gap difference mixing the two effects)."""
    from pathlib import Path

    from xling_ray.tune import load_search_space

    spaces = Path(__file__).resolve().parents[1] / "search_spaces"
    for name in ("xlinglearn", "ding2022", "xite", "adjustment", "continual"):
        text = (spaces / f"{name}.yaml").read_text()
        space = load_search_space(spaces / f"{name}.yaml")
        assert not any(k.startswith("train.") for k in space.search), name
        assert all("train.lr" not in p for p in space.first_points()), name
        assert space.recipe.train.lr == 1e-4 and "train.lr is fixed, not searched" in text, name
        plain = space.recipe.with_updates(space.baseline_point)
        first = space.recipe.with_updates(space.sweep.points_to_evaluate[0])
        assert plain.train == first.train == space.recipe.train, name


@pytest.mark.parametrize("constraint", [None, PLAIN])
def test_a_collapsed_configuration_is_infeasible_to_optuna_and_tpe_moves_away_from_it(constraint):
    """Constructed results on one searched setting x: below 0.4 the model collapses (gap 0.05, the
    best value there is; English 33); above, it learns (gap 2 + 8 |x - 0.8|, English 60). With no floor
    (constraint null), or a plain floor whose baseline has not finished (slack 0), only the collapse
    constraint tells TPE that the low gaps are no result."""
    import optuna

    from xling_ray.tune.search import make_search_alg, optuna_study

    space = SearchSpace.model_validate({
        "search": {"losses.xite.lam": {"uniform": [0.0, 1.0]}},
        "sweep": {"num_samples": 40, "seeds": 2, "n_startup_trials": 8, "seed": 3, "constraint": constraint}})
    searcher = make_search_alg(space)
    searcher.set_search_properties("gap", "min", space.param_space())
    xs, n = [], 0
    for i in range(40):
        config = None
        for seed in range(2):
            trial_id = f"t{n:03d}"
            config = searcher.suggest(trial_id)
            if constraint is not None and "losses.xite.lam" not in config:
                config = None  # the plain baseline's group, served first: never finishes here
                n += 1
                continue
            n += 1
            x = config["losses.xite.lam"]
            dead = x < 0.4
            result = {"gap": 0.05 if dead else 2.0 + 8.0 * abs(x - 0.8), "acc_en": 33.0 if dead else 60.0,
                      "collapsed": 1.0 if (dead and seed == 1) else 0.0}  # one collapsed seed is enough
            searcher.on_trial_complete(trial_id, result)
        if config is not None:
            xs.append(config["losses.xite.lam"])
    study = optuna_study(searcher.searcher)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 30
    for t in done:  # every configuration is told whether it collapsed, as a constraint
        assert t.system_attrs["constraints:collapsed"] == (1.0 if t.params["losses.xite.lam"] < 0.4 else 0.0)
        assert t.user_attrs["collapsed"] == (t.params["losses.xite.lam"] < 0.4)
    modelled = xs[8:]  # after TPE's random start
    assert sum(x < 0.4 for x in modelled) <= len(modelled) // 5, modelled


def test_a_running_configuration_ranks_after_every_finished_one_whatever_its_mean_and_is_never_rank_1():
    """A configuration is as far as its least finished seed: with one seed still RUNNING, its
    mean so far (the lowest gap here) is not a result, so it ranks after the finished ones,
    feasible, infeasible or collapsed, and stays out of the Pareto front."""
    from xling_ray.leaderboard.table import rank_one

    c = Constraint(metric="acc_en", baseline=55.0, delta=2.0)
    trials = trials_frame([
        {"config_id": "running", "seed": 0, "gap": 0.5, "acc_en": 60.0, "acc_target": 59.0, "collapsed": 0.0},
        {"config_id": "running", "seed": 1, "status": "RUNNING", "gap": 0.7, "acc_en": 60.0, "acc_target": 59.0,
         "collapsed": 0.0},
        {"config_id": "ok", "seed": 0, "gap": 4.0, "acc_en": 60.0, "acc_target": 55.0, "collapsed": 0.0},
        {"config_id": "ok", "seed": 1, "gap": 5.0, "acc_en": 61.0, "acc_target": 56.0, "collapsed": 0.0},
        {"config_id": "below", "seed": 0, "gap": 1.0, "acc_en": 50.0, "acc_target": 49.0, "collapsed": 0.0},
        {"config_id": "below", "seed": 1, "gap": 1.0, "acc_en": 50.0, "acc_target": 49.0, "collapsed": 0.0},
        {"config_id": "dead", "seed": 0, "gap": 0.0, "acc_en": 33.0, "acc_target": 33.0, "collapsed": 1.0},
        {"config_id": "dead", "seed": 1, "gap": 0.2, "acc_en": 34.0, "acc_target": 34.0, "collapsed": 0.0},
    ])
    configs = group_configs(trials, metrics=("gap", "acc_target"), modes=("min", "max"), constraint=c)
    assert list(configs["config_id"]) == ["ok", "below", "dead", "running"]
    assert list(configs["status"]) == ["TERMINATED", "TERMINATED", "TERMINATED", "RUNNING"]
    running = configs.set_index("config_id").loc["running"]
    assert running["gap"] == pytest.approx(0.6) and not running["pareto"] and running["seeds"] == 2
    assert configs.set_index("config_id")["pareto"].to_dict() == {"ok": True, "below": False, "dead": False,
                                                                    "running": False}
    assert rank_one(configs)["config_id"] == "ok" and rank_one(configs)["gap"] == pytest.approx(4.5)
    # Only the running one: no rank 1 yet.
    assert rank_one(group_configs(trials[trials["config_id"] == "running"])) is None
