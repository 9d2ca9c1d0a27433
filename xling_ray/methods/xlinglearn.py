"""XLingLearn: a perturbed view of each English example and terms that tie it to the clean one.

    L = CE + w_ce CE(x~) + w_disp D(z, z~) + w_attn A(x, x~) + w_ot S_eps(z, z~)

with x~ the token-substituted view (tokens swapped for neighbours in the model's
input-embedding space, :mod:`xling_ray.losses.views`) and z the mean-pooled last hidden
state. The view is built once per step and shared by the terms (``ctx.cached``); the
formulas are in :mod:`xling_ray.losses.alignment` (D), :mod:`~xling_ray.losses.attention`
(A) and :mod:`~xling_ray.losses.transport` (S_eps).
"""
from __future__ import annotations


import torch

from xling_ray.losses.alignment import alignment_uniformity
from xling_ray.losses.attention import attention_consistency
from xling_ray.losses.base import ATTENTIONS, HIDDEN, NONE, StepContext, Term
from xling_ray.losses.classification import classification_loss
from xling_ray.losses.transport import sinkhorn_divergence
from xling_ray.losses.views import NeighbourTable, substitute_tokens
from xling_ray.method_settings import XLingLearnConfig
from xling_ray.methods.base import Method, register
from xling_ray.models.encode import forward_view, segments, unwrap
from xling_ray.models.pooling import mean_pool



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
            cfg.max_sub_per_example, special_ids=ctx.state.get("special_ids", ()), generator=ctx.state.get("generator"),
        )
        return forward_view(ctx.model, ctx.batch["attention_mask"], cfg.w_attention > 0, input_ids=ids, **segments(ctx.batch))

    return ctx.cached("perturbed", make)


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


TERMS = (
    Term("xll_ce", NONE, lambda c: c.xlinglearn.w_ce_perturbed, _xll_ce),
    Term("xll_dispersion", HIDDEN, lambda c: c.xlinglearn.w_dispersion, _xll_dispersion),
    Term("xll_attention", ATTENTIONS, lambda c: c.xlinglearn.w_attention, _xll_attention),
    Term("xll_ot", HIDDEN, lambda c: c.xlinglearn.w_ot, _xll_ot),
)
METHOD = register(Method("xlinglearn", XLingLearnConfig, TERMS))
