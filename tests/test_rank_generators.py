"""The methods' random draws come from a generator per task and rank (seeded from the trial's
seed and the rank, checkpointed per rank): two DDP workers on gloo draw different synthetic
examples, and a run resumed from a checkpoint draws what an uninterrupted one would."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from xling_ray.train.loop import method_generator

HERE = Path(__file__).resolve().parent


class Killed(Exception):
    pass


def _worker(rank: int, world: int, recipe_dump: dict, init_file: str, ckpt_root: str, out: str, kill_after: int) -> None:
    """One gloo worker: train the XITE recipe, record the target ids of every synthetic draw."""
    import torch.distributed as dist

    from xling_ray.config import RecipeConfig
    from xling_ray.methods.xite.prepare import XiteData
    from xling_ray.train import LocalSession, run_recipe

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    draws: list = []
    draw = XiteData.draw

    def recorded(self, *args, **kwargs):
        batch = draw(self, *args, **kwargs)
        draws.append(batch["tgt_ids"].tolist())
        return batch

    XiteData.draw = recorded

    class GlooSession(LocalSession):
        """A DDP worker: rank 0 keeps the checkpoint in ``ckpt_root``, every rank restores it."""

        def __init__(self):
            super().__init__(checkpoint_root=ckpt_root)
            self.rank, self.world_size = rank, world

        def prepare_model(self, model):
            return torch.nn.parallel.DistributedDataParallel(model)

        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            if len(self.reports) == kill_after:
                raise Killed

    try:
        run_recipe(RecipeConfig.model_validate(recipe_dump), GlooSession())
    except Killed:
        pass
    finally:
        Path(out).write_text(json.dumps(draws))
        dist.destroy_process_group()


def _run(tmp: Path, name: str, recipe, ckpt_root: Path, kill_after: int = 0) -> list[list]:
    """Two gloo workers; the draws of each rank."""
    import torch.multiprocessing as mp

    outs = [tmp / f"{name}_{r}.json" for r in range(2)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, 2, recipe.model_dump(), str(tmp / f"{name}.init"), str(ckpt_root),
                                               str(outs[r]), kill_after)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0, f"worker exit code {p.exitcode}"
    return [json.loads(o.read_text()) for o in outs]


def test_the_generator_is_seeded_from_the_trial_seed_the_task_and_the_rank():
    draws = {(s, t, r): torch.randint(1000, (8,), generator=method_generator(s, t, r)).tolist()
             for s in (0, 1) for t in (0, 1) for r in (0, 1)}
    assert len({tuple(d) for d in draws.values()}) == 8  # each (seed, task, rank) draws its own
    assert torch.randint(1000, (8,), generator=method_generator(1, 0, 1)).tolist() == draws[(1, 0, 1)]
    # Not the global generator: seeding it alike on every rank changes nothing.
    torch.manual_seed(0)
    first = torch.randint(1000, (8,), generator=method_generator(0, 0, 0)).tolist()
    torch.manual_seed(1)
    assert torch.randint(1000, (8,), generator=method_generator(0, 0, 0)).tolist() == first


def test_two_gloo_workers_draw_different_synthetic_examples_and_a_resumed_run_draws_the_same(tiny_recipe, tmp_path):
    sys.path.insert(0, str(HERE))
    from method_metrics import BASE

    recipe = tiny_recipe.with_updates({**BASE, "losses.xite.ratio": 0.5, "train.eval_every_steps": 1,
                                       "train.batch_size": 16, "train.epochs": 1})
    whole = _run(tmp_path, "whole", recipe, tmp_path / "whole_ckpt")
    # 48 examples over 2 ranks: 24 a rank, batches of 16 and 8, so ceil(0.5 * 16) = 8 then 4 synthetic examples.
    assert [[len(step) for step in d] for d in whole] == [[8, 4], [8, 4]]
    for step0, step1 in zip(*whole):
        assert step0 != step1  # the ranks draw different synthetic examples
    # Killed after the first report (its checkpoint: one step in), then resumed from it.
    _run(tmp_path, "killed", recipe, tmp_path / "ckpt", kill_after=1)
    assert (tmp_path / "ckpt" / "latest" / "state.pt").is_file()
    state = torch.load(tmp_path / "ckpt" / "latest" / "state.pt", weights_only=True)
    assert len(state["generators"]) == 2 and all(g["xnli"].dtype == torch.uint8 for g in state["generators"])
    resumed = _run(tmp_path, "resumed", recipe, tmp_path / "ckpt")
    assert resumed == [d[1:] for d in whole]  # each rank draws, after the checkpoint, what it drew uninterrupted
