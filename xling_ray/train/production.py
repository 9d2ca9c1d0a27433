"""Production training: one recipe, on Ray Train at the scale asked for, saved as
Hugging Face model folders.

``OUTPUT/`` receives ``<task>/`` (``save_pretrained`` model and tokenizer, one per
task: XNLI and PAWS-X have their own label sets), ``metrics.json`` (the final
17-language evaluation) and, from the Train run itself, ``ray/`` (its
checkpoint and logs; running again with the same ``OUTPUT`` resumes from it).
On CPU, with the recipe's seed and the same number of workers, this reproduces
the sweep trial the recipe came from: the same loop, threads and data order.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from xling_ray.config import RecipeConfig
from xling_ray.train.ray_train import make_trainer, ray_runtime


class TrainingFailed(RuntimeError):
    """Training raised on a worker after every input checked out; the message is one line."""


def worker_error(err: BaseException) -> str:
    """``ExceptionType: first line`` of the worker's own error inside Ray's wrappers
    (``WorkerGroupError.worker_failures``, ``RayTaskError.cause``, ``__cause__``)."""
    failures = getattr(err, "worker_failures", None)
    if failures:
        err = failures[min(failures)]
    while True:
        inner = getattr(err, "cause", None) or err.__cause__
        if not isinstance(inner, BaseException):
            break
        err = inner
    text = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def train_production(recipe: RecipeConfig, output: str | Path, address: str | None = None) -> dict[str, Any]:
    """Train ``recipe`` with a ``TorchTrainer`` and write ``output``; returns the final metrics."""
    import ray

    from xling_ray.preflight import check_recipe

    check_recipe(recipe)  # a bad input fails here, in one line, before Ray starts or anything is written
    output = Path(output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    with ray_runtime(address):
        if recipe.scaling.use_gpu is None:
            recipe = recipe.with_updates({"scaling.use_gpu": ray.cluster_resources().get("GPU", 0) > 0})
        try:
            result = make_trainer(recipe, name="train", storage_path=str(output / "ray"), export_models=True).fit()
            error = result.error  # Ray Train V1 returns it; V2 raises TrainingFailedError
        except ray.train.TrainingFailedError as err:
            error = err
        if error:
            raise TrainingFailed(f"training failed on a Ray Train worker ({worker_error(error)}); the worker's "
                                 f"traceback is printed above and kept under {output / 'ray'}") from error
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str))}
        with result.checkpoint.as_directory() as ckpt:
            for task in recipe.data.tasks:
                dest = output / task
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(Path(ckpt) / "models" / task, dest)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    return metrics
