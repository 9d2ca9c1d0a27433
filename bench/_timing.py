"""Shared by the bench scripts: the median wall time of full training steps."""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from xling_ray.config import LossConfig
from xling_ray.train.step import training_step


def median_step_seconds(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], losses: LossConfig,
                        state: dict[str, Any] | None = None, lr: float = 2e-5) -> float:
    """Forward, backward and AdamW update on each batch; the first batch only warms up
    (allocators, and one-time work such as a neighbour table)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    times = []
    for r, batch in enumerate(batches):
        t0 = time.perf_counter()
        out = training_step(model, batch, losses, state=state)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if r:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
