"""What the GPU bundle's scripts share: sizes and budgets (:class:`Profile`),
the log (``_common.Log``), worker processes, the GPU memory sampler, and the run's context (where
the bundle, the data and the model are, and what every recipe of the run sets)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (str(HERE), str(HERE.parent), str(REPO)):  # the bundle, bench/ (its _common), the product
    if _p not in sys.path:
        sys.path.insert(0, _p)

import kit  # noqa: E402  (numpy and the standard library only)
from _common import TINY, Log, Sampler, write_json  # noqa: E402,F401  (TINY: a dry run's tiny random model, over the pruned vocabulary)

#: Every worker started, so that the run ends them all whatever happens (run.main).
STARTED: list[subprocess.Popen] = []


class Profile:
    """Sizes of a GPU run and of a dry run, and each part's share of the wall-clock budget
    (``--budget-s``): a part that overruns its share is killed and the next one starts."""

    SHARES = {"a": 0.3, "b": 0.5, "c": 0.12}

    def __init__(self, dry: bool, budget_s: float):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.deadline = budget_s                      # the whole run, from its start
        self.budget = {part: share * budget_s for part, share in self.SHARES.items()}
        # CPU threads per worker process: the dry run's tiny model is fastest on one (and the
        # machines it runs on are shared); on a GPU, part a takes the recipe's cpus_per_worker.
        self.threads = 1 if dry else None
        self.minimum = {"a": 30, "b": 60, "c": 25}     # below this a part is skipped, not started
        # a: one phase each, shares of the part's budget; trials stop being started at 70 % of a share.
        self.a_shares = {"sequential": 0.4, "packed": 0.4, "ddp": 0.2}
        self.a_procs = 2 if dry else 4
        self.a_trials = 2 if dry else 24               # trials a phase may start (GPU: the budget decides)
        # b
        self.b_seeds = 1 if dry else 3
        self.b_procs = 2 if dry else 8
        self.b_eval_batch = 64 if dry else 256
        # c: training batch and its most tokens, steps timed after the warm-up ones; evaluation pairs per language, batch
        self.c = (dict(batch=8, length=48, warmup=1, steps=2, eval_per_language=12, eval_batch=64) if dry else
                  dict(batch=32, length=128, warmup=3, steps=20, eval_per_language=500, eval_batch=256))

# ------------------------------------------------------------------------- small helpers


def use_site(site: str) -> None:
    if os.path.isdir(site) and site not in sys.path:
        sys.path.insert(0, site)
        import importlib

        importlib.invalidate_caches()


@contextlib.contextmanager
def measured(row: dict, device):
    """A worker's measurement into ``row``: its seconds (on a GPU, once its kernels are done), the
    most GPU memory its tensors took and its allocator held (MiB), and a failure: ``status`` error,
    the error and its traceback (also printed to the worker's log), not raised."""
    import traceback

    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    try:
        yield
        if cuda:
            torch.cuda.synchronize()
    except Exception as err:  # recorded, and the worker goes on
        row.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
        print(traceback.format_exc(), flush=True)
    row["seconds"] = round(time.time() - t0, 2)
    if cuda:
        row["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nvidia_smi(*query: str) -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", *query], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal a worker's process group (the worker and what it started)."""
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, sig)


class GpuSampler(Sampler):
    """The GPU's used memory (nvidia-smi, every 0.5 s; nothing without it) while a phase runs: the peak
    and, where the driver lists them, each process's."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_mib: float | None = None
        self.per_process_peak: dict[str, float] = {}

    def sample(self) -> None:
        used = nvidia_smi("--query-gpu=memory.used", "--format=csv,noheader,nounits")
        with contextlib.suppress(ValueError):
            if used:
                self.peak_mib = max(self.peak_mib or 0.0, float(used.splitlines()[0]))
        apps = nvidia_smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
        for line in (apps or "").splitlines():
            with contextlib.suppress(ValueError):
                pid, mem = (x.strip() for x in line.split(","))
                self.per_process_peak[pid] = max(self.per_process_peak.get(pid, 0.0), float(mem))


class Workers:
    """Worker processes (this file with ``--worker``), each logging to its own file."""

    def __init__(self, ctx: "Context"):
        self.ctx = ctx
        self.running: list[tuple[subprocess.Popen, Path, str, Any]] = []

    def start(self, kind: str, spec: dict, name: str, tag: Any = None) -> subprocess.Popen:
        spec_path = self.ctx.work / "specs" / f"{name}.json"
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(json.dumps(spec, default=str))
        log_path = self.ctx.work / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(HERE / "run.py"), "--worker", kind, "--spec", str(spec_path)]
        if self.ctx.dry:
            cmd.append("--dry-run")
        with open(log_path, "wb") as out:
            # A process group of its own (killed as one), inside the run's POSIX process session: a scheduler
            # that kills the run's process session at its time limit kills the workers too (setsid would not).
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.ctx.child_env(),
                                    cwd=str(REPO), process_group=0)
        STARTED.append(proc)
        self.running.append((proc, log_path, name, tag))
        return proc

    def reap(self) -> list[tuple[subprocess.Popen, str, Any]]:
        """Finished workers since the last call (their logs attached to log.txt)."""
        done = [(p, lp, n, t) for p, lp, n, t in self.running if p.poll() is not None]
        self.running = [r for r in self.running if r[0].poll() is None]
        for p, lp, n, _ in done:
            self.ctx.log.attach(f"{n} (exit {p.returncode})", lp)
        return [(p, n, t) for p, _, n, t in done]

    def kill_all(self, why: str) -> list[tuple[subprocess.Popen, str, Any]]:
        for p, _, n, _ in self.running:
            self.ctx.log(f"killing {n}: {why}")
            kill_group(p, signal.SIGTERM)
        t = time.time()
        while any(p.poll() is None for p, *_ in self.running) and time.time() - t < 10:
            time.sleep(0.2)
        for p, *_ in self.running:
            if p.poll() is None:
                kill_group(p)
                p.wait()
        return self.reap()

    def wait_all(self, hard_deadline: float, why: str) -> list[tuple[subprocess.Popen, str, Any]]:
        finished = []
        while self.running:
            finished += self.reap()
            if time.time() > hard_deadline:
                finished += self.kill_all(why)
                break
            time.sleep(0.2)
        return finished + self.reap()


# ------------------------------------------------------------------------- the run's context


class Context:
    def __init__(self, args, profile: Profile, log: Log):
        self.args, self.profile, self.log = args, profile, log
        self.dry = profile.dry
        self.kit = Path(args.kit).resolve()
        path = self.kit / "manifest.json"  # what prepare.py staged (None: not a prepared bundle)
        self.manifest = json.loads(path.read_text()) if path.is_file() else None
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.start = time.time()
        self.data_dir = self.work / "data"
        self.model_dir = self.work / "models" / kit.MODEL_FOLDER
        self.cache_dir = self.work / "cache"
        self.site = str(Path(args.site).resolve()) if not self.dry else None

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        path = [str(REPO)] + ([self.site] if self.site else [])
        env["PYTHONPATH"] = os.pathsep.join(path + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env.update({"XLING_CACHE_DIR": str(self.cache_dir), "TOKENIZERS_PARALLELISM": "false",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "TRANSFORMERS_VERBOSITY": "error"})
        if self.site:
            env["XLK_SITE"] = self.site
        return env

    def left(self) -> float:
        return self.profile.deadline - (time.time() - self.start)

    def recipe_updates(self) -> dict[str, Any]:
        """What every recipe of the run sets: the bundle's data and model, the cache, the GPU."""
        u = {"data.data_dir": str(self.data_dir), "model.name": str(self.model_dir),
             "model.cache_dir": str(self.cache_dir), "scaling.use_gpu": not self.dry,
             "scaling.mixed_precision": "no" if self.dry else "bf16"}
        if self.dry:
            u.update({k: v for k, v in TINY.items() if k.startswith(("model.", "data."))})
            u.update({"data.train_full": False, "data.eval_max_per_language": 12})
        return u


def load_space(name: str, budget: str | None = None):
    """A shipped search space (``search_spaces/NAME.yaml``) at ``budget``, through the product
    (``xling_ray.tune.space`` needs no Ray)."""
    from xling_ray.tune.space import load_search_space

    return load_search_space(REPO / "search_spaces" / f"{name}.yaml", budget=budget)
