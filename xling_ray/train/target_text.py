"""Target-language text for the methods that use it, prepared once before training.

* :func:`target_pairs`: per language, the unlabeled pairs XITE interpolates with,
  cut from the benchmark split (``losses.pool``) and checked against evaluation.
* :class:`XiteData` (:func:`prepare_xite`): each target pair labelled by a vote of its
  nearest English training examples and paired with the nearest of those carrying that
  label, and the LDA projector, ready to draw synthetic batches.
* :func:`parallel_pairs`, :class:`AdjustmentData` (:func:`prepare_adjustment`): word-aligned
  translation pairs and the frozen original model for cross-lingual adjustment, run
  before fine-tuning (:func:`adjust_before_fine_tuning`) or as a term during it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xling_ray.config import AdjustmentConfig, RecipeConfig, XiteConfig
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
from xling_ray.losses.adjustment import (
    AlignedBatch,
    AlignedCollator,
    adjustment_objective,
    align_corpus,
    frozen_copy,
    read_pharaoh,
)
from xling_ray.losses.xite import LanguageLDA, encode_texts, match_to_english
from xling_ray.train.batches import EncodedSet, collate, encode


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


@dataclass
class XiteData:
    """Synthetic-example material of one task: target pairs, their matched English
    training example and its label, and the projector phi. ``labels[i]`` is always the
    label of ``source[matched[i]]`` (:func:`~xling_ray.losses.xite.match_to_english`)."""

    target: EncodedSet           # target pairs, tokenised
    source: EncodedSet           # the English training set (tokenised)
    matched: torch.Tensor        # (n,) each target pair's English partner: the nearest of its k neighbours with the voted label
    labels: torch.Tensor         # (n,) the voted label, which is also the partner's label
    projector: LanguageLDA | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.matched)

    def draw(self, n: int, device: torch.device) -> dict[str, Any]:
        """``n`` synthetic examples: source and target token batches padded to one width, so
        that their states can be interpolated position by position; the mask is their union.
        With segment ids (BERT-style tokenizers) each side's are ``src_types``/``tgt_types``."""
        idx = torch.randint(len(self), (n,)).tolist()
        src = collate(self.source, [int(self.matched[i]) for i in idx], self.pad_id)
        tgt = collate(self.target, idx, self.pad_id)
        width = max(src["input_ids"].shape[1], tgt["input_ids"].shape[1])
        pad = lambda t, v: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=v)  # noqa: E731
        batch = {
            "src_ids": pad(src["input_ids"], self.pad_id), "tgt_ids": pad(tgt["input_ids"], self.pad_id),
            "src_mask": pad(src["attention_mask"], 0), "tgt_mask": pad(tgt["attention_mask"], 0),
        }
        if "token_type_ids" in src and "token_type_ids" in tgt:
            batch["src_types"], batch["tgt_types"] = pad(src["token_type_ids"], 0), pad(tgt["token_type_ids"], 0)
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["mask"] = torch.maximum(batch["src_mask"], batch["tgt_mask"])
        batch["labels"] = self.labels[idx].to(device)
        return batch


def prepare_xite(model, tokenizer, train_data: PairDataset, train: EncodedSet, targets: dict[str, PairDataset],
                 cfg: XiteConfig, max_length: int, pad_id: int, batch_size: int = 64) -> XiteData:
    """Steps 1-3 of XITE with the model as it is before training (the frozen encoder):
    encode (mean pooling), label each target pair by a vote of its ``cfg.k`` nearest English
    examples and pair it with the nearest of those carrying the voted label (``cfg.tau``
    filters on that pair's similarity), fit the language LDA at the mixing layer."""
    if cfg.layer > model.config.num_hidden_layers:
        raise ValueError(f"losses.xite.layer={cfg.layer}, but the model has {model.config.num_hidden_layers} layers")
    langs = [lang for lang, d in targets.items() for _ in range(len(d))]
    a = [t for d in targets.values() for t in d.text_a]
    b = [t for d in targets.values() for t in d.text_b]
    if not a:
        raise DataError("XITE: the target pool is empty (check losses.pool and data.languages)")
    enc = lambda x, y, layer: encode_texts(model, tokenizer, x, batch_size, max_length, layer=layer, texts_b=y)  # noqa: E731
    tgt_last = enc(a, b, -1)
    src_last = enc(list(train_data.text_a), list(train_data.text_b), -1)
    match = match_to_english(tgt_last, src_last, torch.tensor(train_data.labels), k=cfg.k, tau=cfg.tau)
    keep = match.keep.nonzero().flatten().tolist()
    if not keep:
        raise DataError(f"XITE: no target pair reaches similarity tau={cfg.tau}; lower losses.xite.tau")
    projector = None
    if cfg.lda:
        n_en = min(len(train_data), 2000)
        if cfg.layer == model.config.num_hidden_layers:  # the last layer: already encoded
            states_tgt, states_src = tgt_last, src_last[:n_en]
        else:
            states_tgt = enc(a, b, cfg.layer)
            states_src = enc(list(train_data.text_a[:n_en]), list(train_data.text_b[:n_en]), cfg.layer)
        projector = LanguageLDA().fit(torch.cat([states_tgt, states_src]), langs + ["en"] * n_en,
                                      n_components=cfg.lda_components, shrinkage=cfg.lda_shrinkage)
    target = encode(tokenizer, PairDataset("xite", "mixed", "pool", tuple(str(i) for i in range(len(a))),
                                           tuple(a), tuple(b), tuple(0 for _ in a)), max_length)
    target = target.subset(keep, labels=tuple(0 for _ in keep))
    return XiteData(target, train, match.indices[keep], match.labels[keep], projector, pad_id)


# ---------------------------------------------------------------- cross-lingual adjustment

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


@dataclass
class AdjustmentData:
    """Aligned parallel pairs and the frozen original model ``f0`` of one task."""

    pairs: list[tuple[str, str]]
    alignments: list[list[tuple[int, int]]]
    original: torch.nn.Module
    collate: AlignedCollator

    def draw(self, n: int, device: torch.device) -> AlignedBatch:
        idx = torch.randint(len(self.pairs), (n,)).tolist()
        return self.collate([(*self.pairs[i], self.alignments[i]) for i in idx]).to(device)


def prepare_adjustment(model, tokenizer, pairs: list[tuple[str, str]], cfg: AdjustmentConfig, max_length: int) -> AdjustmentData:
    """Word alignments (Pharaoh file, or mutual argmax of the frozen encoder's similarities at
    ``cfg.align_layer``) and ``f0``, a frozen copy of the model as loaded."""
    if not pairs:
        raise DataError("cross-lingual adjustment: no parallel pairs (check losses.pool and data.languages)")
    if cfg.alignment_file:
        alignments = read_pharaoh(cfg.alignment_file, len(pairs))
    else:
        alignments = align_corpus(model, tokenizer, pairs, layer=cfg.align_layer, max_length=max_length)
    return AdjustmentData(pairs, alignments, frozen_copy(model), AlignedCollator(tokenizer, max_length=max_length))


def adjust_before_fine_tuning(model, data: AdjustmentData, cfg: AdjustmentConfig, device: torch.device) -> list[float]:
    """Cao et al.'s regime: ``cfg.steps`` steps of ``L_align + base_rate * L_reg`` before any
    task training; AdamW (betas 0.9/0.98), linear warm-up over the first 10 % then decay.
    Returns the losses, for logging."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.98))
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, cfg.steps // 10), cfg.steps)
    was_training = model.training
    model.train()
    losses = []
    for _ in range(cfg.steps):
        parts = adjustment_objective(model, data.original, data.draw(cfg.batch_size, device), cfg.base_rate,
                                     mode=cfg.word_vector, include_special=cfg.include_special)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(parts.total.detach()))
    model.train(was_training)
    return losses
