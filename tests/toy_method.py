"""A toy method, registered from outside the package: pull the batch's mean sentence
embedding towards the centroid of target-language text (tests/test_adding_a_method.py;
the example of docs/adding-a-method.md).

    L = CE + w || mean_b z_b - c ||^2

z_b the mean-pooled last hidden state of example b, c the mean embedding of the task's
target-language pool (``losses.pool``) under the model as loaded.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from xling_ray.config import MethodSettings
from xling_ray.losses.base import HIDDEN, StepContext, Term
from xling_ray.methods import Method, Preparation, PrepareContext, register
from xling_ray.methods.target_text import target_pairs
from xling_ray.models.encode import encode_texts
from xling_ray.models.pooling import mean_pool


class ToySettings(MethodSettings):
    """``losses.toy``: off at weight 0."""

    weight: float = Field(0.0, ge=0, description="w, the weight of the centroid pull")
    per_language: int = Field(8, ge=1, description="target texts per language in the centroid")

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"weight": 0.0}


def target_centroid(ctx: PrepareContext) -> torch.Tensor:
    """c: the mean embedding of the first sentences of each target-language pool pair."""
    pools = target_pairs(ctx.recipe, ctx.task, ctx.eval_sets)
    n = ctx.settings("toy").per_language
    texts = [t for pool in pools.values() for t in pool.text_a[:n]]
    return encode_texts(ctx.model, ctx.tokenizer, texts, max_length=ctx.recipe.model.max_length).mean(0)


def centroid_pull(ctx: StepContext) -> torch.Tensor:
    """``|| mean_b z_b - c ||^2``."""
    z = mean_pool(ctx.outputs.hidden_states[-1], ctx.batch["attention_mask"]).float()
    c = ctx.state["toy_centroid"].to(z.device)
    return (z.mean(0) - c).pow(2).sum()


METHOD = register(Method(
    "toy", ToySettings,
    terms=(Term("toy", HIDDEN, lambda losses: losses.toy.weight, centroid_pull),),
    prepare=(Preparation("toy_centroid", target_centroid),),
))
