"""The third-party APIs xling_ray.tune.search relies on: Ray's ``OptunaSearch`` private
attributes (no public API gives the study or a trial's Optuna trial), Optuna's public
``Trial.set_constraint`` (Optuna 5.0), and restoring seed groups saved by an earlier
version (when ``SeedGroups`` extended Ray's ``Repeater``)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from ray.tune.search.optuna import OptunaSearch

from xling_ray.tune.search import RAY_TESTED, SeedGroups, load_study, optuna_study, optuna_trial

from tests.conftest import recording_searcher

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _searcher(**kwargs) -> OptunaSearch:
    return OptunaSearch(space={"train.lr": FloatDistribution(1e-5, 1e-3, log=True)}, metric="gap", mode="min",
                        sampler=optuna.samplers.RandomSampler(seed=0), **kwargs)


def test_rays_optuna_search_still_has_the_private_attributes_read(tmp_path):
    """If this fails after a Ray upgrade, the message names the attribute and the Ray
    releases tested: adapt optuna_study/optuna_trial, then widen RAY_TESTED and pyproject."""
    import ray

    searcher = _searcher()
    searcher.suggest("t0")
    study, trial = optuna_study(searcher), optuna_trial(searcher, "t0")
    assert isinstance(study, optuna.Study), f"ray {ray.__version__}: OptunaSearch._ot_study; tested ray{RAY_TESTED}"
    assert isinstance(trial, optuna.Trial), f"ray {ray.__version__}: OptunaSearch._ot_trials; tested ray{RAY_TESTED}"
    assert optuna_trial(searcher, "never-suggested") is None
    trial.set_constraint("acc_en", 1.5)  # Optuna >= 5.0
    searcher.on_trial_complete("t0", {"gap": 2.0})
    # Tune's public save/restore: the study comes back with the trial, its value and constraint.
    searcher.save_to_dir(str(tmp_path))
    (only,) = load_study(tmp_path).trials
    assert only.values == [2.0] and only.constraints == {"acc_en": 1.5}


def test_a_missing_private_attribute_fails_with_its_name_and_the_tested_releases():
    searcher = _searcher()
    del searcher._ot_trials
    with pytest.raises(RuntimeError, match=r"no attribute '_ot_trials'.*tested with ray>=2\.\d+,<2\.\d+"):
        optuna_trial(searcher, "t0")


def test_pyproject_pins_ray_to_the_tested_releases():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (ray_req,) = [d for d in deps if d.startswith("ray[")]
    assert ray_req.endswith("]" + RAY_TESTED), (ray_req, RAY_TESTED)


def test_seed_groups_saved_as_rays_repeater_restore_and_continue():
    """A sweep saved when SeedGroups extended ``Repeater``: Tune restores the wrapper's
    ``__dict__`` (``get_state``), whose groups are Ray's own ``_TrialGroup`` objects."""
    try:
        from ray.tune.search.repeater import _TrialGroup
    except ImportError:
        pytest.skip("this Ray has no repeater._TrialGroup: seed groups saved before the change cannot restore")

    group = _TrialGroup("t0", {"train.lr": 2e-4}, max_trials=2)
    group.report("t0", {"gap": 1.0})
    old_state = {"repeat": 2, "_set_index": True, "_groups": [group], "_trial_id_to_group": {"t0": group},
                 "_current_group": group, "_metric": "gap", "_mode": "min", "_metrics": ["gap"]}
    groups = SeedGroups(recording_searcher(), seeds=2, metrics=["gap"])
    groups.set_state(old_state)
    assert groups.suggest("t1") == {"train.lr": 2e-4, "__trial_index__": 1}
    groups.on_trial_complete("t1", {"gap": 3.0})
    assert groups.searcher.told == [("t0", {"gap": 2.0}, False)]
    assert groups.suggest("t2") == {"train.lr": 1e-4, "__trial_index__": 0}  # the next group: the searcher's
    assert "searcher" not in groups.get_state()
