"""The built-in methods' typed settings, each read under ``losses.<key>`` of a recipe.

They live apart from the methods' terms and preparations (:mod:`xling_ray.methods`) so that
reading a recipe imports pydantic alone, not torch: each method module imports its class from
here and registers it with its terms. Each class says what switches its method off
(:meth:`~xling_ray.config.MethodSettings.off`); the method is on when any of those settings
differs from its off value, and the plain baseline of a sweep sets them all
(:func:`xling_ray.tune.space.plain_point`).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from xling_ray.config import MethodSettings, register_method_settings

#: How two attention maps are compared (:mod:`xling_ray.losses.attention`).
DivergenceKind = Literal["kl", "symmetric_kl", "mse"]
#: Which layers' maps are compared: the last, all, or the k-th (settings of XLingLearn and Ding 2022).
AttentionLayers = Literal["last", "all"] | int


class XLingLearnConfig(MethodSettings):
    """XLingLearn: a perturbed view of each English example and three terms that tie it to the clean one.

    Every ``w_*`` is a term's weight; 0 (the default) switches it off, and the
    perturbed view is only built when some term needs it.
    """

    # The view: substitute tokens with nearest neighbours in the model's input-embedding space.
    p_sub: float = Field(0.15, ge=0, le=1, description="probability that an eligible token is substituted")
    max_sub_per_example: int | None = Field(None, ge=1, description="cap on substitutions per example")
    neighbours: int = Field(8, ge=1, description="a substitute is drawn from the token's k nearest neighbours")
    synonym_file: str | None = Field(None, description="word<TAB>syn1 syn2 ... file used instead of embedding neighbours")
    w_ce_perturbed: float = Field(0.0, ge=0, description="cross-entropy on the perturbed view")
    # Distance-dispersion constraint (alignment + uniformity).
    w_dispersion: float = Field(0.0, ge=0)
    beta: float = Field(1.0, ge=0, description="weight of uniformity inside the dispersion term")
    t: float = Field(2.0, gt=0, description="uniformity temperature")
    # Attention consistency between the clean and the perturbed view.
    w_attention: float = Field(0.0, ge=0)
    attention_layers: AttentionLayers = "last"
    attention_divergence: DivergenceKind = "kl"
    # Debiased optimal transport between the batch's clean and perturbed pooled embeddings.
    w_ot: float = Field(0.0, ge=0)
    ot_eps: float = Field(0.1, gt=0, description="entropic regularisation of the Sinkhorn divergence")
    ot_iters: int = Field(100, ge=1)
    ot_cost: Literal["cosine", "sqeuclidean"] = "cosine"
    ot_eta: float = Field(0.0, ge=0, description="class-conditional cost: added where labels differ")

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"w_ce_perturbed": 0.0, "w_dispersion": 0.0, "w_attention": 0.0, "w_ot": 0.0}


class XiteConfig(MethodSettings):
    """XITE (Fazili & Jyothi, 2026): synthetic examples interpolated between English training
    examples and target-language text labelled by its nearest English example. Off at ratio 0."""

    ratio: float = Field(0.0, ge=0, description="synthetic examples per real one (0 = off)")
    lam: float = Field(0.5, ge=0, le=1, description="interpolation weight of the source when alpha is not set")
    alpha: float | None = Field(None, gt=0, description="draw lam from Beta(alpha, alpha) per example instead")
    layer: int = Field(0, ge=0, description="0: interpolate input embeddings; k: hidden states after layer k (manifold mixup)")
    lda: bool = True
    lda_components: int | None = Field(None, ge=1, description="default: languages - 1")
    lda_shrinkage: float | Literal["auto"] | None = None
    k: int = Field(1, ge=1, description="label by a vote of the k nearest English examples; the pair is the nearest "
                                        "of those with the voted label")
    tau: float | None = Field(None, ge=-1, le=1, description="drop target texts whose cosine similarity to their "
                                                             "English pair is below tau")

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"ratio": 0.0}


class AdjustmentConfig(MethodSettings):
    """Cross-lingual adjustment (Cao et al., 2020; Efimov et al., 2023):
    ``L_adj = L_align + base_rate * L_reg`` on parallel sentences.

    ``regime: before``: ``steps`` adjustment steps before fine-tuning (AdamW, betas 0.9/0.98,
    warm-up over the first 10 %, ``lr``, ``batch_size`` pairs). ``regime: continual``: during
    fine-tuning, ``CE + w_align * L_align + w_reg * L_reg`` with an alignment batch each step.
    Off when ``regime`` is ``off``.
    """

    regime: Literal["off", "before", "continual"] = "off"
    word_vector: Literal["mean", "first", "last"] = "mean"
    include_special: bool = Field(False, description="count [CLS]/[SEP] (<s>/</s>) as aligned")
    alignment_file: str | None = Field(None, description="Pharaoh i-j alignments instead of the built-in aligner")
    align_layer: int = Field(8, description="hidden layer whose similarities the built-in aligner uses")
    steps: int = Field(100, ge=1)
    lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(32, ge=1, description="parallel pairs per adjustment step (reference: 32; continual: 16)")
    base_rate: float = Field(1.0, ge=0, description="weight of L_reg before fine-tuning")
    w_align: float = Field(0.01, ge=0, description="continual: weight of L_align")
    w_reg: float = Field(1.0, ge=0, description="continual: weight of L_reg")

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"regime": "off"}


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

    @classmethod
    def off(cls) -> dict[str, Any]:
        return {"w_robust": 0.0, "w_attention_pull": 0.0}


#: Key -> settings of the built-in methods, in the order their terms are added to the loss.
BUILTIN = {"xlinglearn": XLingLearnConfig, "xite": XiteConfig, "adjustment": AdjustmentConfig, "ding2022": Ding2022Config}
for _key, _settings in BUILTIN.items():
    register_method_settings(_key, _settings, owner=__name__)
