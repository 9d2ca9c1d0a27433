"""Shared by the staged benchmark (``bench/run.py``): where results go, the machine, small recipes."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS_DIR = BENCH / "results"


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
