"""Where a training loop reports to, and what it runs on.

The loop in :mod:`xling_ray.train.loop` is written once against :class:`Session`;
three sessions run it:

* :class:`TuneSession`: one worker, inside the Tune trial's own process: on the CPU,
  or on the fraction of a GPU Ray gave the trial (``--gpus-per-trial``). No worker
  group to start, so a trial reaches its first step in seconds.
* :class:`TrainSession`: a Ray Train worker (``TorchTrainer``), for several
  workers (DDP on gloo, or nccl on GPUs) or GPU workers.
* :class:`LocalSession`: no Ray at all (tests, debugging); keeps what is reported.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any, Protocol

import torch


class Session(Protocol):
    rank: int
    world_size: int
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Report metrics; every worker must call it (a barrier under Ray Train).
        ``checkpoint_dir`` (rank 0 only) is persisted and may be deleted afterwards."""

    def restore(self) -> contextlib.AbstractContextManager[str | None]:
        """A local folder holding the latest checkpoint, or None."""


class LocalSession:
    """Runs in the calling process; keeps reported metrics and the last checkpoint."""

    rank, world_size = 0, 1

    def __init__(self, checkpoint_root: str | None = None, device: str | None = None):
        self.device = torch.device(device or "cpu")
        self.reports: list[dict[str, Any]] = []
        self.checkpoint_root = checkpoint_root
        self._latest: str | None = None
        if checkpoint_root and os.path.isdir(os.path.join(checkpoint_root, "latest")):
            self._latest = os.path.join(checkpoint_root, "latest")

    def prepare_model(self, model):
        return model.to(self.device)

    def report(self, metrics, checkpoint_dir):
        self.reports.append(dict(metrics))
        if checkpoint_dir and self.checkpoint_root:
            dest = os.path.join(self.checkpoint_root, "latest")
            tmp = dest + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(checkpoint_dir, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
            self._latest = dest

    @contextlib.contextmanager
    def restore(self) -> Iterator[str | None]:
        yield self._latest


class TuneSession:
    """One worker inside a Tune function trainable, on ``device`` (default the CPU; ``"cuda"``:
    the GPU Ray assigned the trial, which it shows the process as ``cuda:0``)."""

    rank, world_size = 0, 1

    def __init__(self, num_threads: int | None = None, device: str | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or "cpu")

    def prepare_model(self, model):
        return model.to(self.device)

    def report(self, metrics, checkpoint_dir):
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def restore(self):
        from ray import tune

        ckpt = tune.get_checkpoint()
        if ckpt is None:
            yield None
        else:
            with ckpt.as_directory() as d:
                yield d


class TrainSession:
    """One worker of a Ray Train ``TorchTrainer`` (the process group is already set up)."""

    def __init__(self, num_threads: int | None = None):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        if num_threads and self.device.type == "cpu":
            torch.set_num_threads(num_threads)  # as a one-worker Tune trial does: same threads, same sums

    def prepare_model(self, model):
        import ray.train.torch

        # DDP needs every parameter to get a gradient unless told otherwise; frozen
        # parameters (requires_grad False) are skipped by DDP itself.
        return ray.train.torch.prepare_model(model)

    def report(self, metrics, checkpoint_dir):
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    @contextlib.contextmanager
    def restore(self):
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
        else:
            with ckpt.as_directory() as d:
                yield d


@contextlib.contextmanager
def scratch_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="xling_ckpt_")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
