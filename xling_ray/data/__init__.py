"""Benchmark data: XNLI and PAWS-X, from a local copy or the Hugging Face hub.

The training code needs two calls: ``load_eval_sets(cfg)`` (task -> language ->
parallel evaluation set) and ``load_train_set(cfg, task)`` (English training set).
"""
from __future__ import annotations

from pathlib import Path

from xling_ray.config import DataConfig
from xling_ray.data.benchmarks import BENCHMARKS, EVAL_SPLITS, Benchmark, DataError, HubSpec, get_benchmark
from xling_ray.data.sources import (
    DataSource,
    HubSource,
    LocalSource,
    PairDataset,
    clear_caches,
    open_source,
)
from xling_ray.data.pools import LeakageError, ParallelPool, TextPool, benchmark_pools, check_no_leakage, first_ids, skip_first

__all__ = [
    "BENCHMARKS",
    "EVAL_SPLITS",
    "Benchmark",
    "DataError",
    "DataSource",
    "HubSource",
    "HubSpec",
    "LeakageError",
    "ParallelPool",
    "TextPool",
    "benchmark_pools",
    "check_no_leakage",
    "first_ids",
    "skip_first",
    "LocalSource",
    "PairDataset",
    "clear_caches",
    "get_benchmark",
    "load_eval_sets",
    "split_heldout",
    "load_train_set",
    "open_source",
]


def load_eval_sets(cfg: DataConfig, source: DataSource | None = None) -> dict[str, dict[str, PairDataset]]:
    """task -> language -> evaluation set, for the languages of ``cfg`` each task has.

    The first ``cfg.eval_skip_first[task]`` examples (id order) are left out (they may
    serve as a text pool). Of the rest, ``cfg.heldout[task]`` examples drawn with
    ``cfg.seed`` are set aside: ``cfg.eval_part`` ``search`` evaluates on the others,
    ``heldout`` on those alone. The cap then draws ids from English and takes the same
    ids in every language, so languages are compared on the same (translated) examples.
    """
    source = source or open_source(cfg.data_dir)
    out: dict[str, dict[str, PairDataset]] = {}
    for task in cfg.tasks:
        bench = get_benchmark(task)
        english = source.load_eval(task, "en", cfg.split)
        # Before the cap, so that the cap draws from what is left.
        english = skip_first(english, cfg.eval_skip_first.get(task, 0))
        if cfg.heldout.get(task):
            english = split_heldout(english, cfg.heldout[task], cfg.seed)[cfg.eval_part == "heldout"]
        if cfg.eval_max_per_language is not None:
            english = english.subsample(cfg.eval_max_per_language, cfg.seed)
        languages = ["en"] + [lang for lang in cfg.languages if lang != "en" and lang in bench.languages]
        sets = {"en": english}
        for lang in languages[1:]:
            # Always aligned to English ids (also uncapped): a missing translation is an error, not a smaller set.
            sets[lang] = source.load_eval(task, lang, cfg.split).select_ids(english.ids)
        out[task] = {lang: sets[lang] for lang in cfg.languages if lang in sets}
    return out


def split_heldout(data: PairDataset, n: int, seed: int) -> tuple[PairDataset, PairDataset]:
    """``(rest, heldout)``: ``n`` rows drawn with ``seed`` set aside, both in their original order."""
    if n >= len(data):
        raise DataError(f"{data.task}/{data.language}/{data.split}: holding out {n} of {len(data)} examples leaves none to search on")
    held = data.subsample(n, seed)
    taken = set(held.ids)
    return data.select_ids([i for i in data.ids if i not in taken]), held


def load_train_set(cfg: DataConfig, task: str, source: DataSource | None = None) -> PairDataset:
    """The task's English training set, capped at its ``cfg.train_size`` rows drawn with ``cfg.seed``.
    With ``cfg.train_full``, a source holding less than the published set is a :class:`DataError`."""
    source = source or open_source(cfg.data_dir)
    data = source.load_train(task)
    if cfg.train_full:
        bench = get_benchmark(task)
        if len(data) < bench.train_full_size:
            where = Path(source.root) / bench.train_file if hasattr(source, "root") else source
            raise DataError(
                f"{where}: the {bench.train_name} training set there has {len(data):,} pairs, the published one "
                f"{bench.train_full_size:,} (data.train_full: the full budget trains on all of it); give no --data-dir "
                f"and no XLING_DATA_DIR to load it from the Hugging Face hub ({bench.hub_train.path}, through "
                f"`datasets`), or a data folder whose {bench.train_file} holds the whole set")
    size = cfg.train_size_of(task)
    return data.subsample(size, cfg.seed) if size is not None else data
