"""Items 2 and 6: per-trial overhead and memory of a local sweep.

    python bench/trial_overhead.py --data-dir ../shared/data [--trials 3] [--train-size 32] [--per-language 10]

Runs the quickstart recipe (offline model, frozen word embeddings, length 64) as a
local sweep twice, with a budget small enough that start-up dominates:

* **ours**: one CPU worker trains inside the Tune trial's process (``TuneSession``),
  evaluation sets from the tokenisation cache (emptied for this recipe first, so the
  first trial tokenises and the later ones read);
  The next trial runs in the finished trial's process (``reuse_actors``);
* **ours, a fresh process per trial**: the same with ``reuse_actors=False`` (what a
  sweep did before): every trial starts a process that imports torch and transformers;
* **Ray Train worker group**: the same trials forced through a one-worker
  ``TorchTrainer`` (what a trial did before that, and what a user of Ray Train would write).

Every trial's process logs wall-clock times (``time.time()``, one clock for all processes
of the machine): entering the trainable, the first training step, leaving. Overhead of a
trial = its first step minus the previous trial's exit (the first trial: minus the
sweep's start, Ray's start-up included, reported apart). A thread samples the RSS of
the driver and all its descendant processes (Ray's daemons and trial actors) every 0.5 s.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import tempfile
import time

from ray import cloudpickle

from _common import Sampler, abba, parser, save, small_recipe
from xling_ray.config import RecipeConfig

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trial processes cannot import bench/


def _rss_mb() -> float:
    """This process's resident set now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _log(path: str, **event) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "t": time.time(), **event}) + "\n")


def _hook_first_step(path: str, trial: str) -> None:
    """Log the first training step of this process."""
    import xling_ray.train.loop as loop

    # Tune reuses a trial's process for the next trial: wrap the original, not the last wrapper.
    original = loop.__dict__.setdefault("_bench_training_step", loop.training_step)

    def first(*args, **kwargs):
        loop.training_step = original
        _log(path, trial=trial, event="first_step")
        return original(*args, **kwargs)

    loop.training_step = first


def make_trainable(path: str, through_ray_train: bool):
    def timed_trial(config, recipe):
        from ray import tune

        import xling_ray.tune.trainable as trainable

        trial = tune.get_context().get_trial_id()
        _log(path, trial=trial, event="enter", rss_mb=_rss_mb())
        if through_ray_train:
            import xling_ray.train.ray_train as ray_train

            original = ray_train.__dict__.setdefault("_bench_loop", ray_train.train_loop_per_worker)

            def worker(cfg):
                _hook_first_step(path, trial)
                original(cfg)

            ray_train.train_loop_per_worker = worker
            trainable.uses_ray_train = lambda r: True
        else:
            _hook_first_step(path, trial)
        trainable.run_trial(config, recipe)
        _log(path, trial=trial, event="exit", rss_mb=_rss_mb(),
             maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    return timed_trial


class RssSampler(Sampler):
    """Sum of the RSS of this process and all its descendants, every 0.5 s: ``samples`` of (time, MB)."""

    def __init__(self):
        super().__init__()
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> None:
        import psutil

        total = 0
        for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        self.samples.append((time.time(), total / 2**20))


def forget_encodings(recipe: RecipeConfig) -> None:
    """Delete this recipe's entries from the tokenisation cache (so the first trial is cold)."""
    from xling_ray.train.cache import cache_key, default_encoded_dir, recipe_sets

    tok, sets = recipe_sets(recipe)
    for d in sets:
        (default_encoded_dir(recipe.model.cache_dir) / f"{cache_key(tok, d, recipe.model.max_length)}.npz").unlink(
            missing_ok=True)


def run(space, through_ray_train: bool, reuse_actors: bool = True) -> dict:
    import ray

    import xling_ray.tune.sweep as sweep
    import xling_ray.tune.trainable as trainable

    from ray import tune

    tune_config = tune.TuneConfig  # run_sweep reads it from ray.tune at call time
    if not reuse_actors:
        tune.TuneConfig = lambda **kw: tune_config(**{**kw, "reuse_actors": False})

    events = tempfile.mktemp(suffix=".jsonl", prefix="xling_overhead_")
    forget_encodings(space.recipe)
    original_run, original_uses = sweep.run_trial, trainable.uses_ray_train
    sweep.run_trial = make_trainable(events, through_ray_train)
    if through_ray_train:
        # The driver's resource request: a token for the trial, the worker group asks for its own.
        sweep.trial_resources = lambda r: {"cpu": 0, "memory": 1}
    with RssSampler() as sampler:
        start = time.time()
        try:
            with tempfile.TemporaryDirectory() as storage:
                sweep.run_sweep(space, storage=storage, name="overhead", verbose=0)
        finally:
            end = time.time()
            sweep.run_trial, trainable.uses_ray_train = original_run, original_uses
            sweep.trial_resources = trainable.trial_resources
            tune.TuneConfig = tune_config
            assert not ray.is_initialized()
    log = [json.loads(line) for line in open(events)]
    os.unlink(events)
    by_id: dict[str, dict] = {}
    for e in log:  # a trial's events, in the order its process wrote them
        t = by_id.setdefault(e["trial"], {})
        if e["event"] == "enter":
            t.update(enter=e["t"], rss_at_enter_mb=e["rss_mb"])
        elif e["event"] == "first_step":
            t.setdefault("first_step", e["t"])
        else:
            t.update(exit=e["t"], maxrss_mb=e["maxrss_mb"], rss_at_exit_mb=e["rss_mb"])
    trials = sorted(by_id.values(), key=lambda t: t["enter"])
    previous = start
    rows = []
    for k, t in enumerate(trials):
        window = [m for s, m in sampler.samples if previous <= s <= t.get("exit", end)]
        rows.append({
            "trial": k + 1,
            "since_previous_exit_to_enter_s": t["enter"] - previous,
            "enter_to_first_step_s": t["first_step"] - t["enter"],
            "overhead_s": t["first_step"] - previous,
            "trial_s": t["exit"] - t["enter"],
            "trial_process_peak_rss_mb": t["maxrss_mb"],
            "trial_process_rss_at_enter_mb": t["rss_at_enter_mb"],
            "trial_process_rss_at_exit_mb": t["rss_at_exit_mb"],
            "sweep_tree_peak_rss_mb_in_window": max(window) if window else None,
            "sweep_tree_rss_mb_at_exit": min(((abs(s - t["exit"]), m) for s, m in sampler.samples), default=(0, None))[1],
        })
        previous = t["exit"]
    return {"wall_s": end - start, "after_last_trial_s": end - previous,
            "sweep_tree_peak_rss_mb": max(m for _, m in sampler.samples), "trials": rows}


def main() -> None:
    from xling_ray.tune.space import SearchSpace

    p = parser(__doc__)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--train-size", type=int, default=32, help="English pairs per task (2 steps of 16)")
    p.add_argument("--per-language", type=int, default=10)
    p.add_argument("--layers", type=int, default=None, help="keep the first k layers (default: all 12)")
    p.add_argument("--cpus", type=int, default=1, help="CPUs (torch threads) per trial")
    p.add_argument("--repeats", type=int, default=2, help="sweeps per side, in ABBA order")
    p.add_argument("--skip-ray-train", action="store_true", help="leave out the Ray Train worker group")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    space = SearchSpace.model_validate({
        "recipe": small_recipe(args, train={"batch_size": 16}).model_dump(),
        "search": {"train.lr": {"loguniform": [2e-5, 2e-4]}},
        "sweep": {"num_samples": args.trials, "seeds": 1, "sampler": "random", "max_concurrent_trials": 1},
    })
    result = {"scale": {"repeats": args.repeats, "trials": args.trials, "train_size": args.train_size, "per_language": args.per_language,
                        "layers": args.layers or 12, "max_length": 64, "cpus_per_trial": args.cpus}}
    sides = ["ours", "ours_fresh"] + ([] if args.skip_ray_train else ["ray_train"])
    abba({side: lambda side=side: run(space, through_ray_train=side == "ray_train", reuse_actors=side != "ours_fresh")
          for side in sides}, args.repeats, result)
    for side in sides:
        result[side] = result[f"{side}_runs"][0]
    save("overhead", result)


if __name__ == "__main__":
    main()
