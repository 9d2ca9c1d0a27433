"""One Tune trial: a sampled configuration applied to the fixed recipe, then trained.

A trial with one CPU worker trains inside the trial's own process
(:class:`~xling_ray.train.TuneSession`): no worker group to start. A trial
with several workers or GPUs builds a Ray Train ``TorchTrainer`` and calls
``fit()`` (the Train V2 pattern: a Tune function trainable wrapping a
trainer, with ``TuneReportCallback`` forwarding its reports). The Train run is
named after the trial, so a restored trial resumes its own Train run.
"""
from __future__ import annotations

import os
from typing import Any

from ray import tune

from xling_ray.config import RecipeConfig
from xling_ray.train import TuneSession, run_recipe, train_loop_per_worker


def uses_ray_train(recipe: RecipeConfig) -> bool:
    return recipe.scaling.num_workers > 1 or bool(recipe.scaling.use_gpu)


def trial_resources(recipe: RecipeConfig) -> dict[str, float]:
    """What the trial's own process holds: the whole worker when it trains in-process;
    nothing but a token when a Train worker group does the work (it asks for its own)."""
    if uses_ray_train(recipe):
        return {"cpu": 0, "memory": 1}
    return {"cpu": recipe.scaling.cpus_per_worker}


def run_trial(config: dict[str, Any], recipe: dict[str, Any]) -> None:
    """Tune function trainable: ``config`` holds the sampled dotted settings."""
    r = RecipeConfig.model_validate(recipe).with_updates(config)
    if not uses_ray_train(r):
        run_recipe(r, TuneSession(num_threads=max(1, int(r.scaling.cpus_per_worker))))
        return
    _fit_with_ray_train(r)


def _fit_with_ray_train(r: RecipeConfig) -> None:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = tune.get_context()
    use_gpu = bool(r.scaling.use_gpu)
    per_worker = {"CPU": r.scaling.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = r.scaling.gpus_per_worker
    storage = ctx.get_storage()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"recipe": r.model_dump()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=r.scaling.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=ctx.get_trial_id(),
            # Train runs live beside the trials, on the sweep's own storage.
            storage_path=os.path.join(storage.experiment_fs_path, "train"),
            storage_filesystem=storage.storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()
