"""The Ray Train side of a recipe: a ``TorchTrainer`` whose workers run the loop.

Used by a sweep trial with several workers or GPUs (inside the Tune trial) and by
production training (``xling-ray train``). DDP runs on gloo on CPU and on nccl
on GPUs; bf16 autocast on GPUs comes from ``scaling.mixed_precision``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from xling_ray.config import RecipeConfig
from xling_ray.train.loop import train_loop_per_worker


def make_trainer(
    recipe: RecipeConfig,
    *,
    name: str,
    storage_path: str,
    storage_filesystem: Any = None,
    callbacks: list[Any] | None = None,
    export_models: bool = False,
):
    """A ``TorchTrainer`` for ``recipe.scaling``, keeping one checkpoint. A Train run
    of the same ``name`` under ``storage_path`` resumes from its last checkpoint."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = bool(recipe.scaling.use_gpu)
    per_worker = {"CPU": recipe.scaling.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = recipe.scaling.gpus_per_worker
    if recipe.scaling.memory_limit_gb:  # each worker's cap (xling_ray.train.memory), reserved in Ray's scheduler
        per_worker["memory"] = recipe.scaling.memory_limit_gb * 2**30
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"recipe": recipe.model_dump(), "export_models": export_models},
        scaling_config=ray.train.ScalingConfig(
            num_workers=recipe.scaling.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks or None,
        ),
    )


@contextlib.contextmanager
def ray_runtime(address: str | None = None, log_to_driver: bool = True) -> Iterator[None]:
    """Ray for a driver: the cluster at ``address`` (or ``$RAY_ADDRESS``, as a Ray job
    sets it), else a private local Ray, never a stray ``ray start`` head on this
    machine. What it started it shuts down on exit (then rather than at interpreter
    exit, so the actors' shutdown chatter comes before what the driver prints next).
    Inside an already initialised Ray it does nothing."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
             log_to_driver=log_to_driver, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        yield
    finally:
        ray.shutdown()
