"""Production training: one recipe, on Ray Train at the scale asked for, saved as
Hugging Face model folders.

``OUTPUT/`` receives ``<task>/`` (``save_pretrained`` model and tokenizer, one per
task: XNLI and PAWS-X have their own label sets), ``metrics.json`` (the final
17-language evaluation) and, from the Train run itself, ``ray/`` (its
checkpoint and logs; running again with the same ``OUTPUT`` resumes from it).
On CPU, with the recipe's seed and the same number of workers, this reproduces
the sweep trial the recipe came from: the same loop, threads and data order.

What it prints is a sweep's: by default one line per evaluation (:func:`progress_line`, sent
from Ray Train's controller to the driver through a ``ray.util.queue.Queue``) and none of
Ray's own output (its actors' logs stay under ``OUTPUT/ray`` and Ray's session folder;
among them a Train V2 helper warns every few seconds when Ray runs without its dashboard,
as ``xling-ray`` starts it); ``verbose=2`` (``--verbose``) forwards Ray's output again,
``verbose=0`` (``--quiet``) prints no progress.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import sys
import threading
import traceback
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


def progress_line(metrics: dict[str, Any], epochs: int) -> str:
    """One evaluation of a production run, as printed:
    ``epoch 1.00/2 | 96 examples seen | gap 0.30, acc_en 58.33, acc_target 51.25 | 0:06``
    (``(subset)`` after the figures when only ``train.eval_subset_per_language`` examples were scored)."""
    from xling_ray.tune.progress import format_duration

    figures = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("gap", "acc_en", "acc_target") if k in metrics)
    subset = " (subset)" if metrics.get("eval_full") == 0 else ""
    return (f"epoch {metrics.get('epoch', float('nan')):.2f}/{epochs} | {metrics.get('examples_seen', '?')} examples seen"
            f" | {figures}{subset} | {format_duration(metrics.get('time_total_s', 0.0))}")


def _progress_callback(queue):
    """A Ray Train ``UserCallback`` (run in Train's controller) putting rank 0's report on ``queue``;
    ``None`` under Ray Train V1 (``RAY_TRAIN_V2_ENABLED=0``), which has no such callbacks."""
    try:
        from ray.train import UserCallback
    except ImportError:
        return None

    class ReportsToDriver(UserCallback):
        def __init__(self, queue):
            self.queue = queue

        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                self.queue.put({k: v for k, v in metrics[0].items() if isinstance(v, (int, float))})

    return ReportsToDriver(queue)


@contextlib.contextmanager
def printed_progress(epochs: int, out=None):
    """A queue whose reports a driver thread prints as :func:`progress_line`; yields the Train
    callback that fills it. Every report put before the block ends is printed."""
    from ray.util.queue import Empty, Queue

    out = out or sys.stdout
    queue = Queue(actor_options={"num_cpus": 0})
    stop = threading.Event()

    def pump():
        while True:
            try:
                metrics = queue.get(timeout=0.5)
            except Empty:
                if stop.is_set():
                    return
                continue
            print(progress_line(metrics, epochs), file=out, flush=True)

    thread = threading.Thread(target=pump, name="xling-train-progress", daemon=True)
    thread.start()
    try:
        yield _progress_callback(queue)
    finally:
        stop.set()
        thread.join(timeout=10)
        queue.shutdown()


def train_production(recipe: RecipeConfig, output: str | Path, address: str | None = None,
                     verbose: int = 1) -> dict[str, Any]:
    """Train ``recipe`` with a ``TorchTrainer`` and write ``output``; returns the final metrics.
    ``verbose``: 0 nothing while it trains, 1 a line per evaluation, 2 Ray's own output too."""
    import ray

    from xling_ray.preflight import check_recipe

    check_recipe(recipe)  # a bad input fails here, in one line, before Ray starts or anything is written
    output = Path(output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    with ray_runtime(address, log_to_driver=verbose >= 2):
        if recipe.scaling.use_gpu is None:
            recipe = recipe.with_updates({"scaling.use_gpu": ray.cluster_resources().get("GPU", 0) > 0})
        progress = printed_progress(recipe.train.epochs) if verbose >= 1 else contextlib.nullcontext()
        try:
            with progress as callback:
                result = make_trainer(recipe, name="train", storage_path=str(output / "ray"), export_models=True,
                                      callbacks=[callback] if callback else None).fit()
            error = result.error  # Ray Train V1 returns it; V2 raises TrainingFailedError
        except ray.train.TrainingFailedError as err:
            error = err
        if error:
            if verbose < 2:  # Ray's forwarded logs, which would hold it, are off: the worker's traceback here
                print("".join(traceback.format_exception(error)).rstrip(), file=sys.stderr, flush=True)
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
