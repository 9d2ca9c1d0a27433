"""Part a: the product's GPU path. xling-ray's own loop (``run_recipe``) through its local
session with ``scaling.use_gpu`` and bf16 autocast, on the quickstart's trials (configurations
drawn by the space's own Optuna sampler, ``xling_ray.tune.sampling``): one trial at a time in one
reused process, then trials packed onto the one GPU (4 processes at once, each capped to 1/4 of
the GPU's memory, as ``--gpus-per-trial 0.25`` packs them under Ray); trials per hour and GPU
memory per trial. Then the loop on a DDP-wrapped model over an nccl process group of one rank."""
from __future__ import annotations

import json
import time
from typing import Any

from common import Context, GpuSampler, Workers, free_port, load_space, measured, write_json

from xling_ray.train import LocalSession, run_recipe
from xling_ray.tune.sampling import sample_configurations


def part_a(ctx: Context, budget: float) -> dict[str, Any]:
    prof = ctx.profile
    space = load_space("quickstart")
    recipe = space.recipe.with_updates(ctx.recipe_updates())
    configs = sample_configurations(space, prof.a_trials)
    result: dict[str, Any] = {
        "part": "a", "status": "running", "budget_s": round(budget), "space": "search_spaces/quickstart.yaml",
        "recipe": recipe.model_dump(mode="json"), "configs": configs,
        "session": "xling_ray.train.LocalSession(device=%r): run_recipe in the worker's own process" % prof.device,
        "notes": [
            "The bundle carries no Ray (its wheel alone is about 79 MB), so trials run through the product's loop "
            "(run_recipe) and local session, not Tune.",
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
    for phase in ("sequential", "packed", "ddp"):
        share = budget * prof.a_shares[phase]
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
    trials = [json.loads(line) for j in jsonls if j.is_file() for line in j.read_text().splitlines() if line.strip()]
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


class DDPSession(LocalSession):
    """The loop's local session with the model wrapped in DistributedDataParallel over a process group
    of one rank (nccl on a GPU): what ``ray.train.torch.prepare_model`` gives each worker of a
    several-worker trial (one GPU cannot hold two nccl ranks)."""

    def __init__(self, device: str):
        import torch.distributed as dist

        super().__init__(device=device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo",
                                    init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        self.backend = dist.get_backend()

    def prepare_model(self, model):
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device.type == "cuda"
        return DistributedDataParallel(super().prepare_model(model), device_ids=[self.device.index or 0] if cuda else None)


def worker_trials(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.init()
        if spec.get("memory_fraction"):
            torch.cuda.set_per_process_memory_fraction(spec["memory_fraction"], 0)
    from xling_ray.config import RecipeConfig
    from xling_ray.train.memory import release_memory

    ready = time.time()
    session_info = None
    for index, dump, settings in spec["trials"]:
        if time.time() > spec["soft_deadline"]:
            break
        recipe = RecipeConfig.model_validate(dump)
        row: dict[str, Any] = {"config_index": index, "settings": settings, "process": spec["process"],
                               "process_ready_s": round(ready - spec["launched"], 2)}
        with measured(row, device):  # a failure is recorded, and the next trial runs
            session = DDPSession(spec["device"]) if spec.get("ddp") else LocalSession(device=spec["device"])
            if spec.get("ddp"):
                session_info = {"backend": session.backend, "wrapped": "DistributedDataParallel"}
            metrics = run_recipe(recipe, session)
            row.update(status="ok", **{k: metrics.get(k) for k in
                                       ("gap", "gap_xnli", "gap_pawsx", "acc_en", "acc_target", "collapsed",
                                        "setup_s", "time_eval_s", "time_total_s")})
            row["accuracy"] = {k: v for k, v in metrics.items() if k.startswith("acc_") and k.count("_") == 2}
        row["finished"] = time.time()
        if session_info:
            row["session"] = session_info
        with open(spec["out"], "a") as f:
            f.write(json.dumps(row, default=str) + "\n")
        print(f"trial {index}: {row['status']} in {row['seconds']} s", flush=True)
        release_memory()  # as a reused Tune trial process does between trials
    if spec.get("ddp"):
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
