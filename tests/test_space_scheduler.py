"""sweep.scheduler: the settings of early stopping, on the clock of training examples
(``examples_seen``): rungs, defaults from the recipe, and the errors a space gets when ASHA
could judge nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from xling_ray.config import ConfigError
from xling_ray.tune.space import SchedulerConfig, SearchSpace, SweepConfig, load_search_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def test_the_clock_is_training_examples_and_a_space_says_what_is_wrong():
    assert SchedulerConfig(type="asha", reduction_factor=3).milestones(1000, 9000) == [1000, 3000]
    quick = load_search_space(SPACES / "quickstart.yaml", {"sweep.scheduler.type": "asha"})
    assert quick.asha_clock() == (1500, 6000)  # grace: train.eval_every_examples; max_t: 1 epoch x (4,000 + 2,000)
    # A method space (3 seeds, one epoch evaluated at its end only) runs with asha once it evaluates mid-epoch.
    with pytest.raises(ConfigError, match="evaluated only at the end of its 1 epoch.*train.eval_every_examples"):
        load_search_space(SPACES / "xlinglearn.yaml", {"sweep.scheduler.type": "asha"})
    method = load_search_space(SPACES / "xlinglearn.yaml", {
        "sweep.scheduler.type": "asha", "recipe.train.eval_every_examples": 1000,
        "recipe.train.eval_subset_per_language": 50})
    assert method.sweep.seeds == 3 and method.asha_clock() == (1000, 4000)
    with pytest.raises(ConfigError, match="sweep.scheduler.grace_period .5000 examples. must be below max_t"):
        load_search_space(SPACES / "xlinglearn.yaml", {
            "sweep.scheduler.type": "asha", "sweep.scheduler.grace_period": 5000,
            "recipe.train.eval_every_examples": 1000})
    with pytest.raises(ConfigError, match="sweep.scheduler.max_t: not given.*data.train_size is not set"):
        load_search_space(SPACES / "quickstart.yaml", {"sweep.scheduler.type": "asha"}, budget="full")
    with pytest.raises(ValueError, match="sweep.scheduler.grace_period .4000 examples. must be below"):
        SchedulerConfig(type="asha", grace_period=4000, max_t=4000)
    with pytest.raises(ValueError, match="grace_period"):
        SchedulerConfig(type="asha", grace_period=0)
    searched = SearchSpace.model_validate({"search": {"train.epochs": {"int": [1, 3]}},
                                           "recipe": {"data": {"train_size": 100}},
                                           "sweep": {"scheduler": {"type": "asha", "max_t": 600, "grace_period": 100},
                                                     "seeds": 1}})
    assert searched.asha_clock() == (100, 600)


def test_set_switches_a_method_space_with_three_seeds_to_asha():
    """``--set sweep.scheduler.type=asha`` (and the evaluations during the epoch it needs) names
    settings of a method space: the keys resolve, and the space loads with 3 seeds and asha."""
    from xling_ray.tune.space import set_key

    sets = {"sweep.scheduler.type": "asha", "train.eval_every_examples": 1000, "train.eval_subset_per_language": 50,
            "sweep.scheduler.reduction_factor": 3}
    space = load_search_space(SPACES / "ding2022.yaml", {set_key(k): v for k, v in sets.items()})
    assert space.sweep.seeds == 3 and space.sweep.scheduler.type == "asha"
    assert space.sweep.scheduler.milestones(*space.asha_clock()) == [1000, 3000]


def test_several_seeds_are_welcome_when_all_of_a_configurations_seeds_can_run():
    assert SweepConfig(seeds=3, scheduler={"type": "asha"}).seeds == 3
    with pytest.raises(ValueError, match=r"sweep.max_concurrent_trials \(2\) is below sweep.seeds \(3\)"):
        SweepConfig(seeds=3, max_concurrent_trials=2, scheduler={"type": "asha"})
    assert SweepConfig(seeds=3, max_concurrent_trials=2).scheduler.type == "fifo"  # FIFO never pauses a seed


def test_every_shipped_space_says_in_its_comment_whether_it_stops_early():
    for path in sorted(SPACES.glob("*.yaml")):
        text = path.read_text()
        space = load_search_space(path)
        assert "early stopping" in text.lower(), path
        if space.sweep.scheduler.type == "asha":
            assert space.recipe.train.eval_every_examples, path  # asha only where it evaluates during the epoch


def test_a_trial_of_per_task_sizes_is_their_sum_in_examples():
    space = load_search_space(SPACES / "quickstart.yaml", {
        "sweep.scheduler.type": "asha", "recipe.data.train_size": {"xnli": 2000, "pawsx": 4000}})
    assert space.trial_examples() == 6000 and space.asha_clock() == (1500, 6000)
