"""Shared by the bench scripts: the command line, where results go (and their JSON), the machine, the
clock, a timestamped log, a sampling thread, the pages' cells, tables and paths, and the small recipe and
local sweep the Ray items run."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

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


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON at ``path``, whole or not at all (written beside it, then renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def save(item: str, result: dict[str, Any], path: Path | None = None) -> Path:
    """``bench/results/<item>.json`` (or ``path``) with the command and the machine: what ``bench/run.py``
    turns into RESULTS.md."""
    path = Path(path) if path else RESULTS_DIR / f"{item}.json"
    write_json(path, dict(result, item=item, command="python " + " ".join(sys.argv), machine=machine()))
    return path


def load(item: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{item}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def abba(sides: dict[str, Callable[[], dict]], repeats: int, result: dict[str, Any]) -> None:
    """Each side run ``repeats`` times in ABBA order (the machine's load drifts, and no side should always
    run first), each run appended to ``result["<side>_runs"]``."""
    for r in range(repeats):
        for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            result.setdefault(f"{side}_runs", []).append(sides[side]())
            print(side, json.dumps(result[f"{side}_runs"][-1], indent=1, default=str), flush=True)


def fmt(x, spec: str = ".2f", missing: str = "n/a") -> str:
    """A page's cell: a float formatted by ``spec``, anything else as it is, ``missing`` for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    return format(x, spec) if isinstance(x, float) else str(x)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def table(header: list[str], rows, cell: Callable[[Any], str] = str) -> list[str]:
    """A Markdown table's lines: the header (an empty heading is ``| |``), its rule, a line per row, each
    cell written by ``cell``."""
    return ["|" + "|".join(f" {h} " if h else " " for h in header) + "|", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(cell, row)) + " |" for row in rows]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and the wall seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class Log:
    """Timestamped lines on stdout and, with a ``path``, in that file."""

    def __init__(self, path: Path | None, name: str = "gpu-kit"):
        self.path, self.name = path, name

    def __call__(self, text: str) -> None:
        line = f"[{self.name} {time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def attach(self, title: str, path: Path, limit: int = 200_000) -> None:
        """Append a worker's log (its last ``limit`` bytes) under a title."""
        if not self.path or not path.is_file():
            return
        data = path.read_bytes()
        cut = data[-limit:]
        with open(self.path, "ab") as f:
            f.write(f"\n----- {title} ({len(data)} bytes{', last ' + str(limit) if len(data) > limit else ''}) -----\n".encode())
            f.write(cut + b"\n")


def repo_relative(path: Path) -> str:
    """``path`` as a page or a message names it: relative to the repository where it is inside it."""
    return str(path.relative_to(BENCH.parent)) if path.is_relative_to(BENCH.parent) else str(path)


class Sampler(threading.Thread):
    """Calls ``sample()`` every ``period`` seconds while its ``with`` block runs (a daemon thread)."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self._done = period, threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.period)


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


def trainer_dataset(tok, data, max_length: int, padding: bool | str = False):
    """A set tokenised as a Hugging Face ``Trainer`` user does it: a ``datasets.Dataset`` of the
    tokenizer's columns and the labels."""
    from datasets import Dataset

    enc = tok(list(data.text_a), list(data.text_b), truncation=True, max_length=max_length, padding=padding)
    return Dataset.from_dict({**enc, "labels": list(data.labels)})


def eval_seconds(model, sets: dict, batch_size: int, pad_id: int, device: Any = None, autocast: Any = None) -> float:
    """Seconds of one :func:`xling_ray.train.evaluate.evaluate` of ``sets`` (on a GPU, once its kernels are done)."""
    import torch

    from xling_ray.train.evaluate import evaluate

    device = device or torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    evaluate(model, sets, batch_size, pad_id, device, autocast)
    sync()
    return time.perf_counter() - t0


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
        run_dir, wall = timed(lambda: run_sweep(SearchSpace.model_validate(space), storage=storage, name="bench",
                                                verbose=0))
        trials = sorted(ExperimentAnalysis(str(run_dir)).trials, key=lambda t: t.trial_id)
    return wall, [{**(t.last_result or {}), "config": {k: v for k, v in t.config.items() if not k.startswith("__")}}
                  for t in trials]
