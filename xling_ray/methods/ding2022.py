"""Embedding-Push, Attention-Pull and Robust targets (Ding et al., COLING 2022).

    L = CE + w_robust CE(x_push, t_gamma) + w_pull A(x, x_push)

with x_push the input embeddings pushed away from the clean point (adversarially, or away
from the running English centroid; :mod:`xling_ray.losses.views`), t_gamma the robust
targets (:mod:`xling_ray.losses.targets`) and A attention consistency
(:mod:`xling_ray.losses.attention`). The pushed view is built once per step.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from xling_ray.config import MethodSettings
from xling_ray.losses.attention import AttentionLayers, DivergenceKind, attention_consistency
from xling_ray.losses.base import ATTENTIONS, NONE, StepContext, Term
from xling_ray.losses.targets import robust_target_loss
from xling_ray.losses.views import RunningCentroid, adversarial_push, centroid_push
from xling_ray.methods.base import Method, register
from xling_ray.models.encode import forward_view, segments, unwrap


class Ding2022Config(MethodSettings):
    """Embedding-Push, Attention-Pull and Robust targets (Ding et al., COLING 2022)."""

    push: Literal["adversarial", "centroid"] = "adversarial"
    rho: float = Field(0.05, gt=0, description="push radius, relative to the mean token-embedding norm")
    steps: int = Field(1, ge=1, description="K, ascent steps of the adversarial push")
    step_size: float | None = Field(None, gt=0, description="ascent step as a fraction of the ball radius (default 2.5 / K)")
    centroid_momentum: float = Field(0.99, ge=0, lt=1, description="EMA of the running English centroid")
    w_robust: float = Field(0.0, ge=0, description="cross-entropy of the pushed view against robust targets")
    gamma: float = Field(0.1, ge=0, le=1, description="robust target = (1-gamma) onehot + gamma p_clean")
    w_attention_pull: float = Field(0.0, ge=0)
    attention_layers: AttentionLayers = "last"
    attention_divergence: DivergenceKind = "kl"

    @property
    def active(self) -> bool:
        return self.w_robust > 0 or self.w_attention_pull > 0


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
