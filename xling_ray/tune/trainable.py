"""One Tune trial: a sampled configuration applied to the fixed recipe, then trained.

A trial with one CPU worker, or one worker on a fraction of a GPU
(``scaling.gpus_per_worker < 1``: ``--gpus-per-trial 0.25`` packs four trials
onto a GPU), trains inside the trial's own process
(:class:`~xling_ray.train.TuneSession`): no worker group to start. A trial
with several workers or whole GPUs builds a Ray Train ``TorchTrainer`` and calls
``fit()`` (the Train V2 pattern: a Tune function trainable wrapping a
trainer, with ``TuneReportCallback`` forwarding its reports). The Train run is
named after the trial, so a restored trial resumes its own Train run.
"""
from __future__ import annotations

import os
from typing import Any

from ray import tune

from xling_ray.config import RecipeConfig
from xling_ray.train import TuneSession, run_recipe
from xling_ray.train.memory import memory_limit, release_memory
from xling_ray.train.ray_train import make_trainer
from xling_ray.tune.search import seed_index


def shares_a_gpu(recipe: RecipeConfig) -> bool:
    """One worker on a fraction of a GPU (``0 < scaling.gpus_per_worker < 1``): the trial holds
    that fraction itself and trains in its own process, so that ``1 / fraction`` trials run on
    one GPU at once. Ray schedules the fractions; it does not divide the GPU's memory: the
    trials packed onto a GPU must fit in it together."""
    s = recipe.scaling
    return s.num_workers == 1 and bool(s.use_gpu) and 0 < s.gpus_per_worker < 1


def uses_ray_train(recipe: RecipeConfig) -> bool:
    """Several workers, or a worker on whole GPUs: a Ray Train worker group (DDP)."""
    return recipe.scaling.num_workers > 1 or (bool(recipe.scaling.use_gpu) and not shares_a_gpu(recipe))


def trial_resources(recipe: RecipeConfig) -> dict[str, float]:
    """What the trial's own process holds: the whole worker (its CPUs, and its fraction of a
    GPU) when it trains in-process; nothing but a token when a Train worker group does the
    work (it asks for its own)."""
    if uses_ray_train(recipe):
        return {"cpu": 0, "memory": 1}
    if shares_a_gpu(recipe):
        return {"cpu": recipe.scaling.cpus_per_worker, "gpu": recipe.scaling.gpus_per_worker}
    return {"cpu": recipe.scaling.cpus_per_worker, **memory_resource(recipe)}


def memory_resource(recipe: RecipeConfig) -> dict[str, float]:
    """Ray's ``memory`` resource (bytes) a training process reserves: its cap,
    ``scaling.memory_limit_gb``, so that Ray packs no more of them on a node than fit; none without one."""
    gib = recipe.scaling.memory_limit_gb
    return {"memory": gib * 2**30} if gib else {}


def trial_recipe(recipe: RecipeConfig, config: dict[str, Any]) -> RecipeConfig:
    """The recipe a trial trains: the sampled settings applied, and the seed moved on by
    the trial's index among the configuration's seeds (``train.seed + index``)."""
    settings, index = seed_index(config)
    r = recipe.with_updates(settings)
    return r.with_updates({"train.seed": r.train.seed + index}) if index else r


def run_trial(config: dict[str, Any], recipe: dict[str, Any]) -> None:
    """Tune function trainable: ``config`` holds the sampled dotted settings.

    Sweeps reuse a trial's process for the next trial (``reuse_actors``), so a trial
    hands its memory back when it ends (:func:`~xling_ray.train.memory.release_memory`).
    A trial stopped early (ASHA) ends at its next report, and Tune reuses its process only if
    that happens within ``TUNE_FUNCTION_THREAD_TIMEOUT_S`` (Tune's default: 2 s; read by
    ``FunctionTrainable.reset_config`` in this process); a step or evaluation can take longer
    on a busy machine, and the next trial would then fail ("Could not re-use actor"). So this
    process waits up to a minute, unless the user set it."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    r = trial_recipe(RecipeConfig.model_validate(recipe), config)
    try:
        _run(r)
    finally:
        release_memory()


def shared_gpu_device(recipe: RecipeConfig) -> str:
    """The device of a trial on a fraction of a GPU: ``cuda`` (Ray shows the trial's process
    the GPU it was given as cuda:0). Where torch finds no CUDA device though Ray gave the
    trial a GPU (a CPU build of torch on the node, a node that declared GPUs it lacks), the
    trial fails at once with one line naming both, not deep inside the model's first move."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    import ray

    raise RuntimeError(
        f"scaling.gpus_per_worker={recipe.scaling.gpus_per_worker:g}: Ray gave this trial GPU "
        f"{[str(i) for i in ray.get_gpu_ids()]} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}) "
        f"but torch {torch.__version__} finds no CUDA device; install a CUDA build of torch on the GPU nodes, "
        "or set scaling.use_gpu false")


def _run(r: RecipeConfig) -> None:
    if not uses_ray_train(r):
        device = shared_gpu_device(r) if shares_a_gpu(r) else None
        with memory_limit(r.scaling.memory_limit_gb):
            run_recipe(r, TuneSession(num_threads=max(1, int(r.scaling.cpus_per_worker)), device=device))
        return
    import ray.train
    from ray.tune.integration.ray_train import TuneReportCallback

    ctx = tune.get_context()
    storage = ctx.get_storage()
    try:
        make_trainer(
            r, name=ctx.get_trial_id(),
            # Train runs live beside the trials, on the sweep's own storage.
            storage_path=os.path.join(storage.experiment_fs_path, "train"),
            storage_filesystem=storage.storage_filesystem,
            callbacks=[TuneReportCallback()],
        ).fit()
    except ray.train.TrainingFailedError as err:
        raise WorkerFailed(worker_failure(err, r.scaling.num_workers)) from err


class WorkerFailed(RuntimeError):
    """A Ray Train worker of the trial failed or was lost; the message (one line, the last of
    the trial's ``error.txt``, so the leaderboard's ``error``) names it."""


def worker_failure(err: BaseException, world_size: int) -> str:
    """``Ray Train worker 1 of 2 lost (pid 1095, node 10.0.0.2): ...`` for a worker whose
    process died (killed, out of memory, its node gone), else ``Ray Train worker 0 of 2 failed:
    ExceptionType: message`` with the worker's own error (a NaN loss, say)."""
    import re

    from xling_ray.train.production import worker_error

    failures = getattr(err, "worker_failures", None) or {}
    if not failures:
        return f"Ray Train failed: {worker_error(err)}"
    def lost(rank: int) -> bool:
        text = str(failures[rank])
        return "actor died" in text or "worker process has died" in text or "health check failed" in text

    # A lost worker first: the others then fail too, on the broken process group (gloo: connection reset).
    rank = min(failures, key=lambda r: (not lost(r), r))
    text = str(failures[rank])
    if lost(rank):
        pid, ip = re.search(r"\bpid: (\d+)", text), re.search(r"\bip: (\S+)", text)
        where = ", ".join(x for x in (f"pid {pid[1]}" if pid else "", f"node {ip[1]}" if ip else "") if x)
        return (f"Ray Train worker {rank} of {world_size} lost ({where or 'process died'}): its process died "
                "(killed, out of memory, or its node lost)")
    return f"Ray Train worker {rank} of {world_size} failed: {worker_error(failures[rank])}"
