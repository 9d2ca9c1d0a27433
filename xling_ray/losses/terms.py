"""The registered regularizers: XLingLearn, Ding et al. (COLING 2022), XITE and continual adjustment.

Each term is a small object: a name, the config field holding its weight, the
extra outputs of the clean pass it reads, and its value, computed by one of the
functions of :mod:`alignment`, :mod:`attention`, :mod:`transport`,
:mod:`targets` (where the formulas are). Views (perturbed, pushed) are built
once per step and shared by the terms that use them, through ``ctx.cached``.

XLingLearn:  L = CE + w_ce CE(x~) + w_disp D(z, z~) + w_attn A(x, x~) + w_ot S_eps(z, z~)
Ding 2022:   L = CE + w_robust CE(x_push, t_gamma) + w_pull A(x, x_push)
XITE:        L = CE + r CE(mix_lam(h_k(x_src), phi(h_k(x_tgt))), y_src)
Continual cross-lingual adjustment:  L = CE + w_align L_align + w_reg L_reg

with x~ the token-substituted view, x_push the embedding-pushed view and z the
mean-pooled last hidden state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from xling_ray.config import Ding2022Config, LossConfig, XLingLearnConfig
from xling_ray.losses.alignment import alignment_uniformity
from xling_ray.losses.attention import attention_consistency
from xling_ray.losses.base import StepContext, register
from xling_ray.losses.classification import classification_loss
from xling_ray.losses.targets import robust_target_loss
from xling_ray.losses.transport import sinkhorn_divergence
from xling_ray.losses.adjustment import adjustment_objective
from xling_ray.losses.xite import interpolate, sample_lambda
from xling_ray.losses.views import NeighbourTable, RunningCentroid, adversarial_push, centroid_push, substitute_tokens
from xling_ray.models.pooling import mean_pool


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper. Extra views run on it directly: their
    gradients still reach the same parameters and are all-reduced once, by the
    clean pass's DDP hooks."""
    return getattr(model, "module", model)


def _forward(model: torch.nn.Module, attention_mask: torch.Tensor, attentions: bool, **inputs: Any):
    return unwrap(model)(attention_mask=attention_mask, output_hidden_states=True, output_attentions=attentions, **inputs)


def segments(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch's segment ids as model inputs (``{}`` when the tokenizer gives none). A view
    keeps every token's position, so the clean pass's segment ids stay aligned with it."""
    return {"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {}


# ---------------------------------------------------------------- views

def neighbour_table(ctx: StepContext, cfg: XLingLearnConfig) -> NeighbourTable:
    """Built on the first step from the model's input embeddings (or the synonym file), then kept."""
    def make() -> NeighbourTable:
        special = ctx.state.get("special_ids", ())
        if cfg.synonym_file:
            table = NeighbourTable.from_synonym_file(cfg.synonym_file, ctx.state["tokenizer"], special_ids=special)
        else:
            weights = unwrap(ctx.model).get_input_embeddings().weight.detach()
            # Neighbours among the training set's tokens: the full 250k x 250k table would take hours on a CPU.
            candidates = ctx.state.get("train_token_ids") or ctx.batch["input_ids"].unique().tolist()
            table = NeighbourTable.from_embeddings(weights, candidates, k=cfg.neighbours, special_ids=special)
        return table.to(ctx.batch["input_ids"].device)

    return ctx.persistent("neighbour_table", make)


def perturbed_view(ctx: StepContext):
    """XLingLearn's view: the batch with tokens substituted by neighbours, through the model."""
    cfg = ctx.config.xlinglearn

    def make():
        ids = substitute_tokens(
            ctx.batch["input_ids"], ctx.batch["attention_mask"], neighbour_table(ctx, cfg), cfg.p_sub,
            cfg.max_sub_per_example, special_ids=ctx.state.get("special_ids", ()),
        )
        return _forward(ctx.model, ctx.batch["attention_mask"], cfg.w_attention > 0, input_ids=ids, **segments(ctx.batch))

    return ctx.cached("perturbed", make)


def pushed_view(ctx: StepContext):
    """Ding et al.'s view: input embeddings pushed away from the clean point, through the model."""
    cfg = ctx.config.ding2022

    def make():
        model = unwrap(ctx.model)
        mask = ctx.batch["attention_mask"]
        embeds = model.get_input_embeddings()(ctx.batch["input_ids"])
        if cfg.push == "adversarial":
            delta = adversarial_push(model, embeds.detach(), mask, ctx.outputs.logits.detach(), cfg.rho, cfg.steps,
                                     step_size=cfg.step_size, token_type_ids=ctx.batch.get("token_type_ids"))
        else:
            centroid = ctx.persistent("centroid", lambda: RunningCentroid(cfg.centroid_momentum))
            delta = centroid_push(embeds, mask, centroid.update(embeds, mask), cfg.rho)
        return _forward(model, mask, cfg.w_attention_pull > 0, inputs_embeds=embeds + delta, **segments(ctx.batch))

    return ctx.cached("pushed", make)


# ---------------------------------------------------------------- terms

@dataclass(frozen=True)
class Term:
    """A loss term: ``value(ctx)`` weighted by ``weight_of(config)``."""

    name: str
    needs: frozenset[str]
    weight_of: Callable[[LossConfig], float]
    value: Callable[[StepContext], torch.Tensor]

    def weight(self, config: LossConfig) -> float:
        return self.weight_of(config)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return self.value(ctx)


def _pooled_pair(ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
    mask = ctx.batch["attention_mask"]
    return mean_pool(ctx.outputs.hidden_states[-1], mask), mean_pool(perturbed_view(ctx).hidden_states[-1], mask)


def _xll_ce(ctx: StepContext) -> torch.Tensor:
    return classification_loss(perturbed_view(ctx).logits, ctx.batch["labels"], ctx.config.label_smoothing)


def _xll_dispersion(ctx: StepContext) -> torch.Tensor:
    cfg = ctx.config.xlinglearn
    z, z_tilde = _pooled_pair(ctx)
    return alignment_uniformity(z.float(), z_tilde.float(), beta=cfg.beta, t=cfg.t)


def _xll_attention(ctx: StepContext) -> torch.Tensor:
    cfg = ctx.config.xlinglearn
    return attention_consistency(ctx.outputs.attentions, perturbed_view(ctx).attentions, ctx.batch["attention_mask"],
                                 cfg.attention_layers, cfg.attention_divergence)


def _xll_ot(ctx: StepContext) -> torch.Tensor:
    cfg = ctx.config.xlinglearn
    z, z_tilde = _pooled_pair(ctx)
    labels = ctx.batch["labels"] if cfg.ot_eta > 0 else None
    return sinkhorn_divergence(z.float(), z_tilde.float(), eps=cfg.ot_eps, n_iter=cfg.ot_iters, cost=cfg.ot_cost,
                               labels_x=labels, labels_y=labels, eta=cfg.ot_eta)


def _ding_robust(ctx: StepContext) -> torch.Tensor:
    return robust_target_loss(pushed_view(ctx).logits, ctx.batch["labels"], ctx.outputs.logits, ctx.config.ding2022.gamma)


def _ding_attention(ctx: StepContext) -> torch.Tensor:
    cfg: Ding2022Config = ctx.config.ding2022
    return attention_consistency(ctx.outputs.attentions, pushed_view(ctx).attentions, ctx.batch["attention_mask"],
                                 cfg.attention_layers, cfg.attention_divergence)


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


def _xite(ctx: StepContext) -> torch.Tensor:
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
    b = data.draw(n, ctx.batch["input_ids"].device)
    tgt_types = {"token_type_ids": b["tgt_types"]} if "tgt_types" in b else {}
    src_types = {"token_type_ids": b["src_types"]} if "src_types" in b else {}
    target = model.base_model(input_ids=b["tgt_ids"], attention_mask=b["tgt_mask"], output_hidden_states=True, **tgt_types)
    h_tgt = target.hidden_states[cfg.layer]
    if data.projector is not None:
        h_tgt = data.projector.project(h_tgt.float()).to(h_tgt.dtype)
    lam = cfg.lam if cfg.alpha is None else sample_lambda(cfg.alpha, n).to(h_tgt)

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


def _adjustment_parts(ctx: StepContext):
    """Efimov et al.'s continual variant: each step, an alignment batch of parallel pairs
    gives ``L_align`` and ``L_reg`` (formulas in :mod:`adjustment`), shared by both terms."""
    cfg = ctx.config.adjustment
    data = ctx.state["adjustment"]

    def make():
        batch = data.draw(cfg.batch_size, ctx.batch["input_ids"].device)
        # The terms weigh .align and .reg themselves; passing w_reg as the rate only skips the
        # frozen pass (and L_reg) when w_reg is 0.
        return adjustment_objective(ctx.model, data.original, batch, cfg.w_reg, mode=cfg.word_vector,
                                    include_special=cfg.include_special)

    return ctx.cached("adjustment", make)


def _continual(weight: Callable[[Any], float]) -> Callable[[LossConfig], float]:
    return lambda c: weight(c.adjustment) if c.adjustment.regime == "continual" else 0.0


NONE, HIDDEN, ATTENTIONS = frozenset(), frozenset({"hidden_states"}), frozenset({"attentions"})

XLINGLEARN_TERMS = (
    register(Term("xll_ce", NONE, lambda c: c.xlinglearn.w_ce_perturbed, _xll_ce)),
    register(Term("xll_dispersion", HIDDEN, lambda c: c.xlinglearn.w_dispersion, _xll_dispersion)),
    register(Term("xll_attention", ATTENTIONS, lambda c: c.xlinglearn.w_attention, _xll_attention)),
    register(Term("xll_ot", HIDDEN, lambda c: c.xlinglearn.w_ot, _xll_ot)),
)
XITE_TERMS = (register(Term("xite", NONE, lambda c: c.xite.ratio, _xite)),)
ADJUSTMENT_TERMS = (
    register(Term("adj_align", NONE, _continual(lambda a: a.w_align), lambda ctx: _adjustment_parts(ctx).align)),
    register(Term("adj_reg", NONE, _continual(lambda a: a.w_reg), lambda ctx: _adjustment_parts(ctx).reg)),
)
DING2022_TERMS = (
    register(Term("ding_robust", NONE, lambda c: c.ding2022.w_robust, _ding_robust)),
    register(Term("ding_attention", ATTENTIONS, lambda c: c.ding2022.w_attention_pull, _ding_attention)),
)
