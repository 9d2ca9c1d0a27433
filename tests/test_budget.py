"""Budgets (xling_ray.tune.budget): every search space at the CPU learning budget and at the full
one, the full one being XTREME's published fine-tuning protocol, composed over the space (no
second copy of any space)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xling_ray.config import ConfigError, DataConfig
from xling_ray.data import DataError, load_train_set
from xling_ray.tune.budget import BUDGETS, Budget, apply_budget
from xling_ray.tune.space import load_search_space

REPO = Path(__file__).resolve().parents[1]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))

#: XTREME's XNLI and PAWS-X baselines (Hu et al. 2020; google-research/xtreme scripts/train_xnli.sh and
#: train_pawsx.sh, base-size models; third_party/run_classify.py's defaults): typed here from the scripts.
XTREME = {"lr": 2e-5, "batch": 8 * 4, "epochs": 5, "max_length": 128, "warmup": 0.0, "weight_decay": 0.0,
          "max_grad_norm": 1.0}


def test_the_shipped_budgets_are_cpu_and_full():
    assert sorted(p.stem for p in (REPO / "search_spaces" / "budgets").glob("*.yaml")) == sorted(BUDGETS)


@pytest.mark.parametrize("space_path", SPACES, ids=lambda p: p.stem)
def test_every_space_loads_at_every_budget(space_path):
    as_written = load_search_space(space_path)
    cpu = load_search_space(space_path, budget="cpu")
    full = load_search_space(space_path, budget="full")
    # cpu: the space as written, the learning budget it has today.
    assert cpu.model_dump() == as_written.model_dump()
    # (the quickstart: XNLI on twice PAWS-X's pairs, bench/LEARNING.md)
    sizes = {"xnli": 4000, "pawsx": 2000} if space_path.stem == "quickstart" else 2000
    assert cpu.recipe.data.train_size == sizes and cpu.recipe.model.max_length == 64
    # full: XTREME's protocol, whatever the space set.
    r = full.recipe
    assert (r.train.lr, r.train.batch_size, r.train.epochs, r.model.max_length) == (
        XTREME["lr"], XTREME["batch"], XTREME["epochs"], XTREME["max_length"])
    assert (r.train.warmup_ratio, r.train.weight_decay, r.train.max_grad_norm) == (
        XTREME["warmup"], XTREME["weight_decay"], XTREME["max_grad_norm"])
    assert r.train.head_lr is None and r.train.layer_decay == 1.0  # one learning rate for every parameter
    assert r.data.train_size is None and r.data.train_full and r.data.eval_max_per_language is None
    assert not r.model.freeze_word_embeddings and r.model.freeze_layers == 0
    # Curves at this size: 4 evaluations during each epoch of 392,702 + 49,401 pairs (not the quickstart's every 1,000).
    assert (r.train.eval_every_examples, r.train.eval_subset_per_language) == (110000, 300)
    assert (392_702 + 49_401) // 110000 == 4
    # A GPU per trial where the cluster has one (use_gpu left to the cluster), bf16 there.
    assert r.scaling.use_gpu is None and r.scaling.gpus_per_worker == 1 and r.scaling.mixed_precision == "auto"
    assert full.sweep.seeds == 3
    # What the budget fixes is searched no more; every other searched field still is, with its range.
    assert "train.lr" not in full.search and all("train.lr" not in p for p in full.sweep.points_to_evaluate)
    assert {k: v for k, v in as_written.search.items() if not k.startswith("train.")} == \
        {k: v for k, v in full.search.items()}
    # What the budget leaves alone (the method's own fixed settings, the pools, the tasks) stays the space's.
    assert r.losses == as_written.recipe.losses and r.data.tasks == as_written.recipe.data.tasks
    assert r.data.eval_skip_first == as_written.recipe.data.eval_skip_first


def test_a_method_space_keeps_its_plain_baseline_at_full_budget():
    """The plain baseline at full budget is plain fine-tuning at the published protocol: every
    regularizer off and the learning rate the budget fixed."""
    full = load_search_space(REPO / "search_spaces" / "xlinglearn.yaml", budget="full")
    point = full.baseline_point
    assert point is not None and full.runs_baseline_first
    assert all(point[k] == 0.0 for k in point if k.rsplit(".", 1)[-1].startswith("w_"))
    assert full.recipe.with_updates(point).train.lr == 2e-5


def test_apply_budget_fixes_what_it_sets_and_keeps_the_rest():
    raw = {"recipe": {"train": {"epochs": 1}},
           "search": {"train.lr": {"loguniform": [1e-5, 1e-3]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]}},
           "sweep": {"seeds": 1, "points_to_evaluate": [{"train.lr": 1e-4, "train.warmup_ratio": 0.1}]}}
    out = apply_budget(raw, Budget(recipe={"train.lr": 3e-5, "train.epochs": 4}, sweep={"seeds": 5}))
    assert out == {"recipe": {"train": {"epochs": 4, "lr": 3e-5}},
                   "search": {"train.warmup_ratio": {"uniform": [0.0, 0.2]}},
                   "sweep": {"seeds": 5, "points_to_evaluate": [{"train.warmup_ratio": 0.1}]}}
    assert raw["sweep"]["seeds"] == 1 and "train.lr" in raw["search"]  # a copy: the space is unchanged
    # Nothing left to search: no first points either (the sweep runs the recipe over its seeds).
    bare = apply_budget(raw, Budget(recipe={"train.lr": 3e-5, "train.warmup_ratio": 0.0}))
    assert bare["search"] == {} and bare["sweep"]["points_to_evaluate"] == []


def test_set_overrides_win_over_the_budget(tmp_path):
    space = load_search_space(REPO / "search_spaces" / "xite.yaml", {"recipe.train.epochs": 2}, budget="full")
    assert space.recipe.train.epochs == 2 and space.recipe.train.batch_size == 32
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"recipe": {"train.epochs": 3}, "sweep": {"seeds": 2}}))
    space = load_search_space(REPO / "search_spaces" / "xite.yaml", budget=own)
    assert (space.recipe.train.epochs, space.sweep.seeds, space.recipe.train.batch_size) == (3, 2, 16)


def test_unknown_budget_and_bad_budget_fields_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"--budget huge: .*budgets/huge.yaml not found; budgets there: \['cpu', 'full'\]"):
        load_search_space(REPO / "search_spaces" / "xite.yaml", budget="huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: {train.lerning_rate: 1.0e-4}\n")
    with pytest.raises(ConfigError, match="train.lerning_rate: Extra inputs are not permitted"):
        load_search_space(REPO / "search_spaces" / "xite.yaml", budget=bad)
    bad.write_text("recipes: {}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: recipes: Extra inputs are not permitted"):
        load_search_space(REPO / "search_spaces" / "xite.yaml", budget=bad)


def test_offline_data_lacks_the_full_training_sets_and_says_so(data_dir):
    cfg = DataConfig(data_dir=str(data_dir), train_full=True)
    with pytest.raises(DataError, match=r"^.*/train/mnli-en.tsv: the MultiNLI training set there has 15,001 pairs, the "
                                        r"published one 392,702 .*Hugging Face hub \(nyu-mll/multi_nli"):
        load_train_set(cfg, "xnli")
    with pytest.raises(DataError, match=r"has 8,000 pairs, the published one 49,401"):
        load_train_set(cfg, "pawsx")
    # Without train_full the same folder trains on what it has.
    assert len(load_train_set(DataConfig(data_dir=str(data_dir)), "pawsx")) == 8000


def test_a_folder_with_the_whole_training_set_passes(tmp_path):
    (tmp_path / "train").mkdir()
    rows = "".join(f"{i}\ta {i}\tb {i}\t{i % 2}\n" for i in range(49_401))
    (tmp_path / "train" / "paws-en.tsv").write_text("id\tsentence1\tsentence2\tlabel\n" + rows)
    data = load_train_set(DataConfig(data_dir=str(tmp_path), train_full=True), "pawsx")
    assert len(data) == 49_401 and data.labels[:3] == (0, 1, 0)


def test_cli_full_budget_on_the_offline_data_stops_before_ray(data_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "xling_ray.cli", "sweep", str(REPO / "search_spaces" / "xite.yaml"),
                           "--budget", "full", "--data-dir", str(data_dir), "--storage", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xling-ray: error: ")
    assert "the published one 392,702" in lines[0] and "Hugging Face hub" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("space_path", SPACES, ids=lambda p: p.stem)
def test_optuna_distributions_without_ray_equal_ray_tunes_conversion(space_path):
    """What the GPU bundle asks Optuna (xling_ray.tune.sampling, no Ray) is what a sweep asks it
    through Ray Tune's OptunaSearch, at both budgets."""
    from ray.tune.search.optuna import OptunaSearch

    from xling_ray.tune.sampling import optuna_distributions

    for budget in BUDGETS:
        space = load_search_space(space_path, budget=budget)
        assert optuna_distributions(space.search) == dict(OptunaSearch.convert_search_space(space.param_space()))


def test_sampled_configurations_start_with_the_first_points_and_stay_in_range():
    from xling_ray.tune.sampling import sample_configurations

    space = load_search_space(REPO / "search_spaces" / "xite.yaml")
    configs = sample_configurations(space, 5)
    assert configs[0] == dict(space.sweep.points_to_evaluate[0])
    assert configs == sample_configurations(space, 5)  # seeded by sweep.seed
    for c in configs[1:]:
        assert set(c) == set(space.search)
        for key, value in c.items():
            d = space.search[key]
            assert value in d.choice if d.kind == "choice" else d.extremes()[0] <= value <= d.extremes()[1]
