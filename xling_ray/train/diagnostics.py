"""Embedding-space diagnostics: how far apart translations and languages sit.

Numbers on sentence embeddings of parallel text (the same id in two languages of a
benchmark is a translation): top-1 translation retrieval in both directions,
alignment (mean cosine distance of translations), uniformity (Wang & Isola, 2020)
and the distance of each language's centroid to English's. They measure what
XLingLearn says English fine-tuning does (over-clustering by language, scattered
regions). ``xling-ray diagnose`` (:mod:`xling_ray.report.diagnostics`) compares a
pretrained and a fine-tuned model with them; with ``train.diagnostics_per_language``
the training loop logs them at every evaluation (:func:`summary_metrics`).
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn.functional as F

from xling_ray.config import TASKS
from xling_ray.data import DataSource, get_benchmark, open_source
from xling_ray.losses.alignment import alignment, uniformity
from xling_ray.models.encode import encode_texts

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

METRICS = ("retrieval_en_to_x", "retrieval_x_to_en", "alignment", "uniformity", "centroid_distance")
METRIC_TITLES = {
    "retrieval_en_to_x": "retrieval en -> x (%, top-1)",
    "retrieval_x_to_en": "retrieval x -> en (%, top-1)",
    "alignment": "alignment (mean cosine distance of translations)",
    "uniformity": "uniformity (t = 2, lower = more spread)",
    "centroid_distance": "distance of the language's centroid to English's",
}


# ---------------------------------------------------------------- numbers on embedding matrices


def _check_parallel(source: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if source.dim() != 2 or source.shape != target.shape:
        raise ValueError(f"{what}: source and target must both be (n, d) with row i a translation of row i; "
                         f"got {tuple(source.shape)} and {tuple(target.shape)}")


def retrieval_accuracy(source: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 translation retrieval, in percent: the share of rows ``i`` of ``source`` whose
    most cosine-similar row of ``target`` is ``i``,

        acc = 100 / n * sum_i [argmax_j cos(s_i, t_j) = i]

    Chance is ``100 / n``. Ties go to the lowest index (``argmax``), so identical
    embeddings retrieve themselves unless two rows coincide.

    >>> e = torch.eye(3)
    >>> retrieval_accuracy(e, e), retrieval_accuracy(e, e[[1, 0, 2]])
    (100.0, 33.33333333333333)
    """
    _check_parallel(source, target, "retrieval_accuracy")
    sim = F.normalize(source.float(), dim=-1) @ F.normalize(target.float(), dim=-1).T
    hits = sim.argmax(dim=1) == torch.arange(len(source))
    return 100.0 * hits.float().mean().item()


def translation_distance(source: torch.Tensor, target: torch.Tensor) -> float:
    """Alignment of translation pairs as a mean cosine distance, ``mean_i (1 - cos(s_i, t_i))``,
    in [0, 2]. On the unit sphere ``||s - t||^2 = 2 (1 - cos(s, t))``, so this is half of
    Wang & Isola's alignment (:func:`xling_ray.losses.alignment.alignment`).

    >>> translation_distance(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    0.5
    """
    _check_parallel(source, target, "translation_distance")
    return alignment(source, target).item() / 2.0


def language_uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Wang & Isola's uniformity of one language's embeddings (see
    :func:`xling_ray.losses.alignment.uniformity`)."""
    return uniformity(z, t).item()


def centroid(z: torch.Tensor) -> torch.Tensor:
    """The mean of the unit-normalised rows of ``z``."""
    return F.normalize(z.float(), dim=-1).mean(0)


def centroid_distances(embeddings: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Euclidean distances between the languages' centroids (:func:`centroid`): a symmetric
    language x language table with zeros on the diagonal. Every norm is at most 1, so
    distances lie in [0, 2]."""
    langs = list(embeddings)
    c = torch.stack([centroid(embeddings[l]) for l in langs])
    return pd.DataFrame(torch.cdist(c[None], c[None])[0].numpy(), index=langs, columns=langs)


def language_diagnostics(english: torch.Tensor, other: torch.Tensor, t: float = 2.0) -> dict[str, float]:
    """Every number of this module for one language against English (row i of ``other``
    is a translation of row i of ``english``)."""
    _check_parallel(english, other, "language_diagnostics")
    return {
        "retrieval_en_to_x": retrieval_accuracy(english, other),
        "retrieval_x_to_en": retrieval_accuracy(other, english),
        "alignment": translation_distance(english, other),
        "uniformity": language_uniformity(other, t),
        "centroid_distance": (centroid(english) - centroid(other)).norm().item(),
    }


# ---------------------------------------------------------------- the parallel sentences


@dataclass(frozen=True)
class ParallelSentences:
    """``n`` translated sentences of one task: ``texts[lang][i]`` are translations of each other."""

    task: str
    ids: tuple[str, ...]
    texts: dict[str, tuple[str, ...]]


def language_tasks(languages: Sequence[str], tasks: Sequence[str] = TASKS) -> dict[str, list[str]]:
    """Which task's parallel data measures which language: each language goes to the first of
    ``tasks`` that has it (by default XNLI's 15, then PAWS-X for ja and ko). Every task used
    also gets English, the reference."""
    out: dict[str, list[str]] = {}
    placed: set[str] = set()
    for task in tasks:
        mine = [l for l in languages if l != "en" and l not in placed and l in get_benchmark(task).languages]
        placed.update(mine)
        if mine:
            out[task] = ["en", *mine]
    unplaced = sorted(set(languages) - placed - {"en"})
    if unplaced:
        raise ValueError(f"languages {unplaced}: not in the parallel data of tasks {list(tasks)}")
    return out


def parallel_sentences(task: str, languages: Sequence[str], n: int = 200, split: str = "validation",
                       seed: int = 0, source: DataSource | None = None) -> ParallelSentences:
    """``n`` ids drawn with ``seed`` from the task's ``split`` and their first sentence
    (XNLI's premise, PAWS-X's sentence1) in each language.

    An English sentence occurs under several ids (XNLI: one premise for three hypotheses;
    PAWS-X reuses sentences), and retrieval needs one right answer, so only the first id of
    each distinct English sentence is eligible."""
    source = source or open_source(None)
    english = source.load_eval(task, "en", split)
    first: dict[str, str] = {}
    for id_, text in zip(english.ids, english.text_a):
        first.setdefault(text, id_)
    eligible = list(first.values())  # in file order
    ids = eligible if n >= len(eligible) else [eligible[i] for i in sorted(random.Random(seed).sample(range(len(eligible)), n))]
    texts = {}
    for lang in languages:
        data = english if lang == "en" else source.load_eval(task, lang, split)
        texts[lang] = data.select_ids(ids).text_a
    return ParallelSentences(task, tuple(ids), texts)


def embed_parallel(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", sentences: ParallelSentences,
                   pooling: str = "mean", layer: int = -1, max_length: int = 128,
                   batch_size: int = 64) -> dict[str, torch.Tensor]:
    """language -> (n, d) sentence embeddings (:func:`xling_ray.models.encode.encode_texts`:
    the mean of the last hidden layer over the attention mask by default, e5's own pooling)."""
    return {lang: encode_texts(model, tokenizer, texts, batch_size=batch_size, max_length=max_length, layer=layer,
                               pooling=pooling)
            for lang, texts in sentences.texts.items()}


def diagnostics_table(embeddings: Mapping[str, Mapping[str, torch.Tensor]], t: float = 2.0) -> pd.DataFrame:
    """task -> language -> embeddings, to one row per (task, language) with every metric
    against that task's English. English's own row (retrieval 100, distance 0) is kept
    once, from the first task, for its uniformity."""
    rows = []
    for i, (task, per_lang) in enumerate(embeddings.items()):
        en = per_lang["en"]
        for lang, z in per_lang.items():
            if lang == "en" and i > 0:
                continue
            rows.append({"task": task, "language": lang, "n": len(z), **language_diagnostics(en, z, t)})
    return pd.DataFrame(rows)


def summary_metrics(table: pd.DataFrame, prefix: str = "diag") -> dict[str, float]:
    """Trial metrics from a :func:`diagnostics_table`: per task and metric, the mean over
    the task's target languages (English excluded), ``<prefix>_<task>_<metric>``."""
    out = {}
    targets = table[table["language"] != "en"]
    for task, rows in targets.groupby("task", sort=False):
        for metric in METRICS:
            out[f"{prefix}_{task}_{metric}"] = float(rows[metric].mean())
    return out
