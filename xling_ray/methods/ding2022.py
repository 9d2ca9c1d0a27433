"""Embedding-Push, Attention-Pull and Robust targets (Ding et al., COLING 2022).

    L = CE + w_robust CE(x_push, t_gamma) + w_pull A(x, x_push)

with x_push the input embeddings pushed away from the clean point (adversarially, or away
from the running English centroid; :mod:`xling_ray.losses.views`), t_gamma the robust
targets (:mod:`xling_ray.losses.targets`) and A attention consistency
(:mod:`xling_ray.losses.attention`). The pushed view is built once per step.
"""
from __future__ import annotations


import torch

from xling_ray.losses.attention import attention_consistency
from xling_ray.losses.base import ATTENTIONS, NONE, StepContext, Term
from xling_ray.losses.targets import robust_target_loss
from xling_ray.losses.views import RunningCentroid, adversarial_push, centroid_push
from xling_ray.method_settings import Ding2022Config
from xling_ray.methods.base import Method, register
from xling_ray.models.encode import forward_view, segments, unwrap



def pushed_view(ctx: StepContext):
    """Ding et al.'s view: input embeddings pushed away from the clean point, through the model."""
    cfg = ctx.config.ding2022

    def make():
        model = unwrap(ctx.model)
        mask = ctx.batch["attention_mask"]
        embeds = model.get_input_embeddings()(ctx.batch["input_ids"])
        if cfg.push == "adversarial":
            delta = adversarial_push(model, embeds.detach(), mask, ctx.outputs.logits.detach(), cfg.rho, cfg.steps,
                                     step_size=cfg.step_size, token_type_ids=ctx.batch.get("token_type_ids"),
                                     generator=ctx.state.get("generator"))
        else:
            centroid = ctx.persistent("centroid", lambda: RunningCentroid(cfg.centroid_momentum))
            delta = centroid_push(embeds, mask, centroid.update(embeds, mask), cfg.rho)
        return forward_view(model, mask, cfg.w_attention_pull > 0, inputs_embeds=embeds + delta, **segments(ctx.batch))

    return ctx.cached("pushed", make)


def _ding_robust(ctx: StepContext) -> torch.Tensor:
    return robust_target_loss(pushed_view(ctx).logits, ctx.batch["labels"], ctx.outputs.logits, ctx.config.ding2022.gamma)


def _ding_attention(ctx: StepContext) -> torch.Tensor:
    cfg: Ding2022Config = ctx.config.ding2022
    return attention_consistency(ctx.outputs.attentions, pushed_view(ctx).attentions, ctx.batch["attention_mask"],
                                 cfg.attention_layers, cfg.attention_divergence)


TERMS = (
    Term("ding_robust", NONE, lambda c: c.ding2022.w_robust, _ding_robust),
    Term("ding_attention", ATTENTIONS, lambda c: c.ding2022.w_attention_pull, _ding_attention),
)
METHOD = register(Method("ding2022", Ding2022Config, TERMS))
