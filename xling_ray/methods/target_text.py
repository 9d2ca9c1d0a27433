"""Target-language text for the methods that read it (XITE, cross-lingual adjustment), cut
from the benchmark split or read from parallel files (``losses.pool``) and checked against
the evaluated examples by the leakage guard.

* :func:`target_pairs`: per language, unlabeled target-language *pairs* (XITE);
* :func:`parallel_pairs`: ``(target, English)`` translation pairs (adjustment).
"""
from __future__ import annotations

from xling_ray.config import RecipeConfig
from xling_ray.data import (
    DataError,
    LeakageError,
    PairDataset,
    TextPool,
    benchmark_pools,
    check_no_leakage,
    first_ids,
    get_benchmark,
    open_source,
)
from xling_ray.data.pools import ParallelPool, normalize_text, parallel_file_pool


def _evaluated_texts(eval_sets: dict[str, dict[str, PairDataset]]) -> set[str]:
    """Every evaluated text, normalised as the leakage guard compares them. Benchmark pools
    drop entries found here first: PAWS-X reuses sentences across far-apart ids."""
    return {normalize_text(t) for per_lang in eval_sets.values() for d in per_lang.values() for t in (*d.text_a, *d.text_b)}


def target_pairs(recipe: RecipeConfig, task: str, eval_sets: dict[str, dict[str, PairDataset]]) -> dict[str, PairDataset]:
    """The first ``pool.take_first[task]`` pairs (id order) of the task's split in each target
    language, labels dropped by the caller. Pairs sharing a text with the evaluated part are
    dropped (PAWS-X reuses sentences across ids); then the leakage guard checks ids and texts."""
    pool = recipe.losses.pool
    if pool.source != "benchmark":
        raise DataError("losses.pool.source: XITE needs target-language *pairs* for the pair tasks; "
                        "use source: benchmark (the files source holds single sentences for cross-lingual adjustment)")
    if task not in pool.take_first:
        raise DataError(f"losses.pool.take_first has no entry for task '{task}'")
    source = open_source(recipe.data.data_dir)
    bench = get_benchmark(task)
    n = pool.take_first[task]
    evaluated = _evaluated_texts(eval_sets)
    evaluated_ids = set(eval_sets[task]["en"].ids) if task in eval_sets and pool.split == recipe.data.split else set()
    out: dict[str, PairDataset] = {}
    for lang in recipe.data.languages:
        if lang == "en" or lang not in bench.languages:
            continue
        full = source.load_eval(task, lang, pool.split)
        part = full.select_ids(first_ids(full, n))
        shared = set(part.ids) & evaluated_ids
        if shared:
            raise LeakageError(
                f"losses.pool: the {task} pool (the first {n} examples of {pool.split}) shares {len(shared)} ids with the "
                f"evaluation (e.g. id {sorted(shared)[0]} in '{lang}'); set data.eval_skip_first.{task}: {n}")
        part = part.select_ids([i for i, a, b in zip(part.ids, part.text_a, part.text_b)
                                if normalize_text(a) not in evaluated and normalize_text(b) not in evaluated])
        if pool.max_per_language is not None:
            part = part.subsample(pool.max_per_language, pool.seed)
        out[lang] = part
    as_text = {lang: TextPool(lang, tuple(f"{i}:{s}" for i in d.ids for s in "ab"),
                              tuple(t for a, b in zip(d.text_a, d.text_b) for t in (a, b)), f"{task}/{pool.split}")
               for lang, d in out.items()}
    if pool.split == recipe.data.split:
        check_no_leakage(as_text, {task: eval_sets.get(task, {})})
    return out


def parallel_pairs(recipe: RecipeConfig, task: str, eval_sets: dict[str, dict[str, PairDataset]]) -> list[tuple[str, str]]:
    """``(target, English)`` translation pairs for the task's model, from the benchmark split's
    first ``pool.take_first[task]`` examples or from ``pool.files``; checked for leakage."""
    pool = recipe.losses.pool
    langs = [l for l in recipe.data.languages if l != "en" and l in get_benchmark(task).languages]
    if pool.source == "benchmark":
        if task not in pool.take_first:
            raise DataError(f"losses.pool.take_first has no entry for task '{task}'")
        pools = benchmark_pools(open_source(recipe.data.data_dir), task, langs, pool.split,
                                take_first=pool.take_first[task], seed=pool.seed)
        evaluated = _evaluated_texts(eval_sets)
        pools = {l: _without(p, evaluated).subsample(pool.max_per_language, pool.seed) for l, p in pools.items()}
    else:
        missing = [l for l in langs if l not in pool.files]
        if missing:
            raise DataError(f"losses.pool.files has no parallel file for {missing} (language -> 'target ||| English' file)")
        pools = {l: parallel_file_pool(pool.files[l], l, pool.max_per_language, pool.seed) for l in langs}
    if pool.source == "files" or pool.split == recipe.data.split:
        check_no_leakage(pools, {task: eval_sets.get(task, {})})
    return [(t, e) for p in pools.values() for t, e in zip(p.target, p.english)]


def _without(pool: ParallelPool, texts: set[str]) -> ParallelPool:
    keep = [k for k, (t, e) in enumerate(zip(pool.target, pool.english))
            if normalize_text(t) not in texts and normalize_text(e) not in texts]
    pick = lambda xs: tuple(xs[k] for k in keep)  # noqa: E731
    return ParallelPool(pool.language, pick(pool.ids), pick(pool.target), pick(pool.english), pool.source)
