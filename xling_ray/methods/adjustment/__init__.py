"""Cross-lingual adjustment: pull the contextual vectors of aligned words of
parallel sentences together, while keeping English where it was.

Cao, Kitaev & Klein (ICLR 2020, "Multilingual alignment of contextual word
representations") fine-tune a multilingual encoder ``f`` on word-aligned
parallel sentences (target language t, English s) with

    L = L_align + lambda * L_reg
    L_align = sum_{(t, s)} sum_{(i, j) in a(t, s)} ||f(t)_i - f(s)_j||^2
    L_reg   = sum_{s} sum_{k in s} ||f(s)_k - f0(s)_k||^2

where ``a(t, s)`` are the aligned word pairs (i a word of t, j a word of s),
``f(x)_i`` the contextual vector of word i of sentence x, and ``f0`` the
encoder before adjustment (frozen). Efimov et al. (ECIR 2023, "The impact of
cross-lingual adjustment of contextual word representations on zero-shot
transfer") apply the same procedure to mBERT and XLM-R before task
fine-tuning. Here both sums are means (over aligned pairs, over English
tokens), so ``lambda`` (``base_rate``) does not depend on batch or sentence
length.

The pieces, in the order a run uses them:

1. *Words* are the whitespace words of a sentence, ``text.split()``; a word's
   index in that list is its index everywhere here (Pharaoh files,
   alignments, spans). Sentences are tokenised word by word
   (``is_split_into_words=True``), so the tokenizer's ``word_ids()`` are those
   indices whatever its own pre-tokenisation (a BERT tokenizer would split
   punctuation off a raw string; XLM-R's Metaspace splits on spaces only).
2. *Alignments* come from a file (:func:`read_pharaoh`, e.g. fast_align or
   awesome-align output) or from the frozen encoder itself
   (:func:`align_corpus`, SimAlign's "argmax"), computed once before training
   and cached with :func:`write_pharaoh`.
3. *Each step*: an :class:`AlignedBatch` from :class:`AlignedCollator` (or
   :func:`build_aligned_batch`), then :func:`adjustment_objective`, or by hand::

       h_t = encoder_hidden(model, batch.target)
       h_s = encoder_hidden(model, batch.english)
       with torch.no_grad():
           h_s0 = encoder_hidden(f0, batch.english)        # f0 = frozen_copy(model)
       loss = adjustment_loss(alignment_loss(h_t, h_s, batch),
                              regularization_loss(h_s, h_s0, batch.english["attention_mask"]),
                              base_rate)

The package, one module a part: :mod:`.words` (words and subword spans), :mod:`.aligner`
(SimAlign-style alignment), :mod:`.pharaoh` (alignment files), :mod:`.batches` (aligned
batches), :mod:`.objective` (the losses), :mod:`.prepare` (pairs, alignments and ``f0``
before training, and the ``before`` regime); here its settings, terms and registration.
Frozen copies and hidden states are :mod:`xling_ray.models.encode`'s.
"""
from __future__ import annotations

from typing import Any, Callable


from xling_ray.config import LossConfig
from xling_ray.losses.base import NONE, StepContext, Term
from xling_ray.method_settings import AdjustmentConfig
from xling_ray.methods.adjustment.aligner import (
    SubwordPooling,
    align_corpus,
    align_sentence_pair,
    default_alignment_layer,
    mutual_argmax,
)
from xling_ray.methods.adjustment.batches import AlignedBatch, AlignedCollator, build_aligned_batch
from xling_ray.methods.adjustment.objective import (
    AdjustmentParts,
    adjustment_loss,
    adjustment_objective,
    alignment_loss,
    regularization_loss,
)
from xling_ray.methods.adjustment.pharaoh import read_pharaoh, write_pharaoh
from xling_ray.methods.adjustment.prepare import AdjustmentData, adjust_before_fine_tuning, prepare_adjustment
from xling_ray.methods.adjustment.words import (
    Alignment,
    WordMode,
    drop_cut_words,
    encode_words,
    split_words,
    word_spans,
    word_vectors,
)
from xling_ray.methods.base import Method, Preparation, PrepareContext, register
from xling_ray.methods.target_text import parallel_pairs
from xling_ray.models.encode import encoder_hidden, frozen_copy

__all__ = [
    "AdjustmentConfig", "AdjustmentData", "AdjustmentParts", "AlignedBatch", "AlignedCollator", "Alignment",
    "SubwordPooling", "WordMode", "adjust_before_fine_tuning", "adjustment_loss", "adjustment_objective",
    "align_corpus", "align_sentence_pair", "alignment_loss", "build_aligned_batch", "default_alignment_layer",
    "drop_cut_words", "encode_words", "encoder_hidden", "frozen_copy", "mutual_argmax", "prepare_adjustment",
    "read_pharaoh", "regularization_loss", "split_words", "word_spans", "word_vectors", "write_pharaoh",
]



def _adjustment_parts(ctx: StepContext):
    """Efimov et al.'s continual variant: each step, an alignment batch of parallel pairs
    gives ``L_align`` and ``L_reg`` (formulas in :mod:`adjustment`), shared by both terms."""
    cfg = ctx.config.adjustment
    data = ctx.state["adjustment"]

    def make():
        batch = data.draw(cfg.batch_size, ctx.batch["input_ids"].device, ctx.state.get("generator"))
        # The terms weigh .align and .reg themselves; passing w_reg as the rate only skips the
        # frozen pass (and L_reg) when w_reg is 0.
        return adjustment_objective(ctx.model, data.original, batch, cfg.w_reg, mode=cfg.word_vector,
                                    include_special=cfg.include_special)

    return ctx.cached("adjustment", make)


def _continual(weight: Callable[[Any], float]) -> Callable[[LossConfig], float]:
    return lambda c: weight(c.adjustment) if c.adjustment.regime == "continual" else 0.0


def _prepare(ctx: PrepareContext) -> AdjustmentData:
    return prepare_adjustment(ctx.model, ctx.tokenizer, parallel_pairs(ctx.recipe, ctx.task, ctx.eval_sets),
                              ctx.settings("adjustment"), ctx.recipe.model.max_length)


def _adjust_before(ctx: PrepareContext) -> dict[str, float]:
    """Cao et al.'s regime: adjust the weights before fine-tuning; the first and last losses are reported."""
    cfg = ctx.settings("adjustment")
    if cfg.regime != "before":
        return {}
    losses = adjust_before_fine_tuning(ctx.model, ctx.state["adjustment"], cfg, ctx.device, ctx.state.get("generator"))
    return {"first": losses[0], "last": losses[-1]}


TERMS = (
    Term("adj_align", NONE, _continual(lambda a: a.w_align), lambda ctx: _adjustment_parts(ctx).align),
    Term("adj_reg", NONE, _continual(lambda a: a.w_reg), lambda ctx: _adjustment_parts(ctx).reg),
)
METHOD = register(Method(
    "adjustment", AdjustmentConfig, TERMS,
    prepare=(Preparation("adjustment", _prepare), Preparation("adjustment", _adjust_before, when="before")),
    check=parallel_pairs))
