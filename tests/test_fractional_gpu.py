"""Trials packed onto a GPU: ``--gpus-per-trial F`` (one worker on a fraction F of a GPU).

A local Ray started with a fake GPU (``num_gpus=1`` on a machine without one) schedules
trials asking for the product's own resources (``trial_resources``): four of 0.25 run at once
(a sleeping trial, so that they overlap) and a fifth waits for one of them to end. The
product's own trial (:func:`xling_ray.tune.sweep.sweep_trainable`: ``run_trial`` holding those
resources) runs there too: given GPU 0 by Ray, it finds no CUDA device in this CPU build of
torch and fails at once with one line naming both.
"""
from __future__ import annotations

import time

import pytest

from xling_ray.cli import build_parser, _scaling_overrides
from xling_ray.config import ConfigError, RecipeConfig
from xling_ray.tune.trainable import shares_a_gpu, trial_resources, uses_ray_train


def _recipe(**scaling) -> RecipeConfig:
    return RecipeConfig().with_updates({f"scaling.{k}": v for k, v in scaling.items()})


def test_one_worker_on_a_fraction_of_a_gpu_trains_in_the_trial_holding_that_fraction():
    quarter = _recipe(num_workers=1, use_gpu=True, gpus_per_worker=0.25, cpus_per_worker=2)
    assert shares_a_gpu(quarter) and not uses_ray_train(quarter)
    assert trial_resources(quarter) == {"cpu": 2, "gpu": 0.25}
    # Whole GPUs, or several workers: a Ray Train worker group, the trial holds a token only (as before).
    for r in (_recipe(use_gpu=True, gpus_per_worker=1), _recipe(num_workers=2, use_gpu=True, gpus_per_worker=0.5),
              _recipe(num_workers=2, use_gpu=False)):
        assert uses_ray_train(r) and not shares_a_gpu(r) and trial_resources(r) == {"cpu": 0, "memory": 1}
    cpu = _recipe(use_gpu=False, gpus_per_worker=0.25, cpus_per_worker=2)
    assert not shares_a_gpu(cpu) and trial_resources(cpu) == {"cpu": 2}


def test_a_shared_gpu_trial_runs_the_loop_in_process_on_cuda(monkeypatch):
    """The trial's own session, on the GPU Ray gave it (cuda:0 in its process), no TorchTrainer."""
    import torch

    from xling_ray.tune import trainable

    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the machine around the trial has a GPU
    monkeypatch.setattr(trainable, "run_recipe", lambda r, session: seen.update(device=session.device, recipe=r))
    monkeypatch.setattr(trainable, "make_trainer", lambda *a, **k: pytest.fail("a shared-GPU trial started Ray Train"))
    trainable._run(_recipe(use_gpu=True, gpus_per_worker=0.25, cpus_per_worker=1))
    assert seen["device"].type == "cuda"
    trainable._run(_recipe(use_gpu=False))
    assert seen["device"].type == "cpu"


def _args(*argv: str):
    return build_parser().parse_args(["sweep", "s.yaml", *argv])


def test_gpus_per_trial_flag():
    assert _scaling_overrides(_args("--gpus-per-trial", "0.25")) == {
        "recipe.scaling.num_workers": 1, "recipe.scaling.use_gpu": True, "recipe.scaling.gpus_per_worker": 0.25}
    assert _scaling_overrides(_args("--gpus-per-trial", "0.5", "--cpus-per-worker", "4")) == {
        "recipe.scaling.num_workers": 1, "recipe.scaling.use_gpu": True, "recipe.scaling.gpus_per_worker": 0.5,
        "recipe.scaling.cpus_per_worker": 4.0}
    for bad in (["--gpus-per-trial", "0"], ["--gpus-per-trial", "2"], ["--gpus-per-trial", "0.5", "--workers", "2"],
                ["--gpus-per-trial", "0.5", "--gpus-per-worker", "1"]):
        with pytest.raises(ConfigError):
            _scaling_overrides(_args(*bad))


@pytest.fixture
def ray_with_one_fake_gpu():
    import ray

    ray.init(address="local", num_cpus=8, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_four_quarter_gpu_trials_run_at_once_and_a_fifth_waits(ray_with_one_fake_gpu, tmp_path):
    from ray import tune

    def trial(config):
        import ray

        start = time.time()
        time.sleep(10)  # long beside an actor's start, so that the four overlap even on a loaded machine
        tune.report({"start": start, "end": time.time(), "gpus": len(ray.get_gpu_ids())})

    resources = trial_resources(_recipe(use_gpu=True, gpus_per_worker=0.25, cpus_per_worker=1))
    tuner = tune.Tuner(
        tune.with_resources(trial, resources),
        param_space={"i": tune.grid_search(list(range(5)))},
        run_config=tune.RunConfig(name="packed", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    spans = sorted((r.metrics["start"], r.metrics["end"]) for r in results)
    assert len(spans) == 5 and all(r.metrics["gpus"] == 1 for r in results)  # each trial sees the one GPU
    running = peak = 0
    for _, step in sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1])):
        running += step
        peak = max(peak, running)
    assert peak == 4, spans  # four at once, never five
    assert spans[4][0] >= min(end for _, end in spans[:4]) - 0.05, spans  # the fifth waited for one to end


def test_the_products_trial_on_a_fake_gpu_is_given_the_gpu_and_names_the_cuda_device_torch_lacks(
        ray_with_one_fake_gpu, tiny_recipe, tmp_path):
    """The product's trial (the sweep's trainable, its resources), not a stand-in: Ray gives
    each a quarter of GPU 0; torch (a CPU build here) has no CUDA device, and the trial says
    so in one line before it loads anything, instead of failing inside the model's first move."""
    import torch
    from ray import tune

    from xling_ray.tune.sweep import sweep_trainable

    recipe = tiny_recipe.with_updates({"scaling.use_gpu": True, "scaling.gpus_per_worker": 0.25,
                                       "scaling.cpus_per_worker": 1})
    trainable = sweep_trainable(recipe)
    tuner = tune.Tuner(trainable, param_space={"train.seed": tune.grid_search(list(range(5)))},
                       run_config=tune.RunConfig(name="product", storage_path=str(tmp_path), verbose=0))
    results = tuner.fit()
    assert len(results) == 5 and len(results.errors) == 5
    want = (f"scaling.gpus_per_worker=0.25: Ray gave this trial GPU ['0'] (CUDA_VISIBLE_DEVICES='0') but torch "
            f"{torch.__version__} finds no CUDA device")
    lines = [str(e).strip().splitlines()[-1] for e in results.errors]
    assert all(want in line for line in lines), lines[0]
