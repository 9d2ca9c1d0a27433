"""Shared by the bench scripts: the command line, where results go, the machine, the clock, and the
small recipe and local sweep the Ray items run."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS_DIR = BENCH / "results"
#: The test suite's tiny random model (tests/conftest.py TINY_MODEL) and a few examples: what the study's
#: ``--smoke`` and the GPU bundle's dry run train, to test their pipelines in minutes.
TINY_MODEL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
TINY = {"model.random_init": True, "model.config_overrides": TINY_MODEL, "model.max_length": 48, "data.train_size": 48,
        "losses.adjustment.align_layer": 1, "losses.adjustment.steps": 4, "losses.pool.max_per_language": 8}


def parser(doc: str) -> argparse.ArgumentParser:
    """A script's command line: its docstring's first line, and ``--data-dir``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data")
    return p


def machine() -> dict[str, Any]:
    import torch

    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": torch.cuda.is_available(),
            "load_1min_at_start": round(load, 2), "date": time.strftime("%Y-%m-%d %H:%M")}


def save(item: str, result: dict[str, Any], command: str | None = None) -> Path:
    """``bench/results/<item>.json``: what ``bench/run.py`` turns into RESULTS.md."""
    RESULTS_DIR.mkdir(exist_ok=True)
    result = {"item": item, "command": command or "python " + " ".join(sys.argv), "machine": machine(), **result}
    path = RESULTS_DIR / f"{item}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def load(item: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{item}.json"
    return json.loads(path.read_text()) if path.is_file() else None


class Stopwatch:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0


def median_step_seconds(model, batches: list[dict], losses, state: dict[str, Any] | None = None, lr: float = 2e-5,
                        warmup: int = 1, autocast: Any = None) -> float:
    """Forward (the product's :func:`~xling_ray.train.step.training_step`), backward and AdamW update
    on each batch; the first ``warmup`` batches only warm up (allocators, and one-time work such as a
    neighbour table). Each batch is moved to the model's device before its clock starts; on a GPU the
    clock waits for the step's kernels. ``autocast``: a ``torch.autocast`` context (the product's bf16)."""
    import contextlib

    import torch

    from xling_ray.train.step import training_step

    device = next(model.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    times = []
    for r, batch in enumerate(batches):
        batch = {k: v.to(device) for k, v in batch.items()}
        sync()
        t0 = time.perf_counter()
        with autocast or contextlib.nullcontext():
            out = training_step(model, batch, losses, state=state)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sync()
        if r >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_batches(data, batch_size: int, n: int, pad_id: int) -> list[dict]:
    """The first ``n`` batches of an encoded set, in order (:func:`xling_ray.data.batches.collate`)."""
    from xling_ray.data.batches import collate

    return [collate(data, list(range(r * batch_size, (r + 1) * batch_size)), pad_id) for r in range(n)]


def small_recipe(args, data: dict | None = None, train: dict | None = None):
    """The Ray items' recipe: the offline model cut to ``--layers`` layers, frozen word embeddings,
    length 64, ``--train-size`` English pairs per task, ``--per-language`` evaluation pairs, one
    CPU worker of ``--cpus`` threads, one epoch; ``data`` and ``train`` settings on top."""
    from xling_ray.config import ModelConfig, RecipeConfig

    return RecipeConfig.model_validate({
        "model": ModelConfig(freeze_word_embeddings=True, max_length=64, num_layers=args.layers).model_dump(),
        "data": {"data_dir": os.path.abspath(args.data_dir), "train_size": args.train_size,
                 "eval_max_per_language": args.per_language, **(data or {})},
        "train": {"epochs": 1, "eval_batch_size": 64, **(train or {})},
        "scaling": {"num_workers": 1, "cpus_per_worker": args.cpus, "use_gpu": False},
    })


def sweep_trials(space: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """``space`` (a search space as a dict) swept locally by the product (``run_sweep``) in a
    temporary folder: the wall seconds, and each trial's last result with its sampled ``config``,
    in trial-id order."""
    from ray.tune import ExperimentAnalysis

    from xling_ray.tune.space import SearchSpace
    from xling_ray.tune.sweep import run_sweep

    with tempfile.TemporaryDirectory() as storage:
        t0 = time.perf_counter()
        run_dir = run_sweep(SearchSpace.model_validate(space), storage=storage, name="bench", verbose=0)
        wall = time.perf_counter() - t0
        trials = sorted(ExperimentAnalysis(str(run_dir)).trials, key=lambda t: t.trial_id)
    return wall, [{**(t.last_result or {}), "config": {k: v for k, v in t.config.items() if not k.startswith("__")}}
                  for t in trials]
