"""XITE (Fazili & Jyothi, 2026): synthetic examples interpolated between English training
examples and target-language text labelled by its nearest English example.

    L = CE + r CE(mix_lam(h_k(x_src), phi(h_k(x_tgt))), y_src)

The parts: the building blocks, one function a step of the paper (:mod:`.blocks`); the
preparation before training, on the frozen pre-trained encoder (:mod:`.prepare`); the
term below, which mixes at layer k through a forward hook. Target-language pairs come
from ``losses.pool`` (:func:`xling_ray.methods.target_text.target_pairs`).
"""
from __future__ import annotations

import math

import torch

from xling_ray.losses.base import NONE, StepContext, Term
from xling_ray.losses.classification import classification_loss
from xling_ray.method_settings import XiteConfig
from xling_ray.methods.base import Method, Preparation, PrepareContext, register
from xling_ray.methods.target_text import target_pairs
from xling_ray.methods.xite.blocks import LanguageLDA, Match, interpolate, match_to_english, sample_lambda
from xling_ray.methods.xite.prepare import XiteData, prepare_xite
from xling_ray.models.encode import encode_texts, unwrap

__all__ = ["LanguageLDA", "Match", "XiteConfig", "XiteData", "encode_texts", "interpolate", "match_to_english",
           "mixing_site", "prepare_xite", "sample_lambda", "xite_loss"]



def mixing_site(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    """The module whose output holds the states after ``layer``: 0 the embedding layer,
    k the k-th encoder layer (BERT and XLM-R layouts: ``base_model.encoder.layer``)."""
    base = model.base_model
    if layer == 0:
        return base.embeddings
    layers = base.encoder.layer
    if layer > len(layers):
        raise ValueError(f"losses.xite.layer={layer} but the model has {len(layers)} layers")
    return layers[layer - 1]


def xite_loss(ctx: StepContext) -> torch.Tensor:
    """XITE's synthetic examples (Fazili & Jyothi, 2026), interpolated at layer k
    (k = 0: the embedding layer; k > 0: manifold mixup, Verma et al. 2019):

        h = lam * h_k(x_src) + (1 - lam) * phi(h_k(x_tgt)),   loss = CE(f_{>k}(h), y_src)

    x_tgt a target-language pair, x_src its English partner (the nearest training example;
    with ``losses.xite.k > 1`` the nearest of the k nearest whose label won their vote), y_src
    that example's label (= the voted label), phi the LDA projector. The term's weight is the synthetic-to-real
    ratio r, and each step draws ceil(r * B) synthetic examples: ``CE + r CE_syn`` is,
    up to the factor 1 / (1 + r), the mean loss over a batch with r synthetic examples
    per real one. The states are mixed position by position; the mask is the union of
    both sides' masks. Each side runs with its own segment ids (``token_type_ids``, for
    tokenizers that give them), which enter at the embeddings, before any mixing layer.
    """
    cfg = ctx.config.xite
    data = ctx.state["xite"]
    model = unwrap(ctx.model)
    n = max(1, math.ceil(cfg.ratio * ctx.batch["input_ids"].shape[0]))
    b = data.draw(n, ctx.batch["input_ids"].device, ctx.state.get("generator"))
    tgt_types = {"token_type_ids": b["tgt_types"]} if "tgt_types" in b else {}
    src_types = {"token_type_ids": b["src_types"]} if "src_types" in b else {}
    target = model.base_model(input_ids=b["tgt_ids"], attention_mask=b["tgt_mask"], output_hidden_states=True, **tgt_types)
    h_tgt = target.hidden_states[cfg.layer]
    if data.projector is not None:
        h_tgt = data.projector.project(h_tgt.float()).to(h_tgt.dtype)
    lam = cfg.lam if cfg.alpha is None else sample_lambda(cfg.alpha, n, ctx.state.get("generator")).to(h_tgt)

    def mix(module, inputs, output):
        h = output[0] if isinstance(output, tuple) else output
        mixed = interpolate(h, h_tgt, lam)
        return (mixed, *output[1:]) if isinstance(output, tuple) else mixed

    handle = mixing_site(model, cfg.layer).register_forward_hook(mix)
    try:
        logits = model(input_ids=b["src_ids"], attention_mask=b["mask"], **src_types).logits
    finally:
        handle.remove()
    return classification_loss(logits, b["labels"], ctx.config.label_smoothing)


def _prepare(ctx: PrepareContext) -> XiteData:
    """With the model as loaded: XITE encodes with the frozen pre-trained encoder."""
    return prepare_xite(ctx.model, ctx.tokenizer, ctx.train_data, ctx.train,
                        target_pairs(ctx.recipe, ctx.task, ctx.eval_sets), ctx.settings("xite"),
                        ctx.recipe.model.max_length, ctx.pad_id)


METHOD = register(Method("xite", XiteConfig, (Term("xite", NONE, lambda c: c.xite.ratio, xite_loss),),
                         prepare=(Preparation("xite", _prepare),), check=target_pairs))
